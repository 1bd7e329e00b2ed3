"""The custom-schema compiler under generated input: refused with a named field, or DDL that
LadybugDB builds into exactly the declared tables. Nothing in between."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisioning_pipelines.errors import InvalidRequest
from provisioning_pipelines.services.graphs.custom_schemas import (
    ALLOWED_TYPES,
    RESERVED_WORDS,
    custom_schema_ddl,
)
from provisioning_pipelines.storage.ladybug import LadybugEngine, expected_tables

IDENTIFIERS = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,12}", fullmatch=True)
HOSTILE = st.one_of(st.text(max_size=20), st.sampled_from(sorted(RESERVED_WORDS)[:20]),
                    st.sampled_from(["", "a b", "x`y", "a\x00", "1abc", "a" * 70, "DROP"]),
                    st.integers(), st.none(), st.lists(st.integers(), max_size=2))
NAMES = st.one_of(IDENTIFIERS, IDENTIFIERS, IDENTIFIERS, HOSTILE)
TYPES = st.one_of(st.sampled_from(ALLOWED_TYPES), st.sampled_from([t.lower() for t in
                                                                    ALLOWED_TYPES]),
                  st.sampled_from(["SERIAL", "MAP(STRING, INT64)", "INT128", "", "STRING[][]"]),
                  HOSTILE)


@st.composite
def specs(draw: st.DrawFn, *, mostly_valid: bool = False) -> Any:
    def maybe(value: Any, junk: st.SearchStrategy[Any] = HOSTILE) -> Any:
        if mostly_valid and draw(st.integers(0, 19)):
            return value
        return draw(st.one_of(st.just(value), junk)) if draw(st.booleans()) else value

    nodes = []
    for _ in range(draw(st.integers(0 if not mostly_valid else 1, 4))):
        properties = [{"name": draw(IDENTIFIERS if mostly_valid else NAMES),
                       "type": draw(st.sampled_from(ALLOWED_TYPES) if mostly_valid
                                    else TYPES)}
                      for _ in range(draw(st.integers(1, 5)))]
        key = properties[0]["name"]
        node: dict[str, Any] = {"name": maybe(draw(IDENTIFIERS)), "properties": properties,
                                "primary_key": maybe(key)}
        if mostly_valid:
            properties[0]["type"] = "STRING"
        nodes.append(maybe(node))
    names = [n.get("name") for n in nodes if isinstance(n, dict)]
    relationships = []
    for _ in range(draw(st.integers(0, 3))):
        ends = st.sampled_from(names) if names else NAMES
        relationships.append(maybe({
            "name": maybe(draw(IDENTIFIERS)), "from": maybe(draw(ends)),
            "to": maybe(draw(ends)),
            "properties": [{"name": draw(IDENTIFIERS), "type": draw(st.sampled_from(
                ALLOWED_TYPES))} for _ in range(draw(st.integers(0, 2)))],
        }))
    return maybe({"nodes": nodes, "relationships": relationships},
                 st.one_of(HOSTILE, st.dictionaries(st.text(max_size=5), HOSTILE)))


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs())
def test_any_spec_is_refused_with_its_field_named_or_compiled(spec: Any) -> None:
    try:
        ddl = custom_schema_ddl(spec)
    except InvalidRequest as refused:
        assert refused.field is not None and refused.field.startswith("custom_schema")
        assert refused.message.startswith(refused.field)
        assert len(refused.message) < 400
        return
    assert ddl and all(statement.startswith("CREATE ") for statement in ddl)


ENGINE = LadybugEngine(use_templates=False)
WORK = Path(tempfile.mkdtemp(prefix="custom-schemas-"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs(mostly_valid=True))
def test_whatever_the_compiler_accepts_is_built(spec: Any) -> None:
    try:
        ddl = custom_schema_ddl(spec)
    except InvalidRequest:
        return
    path = WORK / f"{uuid.uuid4().hex}.lbug"
    ENGINE.create_database(path, ddl)
    try:
        built = {(t.name.lower(), t.kind) for t in ENGINE.list_tables(path)}
        assert built == {(t.name.lower(), t.kind) for t in expected_tables(ddl)}
    finally:
        ENGINE.delete_database(path)
