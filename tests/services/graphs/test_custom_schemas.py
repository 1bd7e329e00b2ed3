"""Customers' custom schemas: validated JSON in, quoted DDL out, every mistake named."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from provisioning_pipelines.errors import InvalidRequest
from provisioning_pipelines.services.graphs import custom_schemas
from provisioning_pipelines.services.graphs.custom_schemas import custom_schema_ddl

VALID: dict[str, Any] = {
    "nodes": [
        {
            "name": "Person",
            "properties": [
                {"name": "id", "type": "STRING"},
                {"name": "age", "type": "int64"},
                {"name": "nicknames", "type": "STRING[]"},
            ],
            "primary_key": "id",
        },
        {
            "name": "Company",
            "properties": [{"name": "code", "type": "INT64"}, {"name": "name", "type": "STRING"}],
            "primary_key": "CODE",
        },
    ],
    "relationships": [
        {
            "name": "KNOWS",
            "from": "Person",
            "to": "person",
            "properties": [{"name": "since", "type": "DATE"}],
        },
        {"name": "WORKS_FOR", "from": "Person", "to": "Company", "multiplicity": "many_one"},
    ],
}


def test_valid_custom_schema_becomes_quoted_ddl() -> None:
    assert custom_schema_ddl(VALID) == [
        "CREATE NODE TABLE `Person`(`id` STRING, `age` INT64, `nicknames` STRING[], "
        "PRIMARY KEY (`id`))",
        "CREATE NODE TABLE `Company`(`code` INT64, `name` STRING, PRIMARY KEY (`code`))",
        "CREATE REL TABLE `KNOWS`(FROM `Person` TO `Person`, `since` DATE)",
        "CREATE REL TABLE `WORKS_FOR`(FROM `Person` TO `Company`, MANY_ONE)",
    ]


def test_every_allowed_type_and_key_type_is_accepted() -> None:
    types = custom_schemas.ALLOWED_TYPES
    properties = [{"name": f"p{i}", "type": type_} for i, type_ in enumerate(types)]
    ddl = custom_schema_ddl(
        {"nodes": [{"name": "T", "properties": properties, "primary_key": "p0"}]}
    )
    assert len(ddl) == 1
    for pk_type in custom_schemas.PRIMARY_KEY_TYPES:
        spec = {
            "nodes": [
                {"name": "K", "properties": [{"name": "k", "type": pk_type}], "primary_key": "k"}
            ]
        }
        assert custom_schema_ddl(spec)


def _with(path: str, value: Any, *, delete: bool = False) -> dict[str, Any]:
    """A copy of VALID with one entry (dotted path, [i] for list items) replaced or deleted."""
    spec = copy.deepcopy(VALID)
    parts = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]
    target: Any = spec
    for part in parts[:-1]:
        target = target[part]
    if delete:
        del target[parts[-1]]
    else:
        target[parts[-1]] = value
    return spec


def _node(name: str = "N", props: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "properties": props if props is not None else [{"name": "id", "type": "STRING"}],
        "primary_key": "id",
    }


MALFORMED: list[tuple[str, Any, str, str]] = [
    # (case id, spec, expected field, fragment of the message)
    ("not an object", ["nodes"], "custom_schema", "expected an object"),
    ("unknown top key", {**VALID, "edges": []}, "custom_schema.edges", "unknown field 'edges'"),
    ("no nodes key", {"relationships": []}, "custom_schema.nodes", "at least one node"),
    ("empty nodes", {"nodes": []}, "custom_schema.nodes", "at least one node"),
    ("nodes not a list", {"nodes": "Person"}, "custom_schema.nodes", "expected a list"),
    ("node not an object", {"nodes": ["Person"]}, "custom_schema.nodes[0]", "expected an object"),
    (
        "relationships not a list",
        {**VALID, "relationships": {"a": 1}},
        "custom_schema.relationships",
        "expected a list",
    ),
    (
        "node name missing",
        _with("nodes[0].name", None, delete=True),
        "custom_schema.nodes[0].name",
        "required",
    ),
    (
        "node name not a string",
        _with("nodes[0].name", 5),
        "custom_schema.nodes[0].name",
        "expected a string",
    ),
    ("node name empty", _with("nodes[1].name", ""), "custom_schema.nodes[1].name", "invalid name"),
    (
        "node name leading digit",
        _with("nodes[0].name", "1Person"),
        "custom_schema.nodes[0].name",
        "invalid name",
    ),
    (
        "node name leading underscore",
        _with("nodes[0].name", "_x"),
        "custom_schema.nodes[0].name",
        "invalid name",
    ),
    (
        "node name with space",
        _with("nodes[0].name", "Per son"),
        "custom_schema.nodes[0].name",
        "invalid name",
    ),
    (
        "node name non-ascii",
        _with("nodes[0].name", "Persön"),
        "custom_schema.nodes[0].name",
        "invalid name",
    ),
    (
        "node name too long",
        _with("nodes[0].name", "P" * 64),
        "custom_schema.nodes[0].name",
        "invalid name",
    ),
    (
        "node name reserved",
        _with("nodes[0].name", "Match"),
        "custom_schema.nodes[0].name",
        "reserved word",
    ),
    (
        "node name reserved lower",
        _with("nodes[1].name", "order"),
        "custom_schema.nodes[1].name",
        "reserved word",
    ),
    (
        "node unknown key",
        _with("nodes[0].label", "x"),
        "custom_schema.nodes[0].label",
        "unknown field",
    ),
    (
        "duplicate node name, other case",
        _with("nodes[1].name", "PERSON"),
        "custom_schema.nodes[1].name",
        "duplicate table name 'PERSON'",
    ),
    (
        "rel name clashes with a node",
        _with("relationships[0].name", "company"),
        "custom_schema.relationships[0].name",
        "duplicate table name",
    ),
    (
        "duplicate rel name",
        _with("relationships[1].name", "knows"),
        "custom_schema.relationships[1].name",
        "duplicate table name",
    ),
    (
        "properties not a list",
        _with("nodes[0].properties", "id"),
        "custom_schema.nodes[0].properties",
        "expected a list",
    ),
    (
        "no properties",
        _with("nodes[0].properties", []),
        "custom_schema.nodes[0].properties",
        "at least one property",
    ),
    (
        "property not an object",
        _with("nodes[0].properties[1]", "age"),
        "custom_schema.nodes[0].properties[1]",
        "expected an object",
    ),
    (
        "property name missing",
        _with("nodes[0].properties[1].name", None, delete=True),
        "custom_schema.nodes[0].properties[1].name",
        "required",
    ),
    (
        "property type missing",
        _with("nodes[0].properties[1].type", None, delete=True),
        "custom_schema.nodes[0].properties[1].type",
        "required",
    ),
    (
        "unsupported type",
        _with("nodes[1].properties[0].type", "VARCHAR"),
        "custom_schema.nodes[1].properties[0].type",
        "unsupported type 'VARCHAR'; use one of STRING, INT64, INT32",
    ),
    (
        "type not a string",
        _with("nodes[0].properties[1].type", ["INT64"]),
        "custom_schema.nodes[0].properties[1].type",
        "expected a string",
    ),
    (
        "nested list type",
        _with("nodes[0].properties[1].type", "STRING[][]"),
        "custom_schema.nodes[0].properties[1].type",
        "unsupported type",
    ),
    (
        "type with DDL smuggled in",
        _with("nodes[0].properties[1].type", "INT64, evil STRING"),
        "custom_schema.nodes[0].properties[1].type",
        "unsupported type",
    ),
    (
        "property name invalid",
        _with("nodes[0].properties[1].name", "a-b"),
        "custom_schema.nodes[0].properties[1].name",
        "invalid name",
    ),
    (
        "property name with backtick",
        _with("nodes[0].properties[1].name", "a`b"),
        "custom_schema.nodes[0].properties[1].name",
        "invalid name",
    ),
    (
        "property name reserved",
        _with("nodes[0].properties[1].name", "return"),
        "custom_schema.nodes[0].properties[1].name",
        "reserved word",
    ),
    (
        "duplicate property, other case",
        _with("nodes[0].properties[1].name", "ID"),
        "custom_schema.nodes[0].properties[1].name",
        "duplicate property 'ID'",
    ),
    (
        "property unknown key",
        _with("nodes[0].properties[0].nullable", True),
        "custom_schema.nodes[0].properties[0].nullable",
        "unknown field",
    ),
    (
        "primary key missing",
        _with("nodes[0].primary_key", None, delete=True),
        "custom_schema.nodes[0].primary_key",
        "required",
    ),
    (
        "primary key not a property",
        _with("nodes[0].primary_key", "email"),
        "custom_schema.nodes[0].primary_key",
        "not one of the node's properties",
    ),
    (
        "primary key not a string",
        _with("nodes[0].primary_key", ["id"]),
        "custom_schema.nodes[0].primary_key",
        "expected a string",
    ),
    (
        "primary key of a list type",
        _with("nodes[0].primary_key", "nicknames"),
        "custom_schema.nodes[0].primary_key",
        "cannot be a primary key",
    ),
    (
        "primary key BOOLEAN",
        {"nodes": [_node(props=[{"name": "id", "type": "BOOLEAN"}])]},
        "custom_schema.nodes[0].primary_key",
        "type BOOLEAN, which cannot be a primary key",
    ),
    (
        "primary key DOUBLE",
        {"nodes": [_node(props=[{"name": "id", "type": "DOUBLE"}])]},
        "custom_schema.nodes[0].primary_key",
        "cannot be a primary key",
    ),
    (
        "rel from missing",
        _with("relationships[0].from", None, delete=True),
        "custom_schema.relationships[0].from",
        "required",
    ),
    (
        "rel to missing",
        _with("relationships[1].to", None, delete=True),
        "custom_schema.relationships[1].to",
        "required",
    ),
    (
        "rel from undeclared",
        _with("relationships[0].from", "Robot"),
        "custom_schema.relationships[0].from",
        "'Robot' is not a declared node table",
    ),
    (
        "rel to undeclared",
        _with("relationships[1].to", "Robot"),
        "custom_schema.relationships[1].to",
        "not a declared node table",
    ),
    (
        "rel endpoint is a rel",
        _with("relationships[1].to", "KNOWS"),
        "custom_schema.relationships[1].to",
        "not a declared node table",
    ),
    (
        "rel endpoint invalid name",
        _with("relationships[0].to", "Person)-[x]->(y"),
        "custom_schema.relationships[0].to",
        "invalid name",
    ),
    (
        "rel bad multiplicity",
        _with("relationships[1].multiplicity", "MANY"),
        "custom_schema.relationships[1].multiplicity",
        "unsupported multiplicity",
    ),
    (
        "rel unknown key",
        _with("relationships[0].primary_key", "since"),
        "custom_schema.relationships[0].primary_key",
        "unknown field",
    ),
    (
        "rel property bad type",
        _with("relationships[0].properties[0].type", "DATETIME"),
        "custom_schema.relationships[0].properties[0].type",
        "unsupported type 'DATETIME'",
    ),
    (
        "too many tables",
        {"nodes": [_node(f"N{i}") for i in range(101)]},
        "custom_schema.nodes",
        "too many entries (101); the limit is 100",
    ),
    (
        "too many tables in total",
        {
            "nodes": [_node(f"N{i}") for i in range(60)],
            "relationships": [{"name": f"R{i}", "from": "N0", "to": "N1"} for i in range(41)],
        },
        "custom_schema",
        "too many tables (101)",
    ),
    (
        "too many properties",
        {"nodes": [_node(props=[{"name": f"p{i}", "type": "STRING"} for i in range(101)])]},
        "custom_schema.nodes[0].properties",
        "too many entries (101)",
    ),
]


@pytest.mark.parametrize(
    ("spec", "field", "fragment"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_custom_schema_names_the_field(spec: Any, field: str, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        custom_schema_ddl(spec)
    assert caught.value.field == field
    assert caught.value.message.startswith(f"{field}: ")
    assert fragment in caught.value.message


@pytest.mark.parametrize(
    "name",
    [
        "x) ; DROP",
        "x`) ; DROP TABLE Entity; //",
        "Person {id: 1}",
        "a\nb",
        "x'",
        "Entity--",
    ],
)
def test_injection_attempts_in_names_are_rejected(name: str) -> None:
    spec = {"nodes": [_node(name)]}
    with pytest.raises(InvalidRequest) as caught:
        custom_schema_ddl(spec)
    assert caught.value.field == "custom_schema.nodes[0].name"
    assert "invalid name" in caught.value.message
    assert "\n" not in caught.value.message  # shown repr-escaped, one line


def test_rejected_spec_produces_no_ddl_even_when_other_tables_are_valid() -> None:
    spec = {"nodes": [_node("Good"), _node("x) ; DROP")]}
    with pytest.raises(InvalidRequest):
        custom_schema_ddl(spec)


def test_long_rejected_values_are_truncated_in_messages() -> None:
    with pytest.raises(InvalidRequest) as caught:
        custom_schema_ddl({"nodes": [_node("x" * 500)]})
    assert len(caught.value.message) < 250
