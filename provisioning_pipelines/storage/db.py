"""The SQL database: one engine per URL per process, and sessions as context managers.

``session()`` commits on success, rolls back on any error (a failed commit included) and always
closes; the error propagates, it is never swallowed. On SQLite every transaction starts with
``BEGIN IMMEDIATE``: SQLite has one writer at a time anyway, and taking the write lock up front
turns read-then-write races (host slots, subgraph counts) into waits instead of
``database is locked`` failures halfway through.

On PostgreSQL a pooled connection is pinged before use only when it sat idle in the pool for
``PING_AFTER_IDLE_SECONDS``: a ping on every checkout (SQLAlchemy's ``pool_pre_ping``) is one
more round trip per transaction, a fifth of a graph's. A connection that broke while in use is
caught by the disconnect it raises, which makes SQLAlchemy recycle every older connection of
the pool; the idle ping catches the one that broke while nobody used it (a restarted server).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Engine,
    Result,
    Select,
    Table,
    bindparam,
    create_engine,
    event,
    insert,
    inspect,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.dml import UpdateBase


def normalize_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 to SQLAlchemy 2.1; we ship psycopg2 (as Dagster does)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


class Database:
    """An engine and its session factory."""

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(
                self.url, connect_args={"timeout": 60, "check_same_thread": False}
            )
            _serialize_sqlite_writers(self.engine)
        else:
            # As many kept open as a busy process uses at once (its provisioning threads, the
            # answers in the thread pool, the heartbeats): a connection opened past the pool is
            # closed again when it is given back, and a new PostgreSQL connection costs its
            # server ~7 ms of CPU, more than a graph's statements (measured in a burst, with
            # 10 kept open: 0.28 opened per graph). The most at once stays 30.
            self.engine = create_engine(self.url, pool_size=24, max_overflow=6)
            _ping_idle_connections(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def ping(self) -> bool:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True

    def dispose(self) -> None:
        self.engine.dispose()


def insert_all(session: Session, rows: Sequence[Any]) -> None:
    """Insert new rows of several tables, given as ORM objects, in one round trip on PostgreSQL.

    There the rows are one statement, each but the last a data-modifying CTE: foreign keys are
    checked at the statement's end, so a row may refer to another of the same call. Elsewhere
    (SQLite) each row is its own statement. The objects are not added to the session: a caller
    that needs one afterwards reads it back. The statement is built once per shape (tables and
    columns) and then only bound, which is most of what an insert costs in Python.
    """
    execute_with_rows(session, None, {}, rows)


def execute_with_rows(session: Session, statement: Select[Any] | UpdateBase | None,
                      params: dict[str, Any],
                      rows: Sequence[Any]) -> Result[Any] | None:
    """Run ``statement`` (built once, bound with ``params``) and insert ``rows`` as
    ``insert_all`` does, in one round trip on PostgreSQL: the rows become data-modifying CTEs
    of the statement. Elsewhere the rows go first. The statement's result, if any."""
    values = [_values_of(row) for row in rows]
    if not takes_data_modifying_ctes(session):
        for table, row_values in values:
            session.execute(insert(table), row_values)
        return session.execute(statement, params) if statement is not None else None
    if statement is None and not values:
        return None
    shape = tuple((table, tuple(row_values)) for table, row_values in values)
    bound = {**params, **{f"r{index}_{key}": value
                          for index, (_, row_values) in enumerate(values)
                          for key, value in row_values.items()}}
    return session.execute(_with_rows(statement, shape), bound)


def is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def takes_data_modifying_ctes(session: Session) -> bool:
    """Whether the session's database runs ``WITH ... AS (INSERT/UPDATE ...)`` (PostgreSQL
    does; SQLite does not), so several writes can share one round trip."""
    return is_postgresql(session)


def _values_of(row: Any) -> tuple[Table, dict[str, Any]]:
    """An ORM object's table and column values, defaults filled in here: the nested
    statements of one call cannot share SQLAlchemy's default parameters."""
    mapper = inspect(row).mapper
    values: dict[str, Any] = {}
    for attribute in mapper.column_attrs:
        column = attribute.columns[0]
        value = getattr(row, attribute.key)
        if value is None and column.default is not None and not column.default.is_sequence:
            value = column.default.arg(None) if column.default.is_callable else column.default.arg
        if value is not None:
            values[column.key] = value
    return mapper.local_table, values


@functools.lru_cache(maxsize=128)
def _with_rows(statement: Select[Any] | UpdateBase | None,
               shape: tuple[tuple[Table, tuple[str, ...]], ...]) -> Select[Any] | UpdateBase:
    inserts: list[Select[Any] | UpdateBase] = [
        insert(table).values({key: bindparam(f"r{index}_{key}", type_=table.c[key].type)
                              for key in keys})
        for index, (table, keys) in enumerate(shape)]
    if statement is None:
        *inserts, statement = inserts
    return statement.add_cte(*(row.cte(f"row_{index}") for index, row in enumerate(inserts)))


#: A pooled connection unused for this long is pinged before it is handed out.
PING_AFTER_IDLE_SECONDS = 1.0


def _ping_idle_connections(engine: Engine) -> None:
    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the pool drops it and hands out a fresh connection
            raise DisconnectionError(f"idle connection is gone: {exc}") from exc


def _serialize_sqlite_writers(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy's BEGIN below be the only one
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


_databases: dict[str, Database] = {}
_lock = threading.Lock()


def get_database(url: str) -> Database:
    """The process-wide ``Database`` for a URL: engines and their pools are made once."""
    key = normalize_url(url)
    with _lock:
        database = _databases.get(key)
        if database is None:
            database = _databases[key] = Database(key)
        return database


def dispose_database(url: str) -> None:
    """Close a database's pool and forget it (tests that make a database per test)."""
    with _lock:
        database = _databases.pop(normalize_url(url), None)
    if database is not None:
        database.dispose()
