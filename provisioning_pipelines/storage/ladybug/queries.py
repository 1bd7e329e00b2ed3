"""Customers' queries on one connection: their limits, their answer as JSON, their errors.

What a query may do is decided by the engine, never by reading its text: a reader's query runs
on a read-only handle, and LadybugDB refuses a write there before anything is done; what the
engine allows even read-only and reaches past the graph is refused from the text first
(``query_text.py``). A query cannot lift its own time limit: besides the connection's timeout
(which a ``CALL timeout=...`` inside the query would change) a watchdog interrupts the
connection at the deadline. A query's statements run as one transaction of ours (all or none,
and no transaction left open on a kept reader's connection for the next caller).

Values become JSON (``json_value``): a node ``{"_kind": "node", "_label", "_id", ...its
properties}``, a relationship ``{"_kind": "rel", "_label", "_id", "_src", "_dst", ...}``, a path
``{"_kind": "path", "nodes": [...], "rels": [...]}``, an internal id ``"table:offset"``, dates,
times and timestamps ISO 8601 text, an interval an ISO 8601 duration, a decimal a number (an
integer when whole), a UUID its text, a blob base64, a map with keys that are not text a list of
``{"key", "value"}``, NaN and infinities null.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import decimal
import heapq
import json
import math
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import ladybug

from provisioning_pipelines.errors import (
    AnswerTooLarge,
    Forbidden,
    InvalidRequest,
    QueryTimeout,
    redacted,
)

#: What LadybugDB says when a read-only handle or transaction is asked to write.
READ_ONLY_WRITE = ("read-only database", "read-only transaction")
#: What LadybugDB says when a query was interrupted (its timeout, or ``interrupt``).
_INTERRUPTED = "Interrupted"


@dataclass(frozen=True)
class QueryLimits:
    """A tier's bounds on one query (``QUERY_*`` settings)."""

    timeout_seconds: float = 30.0
    max_rows: int = 10_000
    max_answer_bytes: int = 16 * 1024 * 1024
    max_query_length: int = 100_000

    def to_dict(self) -> dict[str, float | int]:
        return {"timeout_seconds": self.timeout_seconds, "max_rows": self.max_rows,
                "max_answer_bytes": self.max_answer_bytes,
                "max_query_length": self.max_query_length}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QueryLimits:
        try:
            limits = cls(timeout_seconds=float(data["timeout_seconds"]),
                         max_rows=int(data["max_rows"]),
                         max_answer_bytes=int(data["max_answer_bytes"]),
                         max_query_length=int(data["max_query_length"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidRequest(f"limits: expected timeout_seconds, max_rows, "
                                 f"max_answer_bytes and max_query_length ({exc})",
                                 field="limits") from None
        if not (limits.timeout_seconds > 0 and limits.max_rows > 0
                and limits.max_answer_bytes > 0 and limits.max_query_length > 0):
            raise InvalidRequest("limits: every limit must be positive", field="limits")
        return limits


@dataclass(frozen=True)
class QueryResult:
    """A query's answer, its values already JSON."""

    columns: list[str]
    rows: list[list[Any]]
    row_count: int
    truncated: bool
    elapsed_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "rows": self.rows, "row_count": self.row_count,
                "truncated": self.truncated, "elapsed_ms": self.elapsed_ms}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QueryResult:
        return cls(columns=[str(name) for name in data["columns"]],
                   rows=[list(row) for row in data["rows"]], row_count=int(data["row_count"]),
                   truncated=bool(data["truncated"]), elapsed_ms=float(data["elapsed_ms"]))


# ---------------------------------------------------------------------- values

def _internal_id(value: Mapping[str, Any]) -> str:
    return f"{value['table']}:{value['offset']}"


def _is_internal_id(value: Mapping[str, Any]) -> bool:
    return value.keys() == {"offset", "table"} and all(
        isinstance(part, int) for part in value.values())


def _duration(value: dt.timedelta) -> str:
    """ISO 8601: ``P1DT2H3M4.5S`` (``-P...`` when negative, ``PT0S`` when zero)."""
    sign = "-" if value < dt.timedelta(0) else ""
    value = abs(value)
    hours, rest = divmod(value.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"P{value.days}D" if value.days else "P"
    clock = ""
    if hours:
        clock += f"{hours}H"
    if minutes:
        clock += f"{minutes}M"
    if seconds or value.microseconds:
        clock += f"{seconds}.{value.microseconds:06d}".rstrip("0").rstrip(".") + "S"
    if clock:
        text += f"T{clock}"
    return sign + (text if text != "P" else "PT0S")


def _properties(value: Mapping[str, Any], skip: frozenset[str]) -> dict[str, Any]:
    return {str(key): json_value(item) for key, item in value.items() if key not in skip}


_NODE_KEYS = frozenset({"_ID", "_LABEL"})
_REL_KEYS = frozenset({"_ID", "_LABEL", "_SRC", "_DST"})


def json_value(value: Any) -> Any:
    """One value the engine returned, as JSON (see the module's docstring)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        keys = value.keys()
        if keys >= _REL_KEYS:
            return {"_kind": "rel", "_label": value["_LABEL"], "_id": _id(value["_ID"]),
                    "_src": _id(value["_SRC"]), "_dst": _id(value["_DST"]),
                    **_properties(value, _REL_KEYS)}
        if keys >= _NODE_KEYS:
            return {"_kind": "node", "_label": value["_LABEL"], "_id": _id(value["_ID"]),
                    **_properties(value, _NODE_KEYS)}
        if keys == {"_NODES", "_RELS"}:
            return {"_kind": "path", "nodes": [json_value(node) for node in value["_NODES"]],
                    "rels": [json_value(rel) for rel in value["_RELS"]]}
        if _is_internal_id(value):
            return _internal_id(value)
        if all(isinstance(key, str) for key in keys):
            return {key: json_value(item) for key, item in value.items()}
        return [{"key": json_value(key), "value": json_value(item)}
                for key, item in value.items()]
    if isinstance(value, list | tuple):
        return [json_value(item) for item in value]
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return _duration(value)
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return None
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


def _id(value: Any) -> Any:
    return _internal_id(value) if isinstance(value, dict) and _is_internal_id(value) \
        else json_value(value)


# ---------------------------------------------------------------------- running

class _Watch:
    """One query's deadline: the watchdog interrupts its connection then unless it ended
    first (a query that lifted its own ``CALL timeout`` still stops)."""

    __slots__ = ("conn", "deadline", "fired", "running")

    def __init__(self, conn: ladybug.Connection, deadline: float) -> None:
        self.conn = conn
        self.deadline = deadline
        self.running = True
        self.fired = False

    def __lt__(self, other: _Watch) -> bool:
        return self.deadline < other.deadline


class _Watchdog:
    """One thread for every query of the process (a thread per query costs ~0.3 ms to start)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[_Watch] = []
        self._thread: threading.Thread | None = None

    def watch(self, conn: ladybug.Connection, seconds: float) -> _Watch:
        entry = _Watch(conn, time.monotonic() + seconds)
        with self._cond:
            heapq.heappush(self._heap, entry)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="query-watchdog",
                                                daemon=True)
                self._thread.start()
            elif self._heap[0] is entry:
                self._cond.notify()
        return entry

    def done(self, entry: _Watch) -> None:
        with self._cond:
            entry.running = False

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and not self._heap[0].running:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait(timeout=60.0)
                    if not self._heap:
                        self._thread = None
                        return
                    continue
                wait = self._heap[0].deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(timeout=wait)
                    continue
                entry = heapq.heappop(self._heap)
                entry.fired = True
                with contextlib.suppress(Exception):
                    entry.conn.interrupt()  # under the lock: ``done`` cannot pass it by


_WATCHDOG = _Watchdog()


#: The engine's largest and smallest integer (INT64).
_INT64 = (-(2 ** 63), 2 ** 63 - 1)


def check_parameters(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The parameters as the engine takes them, or 422 naming the one it would mangle or choke
    on: an integer past INT64, an empty list, a null inside a list or an object, a list whose
    items are not all of one kind, objects in a list with different keys (the engine would put
    each value under the last object's keys). Objects in a list are given one key order."""
    if params is None:
        return {}
    return {name: _parameter(value, f"parameters.{name}") for name, value in params.items()}


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):  # a list's kind is its items': [[1], ["a"]] is two kinds
        return "list of " + " or ".join(sorted({_kind(item) for item in value}) or ["nothing"])
    return "object" if isinstance(value, dict) else "null"


def _parameter(value: Any, field: str, *, inside: bool = False) -> Any:
    if value is None:
        if inside:
            raise InvalidRequest(f"{field}: null inside a list or an object is not supported "
                                 "by the engine; leave the key out", field=field)
        return None
    if isinstance(value, int) and not isinstance(value, bool) and not (
            _INT64[0] <= value <= _INT64[1]):
        raise InvalidRequest(f"{field}: {value} is past the engine's 64-bit integers",
                             field=field)
    if isinstance(value, dict):
        return {key: _parameter(item, f"{field}.{key}", inside=True)
                for key, item in value.items()}
    if not isinstance(value, list):
        return value
    if not value:
        raise InvalidRequest(f"{field}: an empty list has no type the engine can give it; "
                             "leave it out or send one item", field=field)
    kinds = {_kind(item) for item in value}
    if len(kinds) > 1:
        raise InvalidRequest(f"{field}: a list's items must all be of one kind (got "
                             f"{', '.join(sorted(kinds))})", field=field)
    items = [_parameter(item, f"{field}[{index}]", inside=True)
             for index, item in enumerate(value)]
    if kinds == {"object"}:
        keys = sorted(items[0])
        if any(sorted(item) != keys for item in items):
            raise InvalidRequest(f"{field}: every object in a list must have the same keys",
                                 field=field)
        items = [{key: item[key] for key in keys} for item in items]
    return items


def engine_message(exc: BaseException) -> str:
    """The engine's message for a customer: one line, no server paths."""
    return redacted(" ".join(str(exc).split()))[:1000]


def run(conn: ladybug.Connection, cypher: str, params: Mapping[str, Any] | None,
        limits: QueryLimits) -> QueryResult:
    """Run ``cypher`` on ``conn`` within ``limits``; the answer with JSON values.

    Raises ``Forbidden`` for a write the connection refuses (read-only), ``QueryTimeout`` once
    interrupted, ``AnswerTooLarge`` past the answer's size, ``InvalidRequest`` for any other
    error of the query (the engine's message, without paths)."""
    started = time.perf_counter()
    timeout_ms = max(1, int(limits.timeout_seconds * 1000))
    conn.set_query_timeout(timeout_ms)
    watch = _WATCHDOG.watch(conn, limits.timeout_seconds + 0.05)
    checked = check_parameters(params)
    try:
        try:
            with _one_transaction(conn):
                result = conn.execute(cypher, checked)
                if isinstance(result, list):  # several statements: the last one's answer
                    for earlier in result[:-1]:
                        earlier.close()
                    result = result[-1]
                try:
                    return _collect(result, limits, started)
                finally:
                    result.close()
        except (Forbidden, AnswerTooLarge):
            raise
        except Exception as exc:
            message = str(exc)
            if any(marker in message for marker in READ_ONLY_WRITE):
                raise Forbidden("query: this query writes, and the caller may only read "
                                "(the graph's read-only mode refused it)",
                                field="query") from exc
            if _INTERRUPTED in message or watch.fired:
                raise QueryTimeout(f"query: interrupted after {limits.timeout_seconds:g} s, "
                                   "the time limit of this graph's tier (timeout_seconds)",
                                   field="query") from exc
            raise InvalidRequest(f"query: {engine_message(exc)}", field="query") from exc
    finally:
        _WATCHDOG.done(watch)


@contextlib.contextmanager
def _one_transaction(conn: ladybug.Connection) -> Iterator[None]:
    """A query's statements as one transaction: all of them or none (LadybugDB would commit
    each statement on its own, so a failing second statement left the first one's writes),
    and a connection left with no transaction open whatever happened (a kept reader's
    connection serves the next caller). The answer is read inside it: an answer too large is
    nothing done."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        with contextlib.suppress(RuntimeError):  # the engine may have rolled it back already
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _collect(result: Any, limits: QueryLimits, started: float) -> QueryResult:
    columns = [str(name) for name in result.get_column_names()]
    rows: list[list[Any]] = []
    size = 0
    truncated = False
    while result.has_next():
        if len(rows) >= limits.max_rows:
            truncated = True
            break
        row = [json_value(value) for value in result.get_next()]
        size += len(json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode()) + 1
        if size > limits.max_answer_bytes:
            raise AnswerTooLarge(f"answer: larger than {limits.max_answer_bytes} bytes after "
                                 f"{len(rows)} rows, the most this graph's tier allows "
                                 "(max_answer_bytes); ask for fewer rows or columns",
                                 field="query")
        rows.append(row)
    elapsed = round((time.perf_counter() - started) * 1000, 3)
    return QueryResult(columns, rows, len(rows), truncated, elapsed)
