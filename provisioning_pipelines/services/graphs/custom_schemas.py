"""Customers' custom schemas: JSON validated and turned into Cypher DDL.

Custom schemas are the only place where user input becomes DDL. Every identifier is checked
against a strict pattern and a reserved-word list, every type against an allow-list, and the
statements are assembled only from checked values (and backtick-quoted anyway). Pure Python, so
the API answers 422 before anyone pays, and the provisioning step checks again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from provisioning_pipelines.errors import InvalidRequest
from provisioning_pipelines.services.validation import text_problem

CUSTOM_FIELD = "custom_schema"

MAX_TABLES = 100
MAX_PROPERTIES = 100

IDENTIFIER_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}")

# Property types a custom schema may use. Kept small on purpose: each one round-trips through
# the parquet fork (checked with LadybugDB 0.22) and maps to a JSON value in the API.
ALLOWED_TYPES: tuple[str, ...] = (
    "STRING",
    "INT64",
    "INT32",
    "INT16",
    "DOUBLE",
    "FLOAT",
    "BOOLEAN",
    "DATE",
    "TIMESTAMP",
    "INTERVAL",
    "UUID",
    "BLOB",
    "STRING[]",
    "INT64[]",
    "DOUBLE[]",
)
# LadybugDB also accepts DOUBLE, FLOAT and BLOB keys; we refuse them because lookups by a
# floating-point or binary key are a footgun for customers, not a feature.
PRIMARY_KEY_TYPES: tuple[str, ...] = (
    "STRING",
    "INT64",
    "INT32",
    "INT16",
    "UUID",
    "DATE",
    "TIMESTAMP",
)
MULTIPLICITIES: tuple[str, ...] = ("MANY_MANY", "MANY_ONE", "ONE_MANY", "ONE_ONE")

# Words LadybugDB 0.22 refuses as bare identifiers (probed by creating tables and properties with
# each candidate), plus the openCypher/Neo4j reserved words, so a name stays usable unquoted in
# the queries customers write.
_RESERVED_TEXT = """
    ACYCLIC ALL AND ANY AS ASC ASCENDING CASE CAST COLUMN COMMIT_SKIP_CHECKPOINT CREATE DBTYPE
    DEFAULT DESC DESCENDING DISTINCT ELSE END ENDS EXISTS FALSE FOR GLOB GROUP HEADERS HINT IN
    INDEX INSTALL JOIN MACRO MULTI_JOIN NONE NOT NULL ON ONLY OPTIONAL OR ORDER PRIMARY PROFILE
    ROLLBACK_SKIP_CHECKPOINT SHORTEST SINGLE STARTS TABLE THEN TRAIL TRUE UNION UNWIND WHEN WHERE
    WITH WSHORTEST XOR
    ADD ALTER ASSERT ATTACH BEGIN BY CALL COMMIT CONSTRAINT CONTAINS COPY COUNT CSV DELETE DETACH
    DO DROP EXPLAIN EXPORT FOREACH FROM IMPORT IS KEY LIMIT LOAD MANDATORY MATCH MERGE NODE OF
    PERIODIC REL REMOVE REQUIRE RETURN ROLLBACK SCALAR SCAN SET SKIP START TO TRANSACTION UNIQUE
    USE USING YIELD
"""
RESERVED_WORDS: frozenset[str] = frozenset(_RESERVED_TEXT.split())

_NODE_KEYS = frozenset({"name", "properties", "primary_key"})
_REL_KEYS = frozenset({"name", "from", "to", "properties", "multiplicity"})
_PROPERTY_KEYS = frozenset({"name", "type"})
_SPEC_KEYS = frozenset({"nodes", "relationships"})


def _fail(path: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"{path}: {problem}", field=path)


def _describe(value: object) -> str:
    """A short, safe rendering of a rejected value for an error message."""
    text = repr(value)
    return text if len(text) <= 70 else text[:67] + "..."


def _check_keys(obj: Mapping[str, Any], allowed: frozenset[str], path: str) -> None:
    unknown = sorted(str(k) for k in obj if k not in allowed)
    if unknown:
        raise _fail(
            f"{path}.{unknown[0]}" if IDENTIFIER_RE.fullmatch(unknown[0]) else path,
            f"unknown field {_describe(unknown[0])}; allowed: {', '.join(sorted(allowed))}",
        )


def _identifier(value: object, path: str) -> str:
    """Return ``value`` if it is a safe identifier; otherwise raise naming ``path``."""
    if not isinstance(value, str):
        raise _fail(path, f"expected a string, got {type(value).__name__}")
    if not IDENTIFIER_RE.fullmatch(value):
        raise _fail(
            path,
            f"invalid name {_describe(value)}; use a letter followed by up to 62 letters, "
            "digits or underscores",
        )
    if value.upper() in RESERVED_WORDS:
        raise _fail(path, f"{value!r} is a reserved word; choose another name")
    return value


def _type(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise _fail(path, f"expected a string, got {type(value).__name__}")
    if problem := text_problem(value, max_length=64):
        raise _fail(path, f"type {_describe(value)} {problem}")
    canonical = value.strip().upper()
    if canonical not in ALLOWED_TYPES:
        raise _fail(
            path, f"unsupported type {_describe(value)}; use one of {', '.join(ALLOWED_TYPES)}"
        )
    return canonical


def _mapping(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(path, f"expected an object, got {type(value).__name__}")
    return value


def _list(value: object, path: str, *, limit: int) -> list[Any]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise _fail(path, f"expected a list, got {type(value).__name__}")
    if len(value) > limit:
        raise _fail(path, f"too many entries ({len(value)}); the limit is {limit}")
    return list(value)


def _properties(value: object, path: str) -> list[tuple[str, str]]:
    """Validated ``(name, type)`` pairs with names unique case-insensitively (as the engine)."""
    result: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for index, raw in enumerate(_list(value, path, limit=MAX_PROPERTIES)):
        item_path = f"{path}[{index}]"
        prop = _mapping(raw, item_path)
        _check_keys(prop, _PROPERTY_KEYS, item_path)
        if "name" not in prop:
            raise _fail(f"{item_path}.name", "required")
        if "type" not in prop:
            raise _fail(f"{item_path}.type", "required")
        name = _identifier(prop["name"], f"{item_path}.name")
        if name.lower() in seen:
            raise _fail(
                f"{item_path}.name",
                f"duplicate property {name!r} (names are case-insensitive; "
                f"already declared as {seen[name.lower()]!r})",
            )
        seen[name.lower()] = name
        result.append((name, _type(prop["type"], f"{item_path}.type")))
    return result


def _quote(identifier: str) -> str:
    # Only ever called on names that passed _identifier (no backticks possible); quoting still
    # keeps a future reserved word from breaking the statement.
    return f"`{identifier}`"


def _columns(properties: Sequence[tuple[str, str]]) -> list[str]:
    return [f"{_quote(name)} {type_}" for name, type_ in properties]


def custom_schema_ddl(spec: Mapping[str, Any]) -> list[str]:
    """Validate a custom schema (JSON) and return its DDL: node tables first, then rel tables.

    Errors are ``InvalidRequest`` whose message and ``field`` start with the offending path,
    e.g. ``custom_schema.nodes[1].properties[0].type``.
    """
    root = _mapping(spec, CUSTOM_FIELD)
    _check_keys(root, _SPEC_KEYS, CUSTOM_FIELD)
    nodes_raw = _list(root.get("nodes", []), f"{CUSTOM_FIELD}.nodes", limit=MAX_TABLES)
    rels_raw = _list(
        root.get("relationships", []), f"{CUSTOM_FIELD}.relationships", limit=MAX_TABLES
    )
    if not nodes_raw:
        raise _fail(f"{CUSTOM_FIELD}.nodes", "declare at least one node table")
    if len(nodes_raw) + len(rels_raw) > MAX_TABLES:
        raise _fail(
            CUSTOM_FIELD,
            f"too many tables ({len(nodes_raw) + len(rels_raw)}); the limit is {MAX_TABLES}",
        )

    table_names: dict[str, str] = {}  # lower-case -> declared spelling (the engine ignores case)
    node_names: dict[str, str] = {}

    def claim(name: str, path: str) -> None:
        if name.lower() in table_names:
            raise _fail(
                path,
                f"duplicate table name {name!r} (names are case-insensitive; "
                f"already declared as {table_names[name.lower()]!r})",
            )
        table_names[name.lower()] = name

    statements: list[str] = []
    for index, raw in enumerate(nodes_raw):
        path = f"{CUSTOM_FIELD}.nodes[{index}]"
        node = _mapping(raw, path)
        _check_keys(node, _NODE_KEYS, path)
        if "name" not in node:
            raise _fail(f"{path}.name", "required")
        name = _identifier(node["name"], f"{path}.name")
        claim(name, f"{path}.name")
        properties = _properties(node.get("properties", []), f"{path}.properties")
        if not properties:
            raise _fail(f"{path}.properties", "declare at least one property (the primary key)")
        if "primary_key" not in node:
            raise _fail(f"{path}.primary_key", "required; name one of the node's properties")
        pk_path = f"{path}.primary_key"
        pk = node["primary_key"]
        if not isinstance(pk, str):
            raise _fail(pk_path, f"expected a string, got {type(pk).__name__}")
        types = {prop.lower(): (prop, type_) for prop, type_ in properties}
        if pk.lower() not in types:
            raise _fail(
                pk_path,
                f"{_describe(pk)} is not one of the node's properties "
                f"({', '.join(prop for prop, _ in properties)})",
            )
        pk_name, pk_type = types[pk.lower()]
        if pk_type not in PRIMARY_KEY_TYPES:
            raise _fail(
                pk_path,
                f"property {pk_name!r} has type {pk_type}, which cannot be a primary key; "
                f"use one of {', '.join(PRIMARY_KEY_TYPES)}",
            )
        columns = [*_columns(properties), f"PRIMARY KEY ({_quote(pk_name)})"]
        statements.append(f"CREATE NODE TABLE {_quote(name)}({', '.join(columns)})")
        node_names[name.lower()] = name

    for index, raw in enumerate(rels_raw):
        path = f"{CUSTOM_FIELD}.relationships[{index}]"
        rel = _mapping(raw, path)
        _check_keys(rel, _REL_KEYS, path)
        for key in ("name", "from", "to"):
            if key not in rel:
                raise _fail(f"{path}.{key}", "required")
        name = _identifier(rel["name"], f"{path}.name")
        claim(name, f"{path}.name")
        ends: list[str] = []
        for key in ("from", "to"):
            end = _identifier(rel[key], f"{path}.{key}")
            if end.lower() not in node_names:
                raise _fail(
                    f"{path}.{key}",
                    f"{end!r} is not a declared node table; "
                    f"declared: {', '.join(node_names.values())}",
                )
            ends.append(node_names[end.lower()])
        properties = _properties(rel.get("properties", []), f"{path}.properties")
        parts = [f"FROM {_quote(ends[0])} TO {_quote(ends[1])}", *_columns(properties)]
        if "multiplicity" in rel:
            multiplicity = rel["multiplicity"]
            if not isinstance(multiplicity, str) or multiplicity.upper() not in MULTIPLICITIES:
                raise _fail(
                    f"{path}.multiplicity",
                    f"unsupported multiplicity {_describe(multiplicity)}; "
                    f"use one of {', '.join(MULTIPLICITIES)}",
                )
            parts.append(multiplicity.upper())
        statements.append(f"CREATE REL TABLE {_quote(name)}({', '.join(parts)})")
    return statements
