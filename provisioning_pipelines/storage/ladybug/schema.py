"""What a schema's DDL declares, read without opening a database.

The tables a list of ``CREATE ... TABLE`` statements makes, and the schema's fingerprint (the
template file name): both are pure functions of the statements, so they are computed once per
schema and cached.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

_CREATE_TABLE_RE = re.compile(
    r"^\s*CREATE\s+(NODE|REL)\s+TABLE\s+(?:GROUP\s+)?(?:IF\s+NOT\s+EXISTS\s+)?"
    r"(`[^`]+`|[A-Za-z_][A-Za-z0-9_]*)",
    re.IGNORECASE,
)


def normalise_statement(statement: str) -> str:
    """One canonical spelling per statement: whitespace collapsed, no trailing ';'."""
    return " ".join(statement.split()).rstrip(";").rstrip()


@dataclass(frozen=True)
class TableInfo:
    name: str
    kind: str  # "NODE" | "REL"


def ddl_fingerprint(ddl: Sequence[str]) -> str:
    """sha256 of the normalised statements: equal schemas share one template file."""
    digest = hashlib.sha256()
    for statement in ddl:
        normalised = normalise_statement(statement)
        if normalised:
            digest.update(normalised.encode("utf-8"))
            digest.update(b"\x00")
    return digest.hexdigest()


#: LadybugDB 0.22 keeps ~10.5 KiB of buffer pool per column of the catalog pinned while a
#: database is open or its tables are being created (100 tables of 100 columns: a 64 MiB pool
#: fails at table 64, 112 MiB builds), so schema work gets this much per column on top of a floor.
POOL_PER_COLUMN = 16 * 1024


def schema_pool_bytes(ddl: Sequence[str], floor: int) -> int:
    """The buffer pool for opening or building a database that holds ``ddl``'s schema.

    Columns are counted generously (every comma of a CREATE statement), since a pool is only
    reserved, not touched, until used: an open costs the same with 16 MiB or 1 GiB.
    """
    columns = sum(statement.count(",") + 1 for statement in ddl)
    return max(floor, floor + columns * POOL_PER_COLUMN)


def node_properties(ddl: Sequence[str], table: str) -> list[str]:
    """The property names a ``CREATE NODE TABLE`` in ``ddl`` gives ``table`` (none if absent),
    read from the statement, so nobody has to open the file to ask."""
    for statement in ddl:
        match = _CREATE_TABLE_RE.match(statement)
        if not match or match.group(2).strip("`").lower() != table.lower():
            continue
        body = statement[statement.index("(", match.end()) + 1:statement.rindex(")")]
        names, depth, start = [], 0, 0
        for index, char in enumerate(body + ","):
            depth += char in "([<"
            depth -= char in ")]>"
            if char == "," and depth == 0:
                words = body[start:index].split()
                if words and words[0].upper() != "PRIMARY":
                    names.append(words[0].strip("`"))
                start = index + 1
        return names
    return []


def expected_tables(ddl: Sequence[str]) -> list[TableInfo]:
    """The tables a DDL list creates, read from its ``CREATE ... TABLE`` statements."""
    return list(schema_key(tuple(ddl))[1])


@functools.lru_cache(maxsize=256)
def schema_key(ddl: tuple[str, ...]) -> tuple[str, tuple[TableInfo, ...]]:
    """Fingerprint and expected tables, cached: the same few schemas are created all day."""
    tables: list[TableInfo] = []
    for statement in ddl:
        match = _CREATE_TABLE_RE.match(statement)
        if match:
            tables.append(TableInfo(match.group(2).strip("`"), match.group(1).upper()))
    return ddl_fingerprint(ddl), tuple(tables)


def table_keys(tables: Sequence[TableInfo]) -> set[tuple[str, str]]:
    # LadybugDB table names are case-insensitive.
    return {(t.name.lower(), t.kind) for t in tables}

