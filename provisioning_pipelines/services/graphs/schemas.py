"""The schema catalogue: the base schema and the extensions a customer may add to it.

Pure Python: it turns a request into Cypher DDL statements and never touches a database, so the
same checks run in the API (to answer 422 early) and in the provisioning step (to build the
graph). The catalogue DDL lives in ``schema_ddl/*.cypher`` so it can be read and reviewed as
Cypher; each file's ``// requires:`` header names the schemas it builds on. Custom schemas are
validated in ``custom_schemas``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from provisioning_pipelines.errors import InvalidRequest
from provisioning_pipelines.storage.ladybug import normalise_statement

BASE = "base"
EXTENSIONS_FIELD = "schema_extensions"


@dataclass(frozen=True)
class SchemaFile:
    """One catalogue entry: its DDL statements and the schemas it builds on."""

    name: str
    description: str
    requires: tuple[str, ...]
    statements: tuple[str, ...]


def _parse_cypher_file(name: str, text: str) -> SchemaFile:
    """Split a ``.cypher`` file into statements and read its ``// key: value`` header."""
    header: dict[str, str] = {}
    body: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("//"):
            key, sep, value = stripped[2:].partition(":")
            if sep and key.strip() in {"schema", "description", "requires"}:
                header[key.strip()] = value.strip()
            continue
        body.append(line)
    chunks = "\n".join(body).split(";")
    statements = tuple(normalise_statement(chunk) for chunk in chunks if chunk.strip())
    requires = tuple(part.strip() for part in header.get("requires", "").split(",") if part.strip())
    if header.get("schema", name) != name:
        raise RuntimeError(f"schema_ddl/{name}.cypher declares schema {header['schema']!r}")
    return SchemaFile(name, header.get("description", ""), requires, statements)


@cache
def _catalogue() -> dict[str, SchemaFile]:
    """Load every shipped ``.cypher`` file once, in canonical (dependency, then name) order."""
    folder = resources.files("provisioning_pipelines.services.graphs").joinpath("schema_ddl")
    found: dict[str, SchemaFile] = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".cypher"):
            name = entry.name.removesuffix(".cypher")
            found[name] = _parse_cypher_file(name, entry.read_text(encoding="utf-8"))
    if BASE not in found:
        raise RuntimeError("schema_ddl/base.cypher is missing from the package")
    for schema in found.values():
        missing = [r for r in schema.requires if r not in found]
        if missing:
            raise RuntimeError(f"schema {schema.name!r} requires unknown schema(s) {missing}")
    # Topological order with names as the tie-break, so the order never depends on the filesystem.
    ordered: dict[str, SchemaFile] = {}
    while len(ordered) < len(found):
        ready = sorted(
            name
            for name, schema in found.items()
            if name not in ordered and all(r in ordered for r in schema.requires)
        )
        if not ready:
            raise RuntimeError("schema_ddl requires form a cycle")
        # base first, always: every extension may reference it.
        name = BASE if BASE in ready else ready[0]
        ordered[name] = found[name]
    return ordered


def available_extensions() -> list[str]:
    """Names a customer may pick, in canonical order."""
    return [name for name in _catalogue() if name != BASE]


def extension_info() -> list[dict[str, Any]]:
    """The catalogue as data (name, description, requires) for the API and the CLI."""
    return [
        {"name": s.name, "description": s.description, "requires": list(s.requires)}
        for s in _catalogue().values()
        if s.name != BASE
    ]


def resolve_extensions(extensions: Sequence[str]) -> list[str]:
    """Validate a request's extension names and return them deduplicated in canonical order.

    A missing requirement is an error rather than silently added, so the list stored with the
    graph is exactly the list whose DDL was run.
    """
    if isinstance(extensions, str) or not isinstance(extensions, Sequence):
        raise InvalidRequest(
            f"{EXTENSIONS_FIELD}: expected a list of extension names", field=EXTENSIONS_FIELD
        )
    catalogue = _catalogue()
    available = available_extensions()
    wanted: set[str] = set()
    for index, name in enumerate(extensions):
        if not isinstance(name, str):
            raise InvalidRequest(
                f"{EXTENSIONS_FIELD}[{index}]: expected a string, got {type(name).__name__}",
                field=EXTENSIONS_FIELD,
            )
        if name == BASE:
            continue  # always included; accepting it keeps "base" harmless in requests
        if name not in catalogue:
            raise InvalidRequest(
                f"{EXTENSIONS_FIELD}: unknown extension {name[:64]!r}; "
                f"available: {', '.join(available)}",
                field=EXTENSIONS_FIELD,
            )
        wanted.add(name)
    for name in sorted(wanted):
        missing = [r for r in catalogue[name].requires if r != BASE and r not in wanted]
        if missing:
            raise InvalidRequest(
                f"{EXTENSIONS_FIELD}: extension {name!r} requires {', '.join(missing)}; "
                "add them to the list",
                field=EXTENSIONS_FIELD,
            )
    return [name for name in available if name in wanted]


def schema_ddl(extensions: Sequence[str]) -> list[str]:
    """Base DDL followed by each requested extension's DDL, in canonical order."""
    catalogue = _catalogue()
    statements = list(catalogue[BASE].statements)
    for name in resolve_extensions(extensions):
        statements.extend(catalogue[name].statements)
    return statements
