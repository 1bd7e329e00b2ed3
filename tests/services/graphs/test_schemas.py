"""The schema catalogue: base and extensions, their order and requirements."""

from __future__ import annotations

from typing import Any

import pytest

from provisioning_pipelines.errors import InvalidRequest
from provisioning_pipelines.services.graphs import schemas
from provisioning_pipelines.services.graphs.schemas import (
    available_extensions,
    resolve_extensions,
    schema_ddl,
)


def test_catalogue_lists_extensions_in_canonical_order() -> None:
    assert available_extensions() == ["accounting", "crm", "supply_chain", "procurement"]
    assert "base" not in available_extensions()
    info = {entry["name"]: entry for entry in schemas.extension_info()}
    assert info["procurement"]["requires"] == ["base", "accounting", "supply_chain"]
    assert all(entry["description"] for entry in info.values())


def test_base_alone_and_base_first() -> None:
    base = schema_ddl([])
    assert base and all(s.startswith("CREATE ") for s in base)
    assert any(s.startswith("CREATE NODE TABLE Entity(") for s in base)
    with_crm = schema_ddl(["crm"])
    assert with_crm[: len(base)] == base
    assert len(with_crm) > len(base)
    assert all(";" not in s and "//" not in s for s in with_crm)


def test_canonical_order_and_deduplication() -> None:
    one = schema_ddl(["supply_chain", "accounting", "crm"])
    two = schema_ddl(["crm", "accounting", "supply_chain", "accounting", "base"])
    assert one == two
    assert resolve_extensions(["supply_chain", "crm", "crm"]) == ["crm", "supply_chain"]
    # Each statement appears once.
    assert len(one) == len(set(one))
    account = next(i for i, s in enumerate(one) if "TABLE Account(" in s)
    contact = next(i for i, s in enumerate(one) if "TABLE Contact(" in s)
    product = next(i for i, s in enumerate(one) if "TABLE Product(" in s)
    assert account < contact < product


def test_unknown_extension_names_the_field_and_the_choices() -> None:
    with pytest.raises(InvalidRequest) as caught:
        schema_ddl(["accounting", "x"])
    assert caught.value.field == "schema_extensions"
    assert caught.value.message == (
        "schema_extensions: unknown extension 'x'; "
        "available: accounting, crm, supply_chain, procurement"
    )


@pytest.mark.parametrize("value", ["accounting", None, 3, [1], [None]])
def test_extensions_must_be_a_list_of_names(value: Any) -> None:
    with pytest.raises(InvalidRequest) as caught:
        schema_ddl(value)
    assert caught.value.field == "schema_extensions"


def test_missing_requirement_is_reported_not_added() -> None:
    with pytest.raises(InvalidRequest) as caught:
        schema_ddl(["procurement", "accounting"])
    assert caught.value.field == "schema_extensions"
    assert "'procurement' requires supply_chain" in caught.value.message
    assert schema_ddl(["procurement", "accounting", "supply_chain"])
