"""Cypher text built from names, and results read back as rows: shared by the engine and forks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ladybug

from provisioning_pipelines.errors import EngineError
from provisioning_pipelines.storage.ladybug.schema import TableInfo


def quote(name: str) -> str:
    if "`" in name:
        raise EngineError(f"table or column name {name!r} cannot be quoted")
    return f"`{name}`"


def name_literal(name: str) -> str:
    """A table name as a Cypher string literal (``table_info('T')``, ``from='T'``)."""
    if "'" in name or "\\" in name:
        raise EngineError(f"table name {name!r} cannot be used in a procedure call")
    return f"'{name}'"


def path_literal(path: Path) -> str:
    """A Cypher string literal for a file path (COPY takes no parameters for it)."""
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


def short(statement: str, limit: int = 120) -> str:
    flat = " ".join(statement.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def rows(result: Any) -> list[dict[str, Any]]:
    """A query result as dicts keyed by column name (closes the result)."""
    if isinstance(result, list):  # several statements: LadybugDB returns one result each
        result = result[-1]
    columns = result.get_column_names()
    found = [dict(zip(columns, row, strict=True)) for row in result.get_all()]
    result.close()
    return found


def read_tables(conn: ladybug.Connection) -> list[TableInfo]:
    found = rows(conn.execute("CALL show_tables() RETURN *"))
    found.sort(key=lambda row: row["id"])
    return [TableInfo(str(row["name"]), str(row["type"])) for row in found]


def count(conn: ladybug.Connection, table: TableInfo) -> int:
    if table.kind == "NODE":
        query = f"MATCH (n:{quote(table.name)}) RETURN count(n) AS c"
    else:
        query = f"MATCH ()-[r:{quote(table.name)}]->() RETURN count(r) AS c"
    return int(rows(conn.execute(query))[0]["c"])
