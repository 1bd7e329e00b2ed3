"""Forking: copying a parent graph's rows into a child database.

Each chosen table is exported from the parent with ``COPY (MATCH ... RETURN ...) TO 'x.parquet'``
and loaded into the child with ``COPY Table FROM 'x.parquet'`` (relationship files carry the from
and to keys first), all loads in one transaction on the child, so a failed fork adds no rows.

The parquet files go before the child's write handle closes: that close checkpoints, and on a
disk they filled it would leave a ``.shadow`` that stops every read of the child (``engine``).
A parent that cannot be opened or read is ``ParentUnreadable``, and a fork whose node tables did
not get every row the parent holds fails rather than pass for a copy.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import ladybug

from provisioning_pipelines.errors import EngineError, NotFound
from provisioning_pipelines.storage.ladybug.cypher import (
    count,
    name_literal,
    path_literal,
    quote,
    read_tables,
    rows,
    run_in_transaction,
)
from provisioning_pipelines.storage.ladybug.schema import POOL_PER_COLUMN

#: How the folder of a fork's parquet files begins (beside the child, removed when it ends).
FORK_WORKSPACE = ".fork-"


class ParentUnreadable(EngineError):
    """The parent's file could not be opened or read: nothing was copied."""


class Opener(Protocol):
    """What a fork needs of the engine: its buffer pools and its two ways to open a file (the
    engine passes itself; fork.py never imports engine.py, which imports it)."""

    buffer_pool_bytes: int
    data_buffer_pool_bytes: int

    def session(self, path: Path, *, read_only: bool, pool: int | None = ...
                ) -> AbstractContextManager[ladybug.Connection]: ...

    def writing(self, path: Path, *, pool: int | None = ...
                ) -> AbstractContextManager[ladybug.Connection]: ...

MiB = 1024 * 1024


@dataclass
class _Table:
    """What a fork needs to know about one table of a database."""

    name: str
    kind: str
    columns: list[tuple[str, str]] = field(default_factory=list)  # (name, type)
    primary_key: str | None = None
    # REL only: (from table, to table, from primary key, to primary key) per connection.
    pairs: list[tuple[str, str, str, str]] = field(default_factory=list)

    def column_names(self) -> set[str]:
        return {name.lower() for name, _ in self.columns}


_FILE = "\x00file\x00"  # replaced by the parquet path; cannot occur in a checked name


@dataclass
class _CopyStep:
    table: str
    export: str  # the MATCH ... RETURN query run on the parent
    load: str  # the COPY ... FROM statement run on the child; _FILE marks the file




def _read_schema(conn: ladybug.Connection) -> dict[str, _Table]:
    """Tables with their columns, keys and rel connections, keyed by lower-case name."""
    schema: dict[str, _Table] = {}
    for info in read_tables(conn):
        table = _Table(info.name, info.kind)
        for row in rows(conn.execute(f"CALL table_info({name_literal(info.name)}) RETURN *")):
            table.columns.append((str(row["name"]), str(row["type"])))
            if row.get("primary key"):
                table.primary_key = str(row["name"])
        if info.kind == "REL":
            for row in rows(
                conn.execute(f"CALL show_connection({name_literal(info.name)}) RETURN *")
            ):
                table.pairs.append(
                    (
                        str(row["source table name"]),
                        str(row["destination table name"]),
                        str(row["source table primary key"]),
                        str(row["destination table primary key"]),
                    )
                )
        schema[info.name.lower()] = table
    return schema




def copy_tables(
    engine: Opener,
    parent: Path,
    child: Path,
    *,
    tables: Sequence[str] | None = None,
    exclude: Sequence[str] | None = (),
) -> dict[str, int]:
    """Fork: copy rows of the chosen tables from ``parent`` into ``child``.

    Chosen = ``tables`` (all when None) minus names matching an fnmatch ``exclude`` pattern,
    present in both files (names compare case-insensitively). A rel table is copied only
    for connections whose two node tables are copied. Columns are matched by name, so a
    child with extra columns gets NULLs. All loads run in one transaction on the child, so
    a failed fork adds no rows. Returns rows added per copied table.
    """
    parent, child = Path(parent), Path(child)
    exclude = exclude or ()
    if isinstance(tables, str) or isinstance(exclude, str):
        raise TypeError("tables and exclude must be sequences of names, not a string")
    if not parent.is_file():
        raise NotFound(f"parent graph database not found: {parent.name}")
    if not child.is_file():
        raise NotFound(f"graph database not found: {child.name}")
    if os.path.samefile(parent, child):
        raise EngineError("cannot fork a graph database into itself")
    workdir = Path(tempfile.mkdtemp(prefix=f"{FORK_WORKSPACE}{child.name}-", dir=child.parent))
    try:
        return _copy(engine, parent, child, tables, exclude, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

def _copy_pool(engine: Opener, *schemas: dict[str, _Table]) -> int:
    """Bulk COPY pins ~1-2 MiB per column of the target table (lists count twice), on top of
    the catalog's own share (``POOL_PER_COLUMN`` for every column of the database)."""
    widest = columns = 0
    for schema in schemas:
        for table in schema.values():
            width = sum(2 if type_.endswith("]") else 1 for _, type_ in table.columns)
            widest = max(widest, width)
            columns += len(table.columns)
    return max(engine.buffer_pool_bytes, engine.data_buffer_pool_bytes,
               64 * MiB + widest * 4 * MiB + columns * POOL_PER_COLUMN)


@contextlib.contextmanager
def _reading_parent(engine: Opener, parent: Path) -> Iterator[ladybug.Connection]:
    """A read-only session on the parent whose failure to open is ``ParentUnreadable``."""
    opened = False
    try:
        with engine.session(parent, read_only=True, pool=engine.data_buffer_pool_bytes) as source:
            opened = True
            yield source
    except (EngineError, NotFound) as exc:
        if opened or isinstance(exc, ParentUnreadable):
            raise
        raise ParentUnreadable(exc.message) from exc


def _copy(
    engine: Opener,
    parent: Path,
    child: Path,
    tables: Sequence[str] | None,
    exclude: Sequence[str],
    workdir: Path,
) -> dict[str, int]:
    with _reading_parent(engine, parent) as source:
        try:
            parent_schema = _read_schema(source)
        except Exception as exc:
            raise ParentUnreadable(f"cannot read the schema of {parent.name}: {exc}") from exc
        with engine.writing(child, pool=_copy_pool(engine, parent_schema)) as target:
            try:
                return _load(source, target, parent, child, parent_schema, tables, exclude,
                             workdir)
            finally:  # before the child's handle closes: its checkpoint needs the room
                shutil.rmtree(workdir, ignore_errors=True)


def _load(
    source: ladybug.Connection,
    target: ladybug.Connection,
    parent: Path,
    child: Path,
    parent_schema: dict[str, _Table],
    tables: Sequence[str] | None,
    exclude: Sequence[str],
    workdir: Path,
) -> dict[str, int]:
    """Export the chosen tables from ``source`` and load them into ``target`` in one
    transaction; rows added per copied table."""
    child_schema = _read_schema(target)
    steps = _plan_copy(parent_schema, child_schema, tables, exclude)
    if not steps:
        return {}
    copied = {child_schema[s.table.lower()].name for s in steps}
    held = {name: count(source, parent_schema[name.lower()]) for name in copied}
    # Empty tables are "copied" without a file: each COPY pair costs ~10 ms.
    steps = [step for step in steps if held[step.table]]
    files: list[Path] = []
    for index, step in enumerate(steps):
        file = workdir / f"{index:03d}.parquet"
        try:
            source.execute(f"COPY ({step.export}) TO {path_literal(file)}")
        except Exception as exc:
            raise EngineError(
                f"fork export of {step.table} from {parent.name} failed: {exc}"
            ) from exc
        files.append(file)
    loaded = {step.table for step in steps}
    before = {name: count(target, child_schema[name.lower()]) for name in loaded}
    loads = [step.load.replace(_FILE, path_literal(file))
             for step, file in zip(steps, files, strict=True)]
    run_in_transaction(target, loads, label=f"{child.name}: fork load")
    added = {name: count(target, child_schema[name.lower()]) - before[name]
             if name in loaded else 0 for name in sorted(copied)}
    short = [f"{name} ({added[name]:,} of {held[name]:,})" for name in sorted(copied)
             if child_schema[name.lower()].kind == "NODE" and added[name] != held[name]]
    if short:
        raise EngineError(f"fork into {child.name} did not copy every row of "
                          f"{parent.name}: {', '.join(short)}")
    return added


def _plan_copy(
    parent: dict[str, _Table],
    child: dict[str, _Table],
    tables: Sequence[str] | None,
    exclude: Sequence[str],
) -> list[_CopyStep]:
    """Which tables, columns and rel connections to copy: node tables first, then rels."""
    wanted = set(parent) if tables is None else {str(t).lower() for t in tables}
    patterns = [str(p).lower() for p in exclude]

    def chosen(key: str, kind: str) -> bool:
        return (
            key in wanted
            and key in parent
            and key in child
            and parent[key].kind == kind
            and child[key].kind == kind
            and not any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)
        )

    steps: list[_CopyStep] = []
    nodes: set[str] = set()
    for key in parent:
        if not chosen(key, "NODE"):
            continue
        source, target = parent[key], child[key]
        columns = [name for name, _ in target.columns if name.lower() in source.column_names()]
        if target.primary_key is None or target.primary_key.lower() not in {
            c.lower() for c in columns
        }:
            raise EngineError(
                f"cannot fork table {target.name}: the parent has no column "
                f"{target.primary_key!r} for its primary key"
            )
        returned = ", ".join(f"n.{quote(c)}" for c in columns)
        steps.append(
            _CopyStep(
                target.name,
                f"MATCH (n:{quote(source.name)}) RETURN {returned}",
                f"COPY {quote(target.name)}({', '.join(map(quote, columns))}) FROM {_FILE}",
            )
        )
        nodes.add(key)
    for key in parent:
        if not chosen(key, "REL"):
            continue
        source, target = parent[key], child[key]
        columns = [name for name, _ in target.columns if name.lower() in source.column_names()]
        target_pairs = {(f.lower(), t.lower()) for f, t, _, _ in target.pairs}
        for from_table, to_table, from_pk, to_pk in source.pairs:
            ends = (from_table.lower(), to_table.lower())
            if ends not in target_pairs or not set(ends) <= nodes:
                continue
            returned = ", ".join(
                [f"a.{quote(from_pk)}", f"b.{quote(to_pk)}"] + [f"r.{quote(c)}" for c in columns]
            )
            steps.append(
                _CopyStep(
                    target.name,
                    f"MATCH (a:{quote(from_table)})-[r:{quote(source.name)}]->"
                    f"(b:{quote(to_table)}) RETURN {returned}",
                    f"COPY {quote(target.name)}({', '.join(map(quote, columns))}) FROM {_FILE}"
                    f" (from={name_literal(child[ends[0]].name)},"
                    f" to={name_literal(child[ends[1]].name)})",
                )
            )
    return steps
