"""Every identifier and text field refuses a control character anywhere in it, and every pattern
check is a full match: ``"Person\\n"`` is not ``Person`` (``re.match`` with ``$`` matches
before a final newline).

Each edge gets valid values from its own pattern, tainted by hypothesis: a control character
(C0, DEL, C1) or a Unicode line separator put anywhere, or a trailing newline.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from provisioning_pipelines.errors import InvalidRequest, NotFound
from provisioning_pipelines.services.access import accounts
from provisioning_pipelines.services.graphs import records
from provisioning_pipelines.services.graphs.custom_schemas import custom_schema_ddl
from provisioning_pipelines.services.graphs.graph_requests import GraphRequest
from provisioning_pipelines.services.graphs.subgraphs import validate_subgraph_name
from provisioning_pipelines.services.validation import text
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.events import event_id_key, is_operation_id
from provisioning_pipelines.storage.models import User

CONTROLS = st.one_of(st.characters(min_codepoint=0, max_codepoint=0x1F),
                     st.characters(min_codepoint=0x7F, max_codepoint=0x9F),
                     st.sampled_from(["\u2028", "\u2029"]))
EXAMPLES = settings(max_examples=300, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


@st.composite
def tainted(draw: st.DrawFn, valid: st.SearchStrategy[str]) -> str:
    """A valid value with a control character put anywhere, or a newline at its end."""
    value = draw(valid)
    if draw(st.booleans()):
        return value + "\n"
    at = draw(st.integers(0, len(value)))
    return value[:at] + draw(CONTROLS) + value[at:]


PRINTABLE = st.text(st.characters(codec="utf-8", categories=["L", "N", "P", "Zs"]), min_size=1,
                    max_size=40)
IDENTIFIER = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,40}", fullmatch=True).filter(
    lambda name: name.upper() not in {"NODE", "REL", "TABLE", "KEY", "TO", "FROM"})


def schema(node: str = "Person", prop: str = "id", type_: str = "STRING",
           primary_key: str | None = None) -> dict[str, Any]:
    return {"nodes": [{"name": node, "properties": [{"name": prop, "type": type_}],
                       "primary_key": primary_key or prop}]}


@EXAMPLES
@given(name=tainted(IDENTIFIER))
def test_a_custom_schema_table_name_with_a_control_character_is_refused(name: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        custom_schema_ddl(schema(node=name))
    assert refused.value.field == "custom_schema.nodes[0].name"


@EXAMPLES
@given(name=tainted(IDENTIFIER))
def test_a_custom_schema_property_name_with_a_control_character_is_refused(name: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        custom_schema_ddl(schema(prop=name))
    assert refused.value.field == "custom_schema.nodes[0].properties[0].name"


@EXAMPLES
@given(type_=tainted(st.sampled_from(["STRING", "INT64", "string", "DOUBLE[]"])))
def test_a_custom_schema_type_with_a_control_character_is_refused(type_: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        custom_schema_ddl(schema(type_=type_))
    assert refused.value.field == "custom_schema.nodes[0].properties[0].type"


def test_person_and_person_with_a_newline_are_not_two_tables() -> None:
    spec = {"nodes": [schema()["nodes"][0], {**schema()["nodes"][0], "name": "Person\n"}]}
    with pytest.raises(InvalidRequest, match="invalid name 'Person\\\\n'"):
        custom_schema_ddl(spec)


@EXAMPLES
@given(name=tainted(st.from_regex(r"[a-zA-Z0-9]{1,20}", fullmatch=True)))
def test_a_subgraph_name_with_a_control_character_is_refused(name: str) -> None:
    with pytest.raises(InvalidRequest):
        validate_subgraph_name(name)


@EXAMPLES
@given(graph_id=tainted(st.from_regex(r"kg[0-9a-f]{16,32}", fullmatch=True)))
def test_a_graph_id_with_a_control_character_names_no_graph(graph_id: str) -> None:
    assert not records.GRAPH_ID.fullmatch(graph_id)
    assert not records.ANY_GRAPH_ID.fullmatch(graph_id)
    with pytest.raises(NotFound):
        records.top_level_graph(None, graph_id)  # type: ignore[arg-type]  # refused unread


@EXAMPLES
@given(operation_id=tainted(st.from_regex(r"op_[0-9a-f]{24}", fullmatch=True)))
def test_an_operation_id_with_a_control_character_names_no_operation(operation_id: str) -> None:
    assert not is_operation_id(operation_id)


@EXAMPLES
@given(event_id=tainted(st.from_regex(r"[0-9]{1,13}-[0-9]{1,3}", fullmatch=True)))
def test_an_event_id_with_a_control_character_is_no_event_id(event_id: str) -> None:
    with pytest.raises(ValueError, match="invalid event id"):
        event_id_key(event_id)


@pytest.mark.parametrize("event_id", ["١٢٣-٤", "12-\uff13", "٣"])
def test_an_event_id_is_ascii_digits(event_id: str) -> None:
    with pytest.raises(ValueError, match="invalid event id"):
        event_id_key(event_id)


@EXAMPLES
@given(value=tainted(PRINTABLE))
def test_a_single_line_text_field_with_a_control_character_is_refused(value: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        GraphRequest.parse({"name": value})
    assert refused.value.field == "graph.name"
    with pytest.raises(InvalidRequest):
        GraphRequest.parse({"name": "g", "tags": ["ok", value]})
    with pytest.raises(InvalidRequest):
        text(value, "plan_name", max_length=64)


@EXAMPLES
@given(value=PRINTABLE, control=st.characters(min_codepoint=0x7F, max_codepoint=0x9F))
def test_a_description_takes_line_breaks_but_no_other_control_character(value: str,
                                                                         control: str) -> None:
    assert text(f"{value[:10]}\n\t\r\n{value[10:]}", "description", max_length=100,
                multiline=True)
    with pytest.raises(InvalidRequest):
        text(value + control, "description", max_length=100, multiline=True)


@EXAMPLES
@given(email=tainted(st.from_regex(r"[a-z]{1,10}@[a-z]{1,10}\.[a-z]{2,4}", fullmatch=True)))
def test_an_email_with_a_control_character_makes_no_user(sqlite_database: Database,
                                                         email: str) -> None:
    with sqlite_database.session() as session:
        before = session.scalar(select(func.count()).select_from(User))
        with pytest.raises(InvalidRequest) as refused:
            accounts.create_user(session, email=email)
        assert refused.value.field == "email"
        assert session.scalar(select(func.count()).select_from(User)) == before
