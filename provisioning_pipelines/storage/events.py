"""Operation status records and their append-only event streams.

An operation (one direct provisioning call) has a status record and a stream of events. The
stream id of an event is its SSE ``id:``, so a reconnecting client sends it back as
``Last-Event-ID`` and resumes exactly where it left off. Two stores keep one contract:
``RedisOperationStore`` (production: shared by every API worker and Dagster run process) and
``InMemoryOperationStore`` (the embedded default: one process, no server).

The rules both enforce: status only moves forward (pending -> running -> completed | failed |
cancelled), the first terminal state wins, every write refreshes one TTL on every key of the
operation, and ``subscribe`` replays then tails with no gap and no duplicate, ending after the
terminal event. In Redis the check-and-write is one Lua script, so racing writers in different
processes cannot both win; in memory it is one lock.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import re
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

OPERATION_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
OPEN_STATUSES = frozenset({"pending", "running"})

EVENT_STARTED = "operation_started"
EVENT_PROGRESS = "operation_progress"
EVENT_COMPLETED = "operation_completed"
EVENT_ERROR = "operation_error"
EVENT_CANCELLED = "operation_cancelled"
EVENT_TYPES = (EVENT_STARTED, EVENT_PROGRESS, EVENT_COMPLETED, EVENT_ERROR, EVENT_CANCELLED)
TERMINAL_EVENT_TYPES = frozenset({EVENT_COMPLETED, EVENT_ERROR, EVENT_CANCELLED})

REPORT_OUTCOMES = ("ok", "timeout", "error")
DEFAULT_TTL_SECONDS = 86400

_MAX_ID_PART = 2**64 - 1
_EVENT_ID_RE = re.compile(r"^(\d{1,20})(?:-(\d{1,20}))?$")
# No ":" so that no operation id can name another operation's stream key in Redis.
_OPERATION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

# action -> (statuses it may leave, status it moves to, event type). The one source of truth:
# the Redis script receives the allowed statuses as an argument instead of repeating them.
_TRANSITIONS: dict[str, tuple[frozenset[str], str, str]] = {
    "start": (frozenset({"pending"}), "running", EVENT_STARTED),
    "progress": (OPEN_STATUSES, "running", EVENT_PROGRESS),
    "complete": (OPEN_STATUSES, "completed", EVENT_COMPLETED),
    "fail": (OPEN_STATUSES, "failed", EVENT_ERROR),
    "cancel": (OPEN_STATUSES, "cancelled", EVENT_CANCELLED),
}


class EventStoreUnavailable(Exception):
    """The operation store's backend (Redis) cannot be reached; callers degrade, not crash."""


# --------------------------------------------------------------------------- values


def event_id_key(event_id: str) -> tuple[int, int]:
    """Parse ``"<ms>-<seq>"`` (or bare ``"<ms>"``) into a tuple that sorts like Redis does.

    Ids must be compared numerically: as strings ``"10-0" < "9-0"``.
    """
    match = _EVENT_ID_RE.match(event_id) if isinstance(event_id, str) else None
    if match is None:
        raise ValueError(f"invalid event id {event_id!r}: expected '<ms>-<seq>'")
    ms, seq = int(match.group(1)), int(match.group(2) or 0)
    if ms > _MAX_ID_PART or seq > _MAX_ID_PART:
        raise ValueError(f"invalid event id {event_id!r}: part out of range")
    return ms, seq


def format_event_id(key: tuple[int, int]) -> str:
    return f"{key[0]}-{key[1]}"


def _parse_after(after: str | None) -> tuple[int, int]:
    """``None`` means from the start, which is the same as after ``0-0``."""
    return (0, 0) if after is None else event_id_key(after)


def new_operation_id() -> str:
    return "op_" + secrets.token_hex(12)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def is_operation_id(operation_id: object) -> bool:
    """Ids end up in Redis keys and URLs; a malformed one names no operation."""
    return isinstance(operation_id, str) and _OPERATION_ID_RE.match(operation_id) is not None


def _clamp_percent(percent: int | float | None) -> int | None:
    return None if percent is None else max(0, min(100, int(percent)))


def _check_ttl(ttl_seconds: float) -> float:
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    return float(ttl_seconds)


def _event_data(
    operation_id: str,
    status: str,
    progress: int,
    message: str,
    timestamp: str,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """The one shape of an event payload, so both stores produce identical events."""
    return {
        "operation_id": operation_id,
        "status": status,
        "progress": progress,
        "message": message,
        "timestamp": timestamp,
        **extra,
    }


@dataclass(frozen=True)
class OperationEvent:
    """One entry of an operation's stream; ``id`` is the stream id and the SSE ``id:``."""

    id: str
    type: str
    data: dict[str, Any]

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_EVENT_TYPES

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "data": self.data}


@dataclass(frozen=True)
class Operation:
    """The status record of an operation: what a status poll returns."""

    id: str
    kind: str
    user_id: str | None
    status: str
    progress: int
    message: str
    result: dict[str, Any] | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    dagster_report: str | None = None
    dagster_report_detail: str | None = None

    @classmethod
    def pending(cls, operation_id: str, kind: str, user_id: str | None,
                now: datetime) -> Operation:
        """A just-created operation (both stores create them alike)."""
        return cls(id=operation_id, kind=kind, user_id=user_id, status="pending", progress=0,
                   message="", result=None, error=None, created_at=now, updated_at=now)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def to_dict(self) -> dict[str, Any]:
        return {
            "operation_id": self.id,
            "kind": self.kind,
            "user_id": self.user_id,
            "status": self.status,
            "progress": self.progress,
            "message": self.message,
            "result": self.result,
            "error": self.error,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "dagster_report": self.dagster_report,
            "dagster_report_detail": self.dagster_report_detail,
        }


# --------------------------------------------------------------------------- contract


class OperationStore(ABC):
    """The contract both stores keep; the public write methods are shared, the storage is not."""

    replay_batch: int = 500  # events per read while a subscriber replays or catches up

    @abstractmethod
    def create(
        self, kind: str, *, user_id: str | None = None, operation_id: str | None = None
    ) -> Operation:
        """Create a pending operation (id ``op_`` + 24 hex unless given).

        An id that exists, or one outside ``[A-Za-z0-9_.-]`` (max 128), raises ValueError. Every
        other method treats a malformed id as an unknown operation.
        """

    @abstractmethod
    def get(self, operation_id: str) -> Operation | None: ...

    @abstractmethod
    def record_report(self, operation_id: str, outcome: str, detail: str | None = None) -> None:
        """Record how reporting to Dagster went; allowed after terminal, unknown ids ignored."""

    @abstractmethod
    def events(self, operation_id: str, after: str | None = None) -> list[OperationEvent]:
        """Replay: the events with an id greater than ``after`` (all when None)."""

    @abstractmethod
    def wait_events(
        self, operation_id: str, after: str | None, timeout: float
    ) -> list[OperationEvent]:
        """Block until an event after ``after`` exists, or return [] after ``timeout``.

        Returns [] at once for an unknown operation, or a terminal one with nothing left to read:
        no event can come, so a long-poll should not hang.
        """

    @abstractmethod
    def subscribe(
        self, operation_id: str, after: str | None = None, *, keepalive: float = 15.0
    ) -> AsyncIterator[OperationEvent | None]:
        """Replay after ``after``, then tail live; None every idle ``keepalive`` seconds.

        Ends right after the terminal event, after replay if that was already read, and at once
        for an unknown (or expired) operation.
        """

    @abstractmethod
    def ping(self) -> bool: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def _transition(
        self,
        operation_id: str,
        action: str,
        message: str,
        percent: int | None,
        extra: dict[str, Any],
        record: dict[str, str],
    ) -> OperationEvent | None:
        """Atomically check the transition, update the record, append the event, refresh TTL.

        ``percent`` raises progress (never lowers it); ``extra`` goes into the event data,
        ``record`` into the status record. None when the status cannot move.
        """

    def start(self, operation_id: str, message: str = "") -> OperationEvent | None:
        return self._write(operation_id, "start", message or "Operation started")

    def progress(
        self, operation_id: str, message: str, percent: int | None = None
    ) -> OperationEvent | None:
        return self._write(operation_id, "progress", message, percent=_clamp_percent(percent))

    def complete(self, operation_id: str, result: dict[str, Any]) -> OperationEvent | None:
        # Round-trip through JSON now: a result that cannot be stored fails before any write.
        result = json.loads(json.dumps(result))
        return self._write(
            operation_id,
            "complete",
            "Operation completed",
            percent=100,
            extra={"result": result},
            record={"result": json.dumps(result)},
        )

    def fail(self, operation_id: str, error: str) -> OperationEvent | None:
        error = str(error)
        return self._write(
            operation_id, "fail", error, extra={"error": error}, record={"error": error}
        )

    def cancel(self, operation_id: str, reason: str = "") -> OperationEvent | None:
        return self._write(
            operation_id, "cancel", reason or "Operation cancelled", extra={"reason": reason}
        )

    def _write(
        self,
        operation_id: str,
        action: str,
        message: str,
        *,
        percent: int | None = None,
        extra: dict[str, Any] | None = None,
        record: dict[str, str] | None = None,
    ) -> OperationEvent | None:
        if not is_operation_id(operation_id):
            return None  # names no operation, like an unknown id
        return self._transition(
            operation_id, action, str(message), percent, extra or {}, record or {}
        )

    @staticmethod
    def _check_report(outcome: str) -> None:
        if outcome not in REPORT_OUTCOMES:
            raise ValueError(f"report outcome must be one of {REPORT_OUTCOMES}, not {outcome!r}")

    @staticmethod
    def _check_new(kind: str, operation_id: str | None) -> str:
        if not kind:
            raise ValueError("operation kind must not be empty")
        operation_id = operation_id or new_operation_id()
        if not is_operation_id(operation_id):
            raise ValueError(f"invalid operation id {operation_id!r}")
        return operation_id


def build_operation_store(
    redis_url: str | None, *, prefix: str = "pp:", ttl_seconds: float = DEFAULT_TTL_SECONDS
) -> OperationStore:
    """Redis when a URL is configured (production), the in-memory twin otherwise (embedded)."""
    if redis_url:
        return RedisOperationStore(redis_url, prefix=prefix, ttl_seconds=ttl_seconds)
    return InMemoryOperationStore(ttl_seconds=ttl_seconds)


# --------------------------------------------------------------------------- in memory


@dataclass
class _MemoryRecord:
    operation: Operation
    expires_at: float
    cond: threading.Condition
    events: list[OperationEvent] = field(default_factory=list)
    keys: list[tuple[int, int]] = field(default_factory=list)
    waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(default_factory=set)

    def next_id(self) -> tuple[int, int]:
        """Redis's ``XADD *`` rule: wall-clock ms, a sequence within the ms, never going back."""
        now_ms = time.time_ns() // 1_000_000
        if not self.keys or now_ms > self.keys[-1][0]:
            return now_ms, 0
        last_ms, last_seq = self.keys[-1]
        return last_ms, last_seq + 1

    def after(self, cursor: tuple[int, int], limit: int | None = None) -> list[OperationEvent]:
        start = bisect.bisect_right(self.keys, cursor)
        end = None if limit is None else start + limit
        return self.events[start:end]


class InMemoryOperationStore(OperationStore):
    """The single-process twin of the Redis store, with the same contract (TTL included).

    One lock guards everything; each operation has a Condition on that lock for blocking
    readers, and asyncio subscribers register an ``asyncio.Event`` that writers set through
    ``call_soon_threadsafe``, because writers run in worker threads while subscribers run in an
    event loop elsewhere. Checking for new events and registering a waiter happen under the lock,
    so an event cannot slip in between (no lost wake-up, no gap).
    """

    _SWEEP_INTERVAL = 1.0

    def __init__(self, ttl_seconds: float = DEFAULT_TTL_SECONDS) -> None:
        self.ttl_seconds = _check_ttl(ttl_seconds)
        self._lock = threading.Lock()
        self._records: dict[str, _MemoryRecord] = {}
        self._last_sweep = time.monotonic()

    def _live(self, operation_id: str) -> _MemoryRecord | None:
        """The record if it exists and has not expired; expired ones are dropped lazily."""
        record = self._records.get(operation_id)
        if record is not None and record.expires_at <= time.monotonic():
            del self._records[operation_id]
            return None
        return record

    def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < self._SWEEP_INTERVAL:
            return
        self._last_sweep = now
        for operation_id in [k for k, r in self._records.items() if r.expires_at <= now]:
            del self._records[operation_id]

    def create(
        self, kind: str, *, user_id: str | None = None, operation_id: str | None = None
    ) -> Operation:
        operation_id = self._check_new(kind, operation_id)
        now = _utcnow()
        operation = Operation.pending(operation_id, kind, user_id, now)
        with self._lock:
            self._sweep()
            if self._live(operation_id) is not None:
                raise ValueError(f"operation {operation_id!r} already exists")
            self._records[operation_id] = _MemoryRecord(
                operation=operation,
                expires_at=time.monotonic() + self.ttl_seconds,
                cond=threading.Condition(self._lock),
            )
        return operation

    def get(self, operation_id: str) -> Operation | None:
        with self._lock:
            record = self._live(operation_id)
            return None if record is None else record.operation

    def _transition(
        self,
        operation_id: str,
        action: str,
        message: str,
        percent: int | None,
        extra: dict[str, Any],
        record: dict[str, str],
    ) -> OperationEvent | None:
        allowed, status, event_type = _TRANSITIONS[action]
        extra = json.loads(json.dumps(extra))  # same JSON contract as Redis
        now = _utcnow()
        with self._lock:
            rec = self._live(operation_id)
            if rec is None or rec.operation.status not in allowed:
                return None
            current = rec.operation
            progress = current.progress if percent is None else max(current.progress, percent)
            updates: dict[str, Any] = {}
            if "result" in record:
                updates["result"] = json.loads(record["result"])
            if "error" in record:
                updates["error"] = record["error"]
            rec.operation = replace(
                current,
                status=status,
                progress=progress,
                message=message,
                updated_at=now,
                **updates,
            )
            key = rec.next_id()
            event = OperationEvent(
                id=format_event_id(key),
                type=event_type,
                data=_event_data(operation_id, status, progress, message, now.isoformat(), extra),
            )
            rec.events.append(event)
            rec.keys.append(key)
            rec.expires_at = time.monotonic() + self.ttl_seconds
            self._wake(rec)
        return event

    @staticmethod
    def _wake(rec: _MemoryRecord) -> None:
        rec.cond.notify_all()
        for loop, waiter in list(rec.waiters):
            try:
                loop.call_soon_threadsafe(waiter.set)
            except RuntimeError:  # the subscriber's loop is closed; it is gone
                rec.waiters.discard((loop, waiter))

    def record_report(self, operation_id: str, outcome: str, detail: str | None = None) -> None:
        self._check_report(outcome)
        with self._lock:
            rec = self._live(operation_id)
            if rec is None:
                return
            rec.operation = replace(
                rec.operation, dagster_report=outcome, dagster_report_detail=detail
            )
            rec.expires_at = time.monotonic() + self.ttl_seconds

    def events(self, operation_id: str, after: str | None = None) -> list[OperationEvent]:
        cursor = _parse_after(after)
        with self._lock:
            rec = self._live(operation_id)
            return [] if rec is None else rec.after(cursor)

    def wait_events(
        self, operation_id: str, after: str | None, timeout: float
    ) -> list[OperationEvent]:
        cursor = _parse_after(after)
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            while True:
                rec = self._live(operation_id)
                if rec is None:
                    return []
                found = rec.after(cursor)
                if found or rec.operation.is_terminal:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                # Wake at least at the expiry so an expired operation ends the wait.
                rec.cond.wait(min(remaining, max(0.0, rec.expires_at - time.monotonic())))

    async def subscribe(
        self, operation_id: str, after: str | None = None, *, keepalive: float = 15.0
    ) -> AsyncIterator[OperationEvent | None]:
        cursor = _parse_after(after)
        if keepalive <= 0:
            raise ValueError("keepalive must be positive")
        loop = asyncio.get_running_loop()
        while True:
            waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
            with self._lock:
                rec = self._live(operation_id)
                if rec is None:
                    return
                batch = rec.after(cursor, self.replay_batch)
                if not batch:
                    if rec.operation.is_terminal:
                        return  # its terminal event was already read
                    waiter = (loop, asyncio.Event())
                    rec.waiters.add(waiter)
            if waiter is None:
                for event in batch:
                    yield event
                    cursor = event_id_key(event.id)
                    if event.is_terminal:
                        return
                continue
            try:
                await asyncio.wait_for(waiter[1].wait(), keepalive)
                idle = False
            except TimeoutError:
                idle = True
            finally:
                with self._lock:
                    rec.waiters.discard(waiter)
            if idle:
                yield None

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        """Nothing to release; the records live as long as the store object."""


# --------------------------------------------------------------------------- Redis

# KEYS: record hash, event stream. ARGV: ttl_ms, then field/value pairs of the record.
_CREATE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

# KEYS: record hash, event stream.
# ARGV: allowed statuses (",a,b,"), new status, event type, message, percent ('' = keep),
#       timestamp, event extra (JSON), ttl_ms, then field/value pairs for the record.
# Check, HSET, XADD and PEXPIRE run as one step: racing writers cannot both pass the check.
_TRANSITION_LUA = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
if not string.find(ARGV[1], ',' .. status .. ',', 1, true) then return false end
local progress = tonumber(redis.call('HGET', KEYS[1], 'progress')) or 0
if ARGV[5] ~= '' then progress = math.max(progress, tonumber(ARGV[5])) end
progress = tostring(progress)
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'progress', progress, 'message', ARGV[4],
           'updated_at', ARGV[6])
if #ARGV > 8 then redis.call('HSET', KEYS[1], unpack(ARGV, 9)) end
local id = redis.call('XADD', KEYS[2], '*', 'type', ARGV[3], 'status', ARGV[2],
                      'progress', progress, 'message', ARGV[4], 'timestamp', ARGV[6],
                      'extra', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[8])
redis.call('PEXPIRE', KEYS[2], ARGV[8])
return {id, progress}
"""

# KEYS: record hash, event stream. ARGV: ttl_ms, outcome, detail, has_detail ('1' or '0').
_REPORT_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'dagster_report', ARGV[2])
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'dagster_report_detail', ARGV[3])
else
  redis.call('HDEL', KEYS[1], 'dagster_report_detail')
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
"""


@contextmanager
def _redis_errors() -> Iterator[None]:
    """Turn "Redis is down" into one exception the callers know, whatever the client raised."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise EventStoreUnavailable(f"Redis is unreachable: {exc}") from exc


def _range_start(cursor: tuple[int, int]) -> str:
    """XRANGE start strictly after ``cursor`` (Redis refuses an exclusive start at the max id)."""
    return "+" if cursor == (_MAX_ID_PART, _MAX_ID_PART) else f"({format_event_id(cursor)}"


def _entries_of(response: Any) -> list[tuple[str, dict[str, str]]]:
    """The entries of a one-stream XREAD reply, in either RESP2 or RESP3 shape."""
    if not response:
        return []
    if isinstance(response, dict):
        values = list(response.values())
        entries = values[0] if values else []
        # RESP3 may wrap the entry list in a one-element list.
        if entries and isinstance(entries[0], list):
            entries = entries[0]
        return list(entries)
    return list(response[0][1])


class RedisOperationStore(OperationStore):
    """Operations in Redis: ``{prefix}op:{id}`` (hash) and ``{prefix}op:{id}:events`` (stream).

    Short socket timeouts and no retries, so a Redis that is down costs about a second and
    surfaces as ``EventStoreUnavailable`` instead of hanging a request. Blocking reads (XREAD
    BLOCK) use their own pool whose socket timeout is longer than the longest block, and block
    in chunks of at most ``_BLOCK_CHUNK`` seconds. ``subscribe`` opens an asyncio client per
    subscriber (asyncio connections belong to one event loop) and closes it when it ends.
    """

    _BLOCK_CHUNK = 5.0

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "pp:",
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        connect_timeout: float = 1.0,
        socket_timeout: float = 3.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.ttl_seconds = _check_ttl(ttl_seconds)
        self._ttl_ms = str(max(1, int(self.ttl_seconds * 1000)))
        self._connect_timeout = connect_timeout
        self._socket_timeout = socket_timeout
        common: dict[str, Any] = {
            "decode_responses": True,
            "socket_connect_timeout": connect_timeout,
            "health_check_interval": 30,
            "retry": Retry(NoBackoff(), 0),  # a retried script could append an event twice
        }
        self._pool = redis.ConnectionPool.from_url(url, socket_timeout=socket_timeout, **common)
        self._block_pool = redis.ConnectionPool.from_url(
            url, socket_timeout=self._BLOCK_CHUNK + socket_timeout, **common
        )
        self._redis = redis.Redis(connection_pool=self._pool)
        self._blocking = redis.Redis(connection_pool=self._block_pool)
        self._create_script = self._redis.register_script(_CREATE_LUA)
        self._transition_script = self._redis.register_script(_TRANSITION_LUA)
        self._report_script = self._redis.register_script(_REPORT_LUA)

    # keys and decoding

    def _keys(self, operation_id: str) -> list[str]:
        record = f"{self.prefix}op:{operation_id}"
        return [record, f"{record}:events"]

    @staticmethod
    def _operation(operation_id: str, fields: Mapping[str, str]) -> Operation | None:
        if not fields or "status" not in fields:
            return None
        result = fields.get("result")
        return Operation(
            id=operation_id,
            kind=fields.get("kind", ""),
            user_id=fields.get("user_id"),
            status=fields["status"],
            progress=int(fields.get("progress", "0")),
            message=fields.get("message", ""),
            result=json.loads(result) if result is not None else None,
            error=fields.get("error"),
            created_at=datetime.fromisoformat(fields["created_at"]),
            updated_at=datetime.fromisoformat(fields["updated_at"]),
            dagster_report=fields.get("dagster_report"),
            dagster_report_detail=fields.get("dagster_report_detail"),
        )

    @staticmethod
    def _event(operation_id: str, entry_id: str, fields: Mapping[str, str]) -> OperationEvent:
        return OperationEvent(
            id=entry_id,
            type=fields["type"],
            data=_event_data(
                operation_id,
                fields["status"],
                int(fields["progress"]),
                fields["message"],
                fields["timestamp"],
                json.loads(fields.get("extra") or "{}"),
            ),
        )

    def _events(
        self, operation_id: str, entries: list[tuple[str, dict[str, str]]]
    ) -> list[OperationEvent]:
        return [self._event(operation_id, entry_id, fields) for entry_id, fields in entries]

    # writes

    def create(
        self, kind: str, *, user_id: str | None = None, operation_id: str | None = None
    ) -> Operation:
        operation_id = self._check_new(kind, operation_id)
        now = _utcnow()
        fields = {
            "kind": kind,
            "status": "pending",
            "progress": "0",
            "message": "",
            "created_at": now.isoformat(),
            "updated_at": now.isoformat(),
        }
        if user_id is not None:
            fields["user_id"] = user_id
        args = [self._ttl_ms, *(item for pair in fields.items() for item in pair)]
        with _redis_errors():
            created = self._create_script(keys=self._keys(operation_id), args=args)
        if not created:
            raise ValueError(f"operation {operation_id!r} already exists")
        return Operation.pending(operation_id, kind, user_id, now)

    def _transition(
        self,
        operation_id: str,
        action: str,
        message: str,
        percent: int | None,
        extra: dict[str, Any],
        record: dict[str, str],
    ) -> OperationEvent | None:
        allowed, status, event_type = _TRANSITIONS[action]
        extra_json = json.dumps(extra)
        now = _utcnow().isoformat()
        args = [
            "," + ",".join(sorted(allowed)) + ",",
            status,
            event_type,
            message,
            "" if percent is None else str(percent),
            now,
            extra_json,
            self._ttl_ms,
            *(item for pair in record.items() for item in pair),
        ]
        with _redis_errors():
            reply = self._transition_script(keys=self._keys(operation_id), args=args)
        if not reply:
            return None
        event_id, progress = reply
        return OperationEvent(
            id=event_id,
            type=event_type,
            data=_event_data(
                operation_id, status, int(progress), message, now, json.loads(extra_json)
            ),
        )

    def record_report(self, operation_id: str, outcome: str, detail: str | None = None) -> None:
        self._check_report(outcome)
        if not is_operation_id(operation_id):
            return
        args = [self._ttl_ms, outcome, detail or "", "0" if detail is None else "1"]
        with _redis_errors():
            self._report_script(keys=self._keys(operation_id), args=args)

    # reads

    def get(self, operation_id: str) -> Operation | None:
        if not is_operation_id(operation_id):
            return None
        record_key, _ = self._keys(operation_id)
        with _redis_errors():
            fields = self._redis.hgetall(record_key)
        return self._operation(operation_id, fields)

    def events(self, operation_id: str, after: str | None = None) -> list[OperationEvent]:
        cursor = _parse_after(after)
        if not is_operation_id(operation_id):
            return []
        _, stream_key = self._keys(operation_id)
        with _redis_errors():
            entries = self._redis.xrange(stream_key, _range_start(cursor), "+")
        return self._events(operation_id, entries)

    def _snapshot(
        self, operation_id: str, cursor: tuple[int, int], count: int | None = None
    ) -> tuple[str | None, list[OperationEvent]]:
        """Status and events after ``cursor`` in one MULTI, read status first.

        The status is read before the events, and the terminal event is written in the same
        script as the terminal status, so "terminal and nothing after the cursor" means the
        terminal event really was read already.
        """
        record_key, stream_key = self._keys(operation_id)
        with _redis_errors():
            pipe = self._redis.pipeline(transaction=True)
            pipe.hget(record_key, "status")
            pipe.xrange(stream_key, _range_start(cursor), "+", count=count)
            status, entries = pipe.execute()
        return status, self._events(operation_id, entries)

    def wait_events(
        self, operation_id: str, after: str | None, timeout: float
    ) -> list[OperationEvent]:
        cursor = _parse_after(after)
        if not is_operation_id(operation_id):
            return []
        _, stream_key = self._keys(operation_id)
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            status, found = self._snapshot(operation_id, cursor)
            if status is None or found or status in TERMINAL_STATUSES:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            block_ms = max(1, int(min(remaining, self._BLOCK_CHUNK) * 1000))
            with _redis_errors():
                reply = self._blocking.xread({stream_key: format_event_id(cursor)}, block=block_ms)
            found = self._events(operation_id, _entries_of(reply))
            if found:
                return found

    async def subscribe(
        self, operation_id: str, after: str | None = None, *, keepalive: float = 15.0
    ) -> AsyncIterator[OperationEvent | None]:
        cursor = _parse_after(after)
        if keepalive <= 0:
            raise ValueError("keepalive must be positive")
        if not is_operation_id(operation_id):
            return
        record_key, stream_key = self._keys(operation_id)
        client = aioredis.Redis.from_url(
            self.url,
            decode_responses=True,
            socket_connect_timeout=self._connect_timeout,
            socket_timeout=keepalive + self._socket_timeout,
            retry=AsyncRetry(NoBackoff(), 0),
        )
        try:
            while True:
                # Replay (and catch up) by cursor: each read starts strictly after the last id
                # yielded, so nothing is skipped and nothing repeats.
                with _redis_errors():
                    pipe = client.pipeline(transaction=True)
                    pipe.hget(record_key, "status")
                    pipe.xrange(stream_key, _range_start(cursor), "+", count=self.replay_batch)
                    status, entries = await pipe.execute()
                if status is None:
                    return
                batch = self._events(operation_id, entries)
                if not batch:
                    if status in TERMINAL_STATUSES:
                        return  # its terminal event was already read
                    # Caught up: block for the next event after the cursor. An event that
                    # landed since the read above is returned at once, so there is no gap.
                    with _redis_errors():
                        reply = await client.xread(
                            {stream_key: format_event_id(cursor)},
                            block=max(1, int(keepalive * 1000)),
                            count=self.replay_batch,
                        )
                    batch = self._events(operation_id, _entries_of(reply))
                    if not batch:
                        yield None
                        continue
                for event in batch:
                    yield event
                    cursor = event_id_key(event.id)
                    if event.is_terminal:
                        return
        finally:
            await client.aclose()

    def ping(self) -> bool:
        try:
            return bool(self._redis.ping())
        except (redis.ConnectionError, redis.TimeoutError):
            return False

    def close(self) -> None:
        self._redis.close()
        self._blocking.close()
        self._pool.disconnect()
        self._block_pool.disconnect()
