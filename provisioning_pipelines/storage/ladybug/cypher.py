"""Cypher text built from names, and results read back as rows: shared by the engine and forks."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
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


Statement = str | tuple[str, Mapping[str, Any]]


def run_in_transaction(conn: ladybug.Connection, statements: Sequence[Statement], *,
                       label: str) -> None:
    """Run the statements in one write transaction: all of them apply or none.

    A failure names the statement (``{label} 3 failed: CREATE ...: why``); a failed statement
    ends the transaction, so it is rolled back before the error is raised.
    """
    conn.execute("BEGIN TRANSACTION")
    for index, item in enumerate(statements, start=1):
        text, parameters = (item, {}) if isinstance(item, str) else item
        try:
            conn.execute(text, dict(parameters))
        except Exception as exc:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            raise EngineError(f"{label} {index} failed: {short(text)}: {exc}") from exc
    try:
        conn.execute("COMMIT")
    except Exception as exc:
        raise EngineError(f"{label}: commit failed: {exc}") from exc
