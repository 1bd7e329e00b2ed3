"""The operation event store's contract: values, ids, transitions and the abstract store.

Both stores (``memory_store``, ``redis_store``) subclass ``OperationStore``: the public writes
(``start``, ``progress``, ``complete``, ``fail``, ``cancel``) are shared here and reach a store as
one ``Change``, which it applies atomically; the rules are listed in the package docstring.
"""

from __future__ import annotations

import json
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from provisioning_pipelines.storage.events.states import (
    OPERATION,
    TERMINAL_STATUSES,
)

EVENT_STARTED = "operation_started"
EVENT_PROGRESS = "operation_progress"
EVENT_COMPLETED = "operation_completed"
EVENT_ERROR = "operation_error"
EVENT_CANCELLED = "operation_cancelled"
EVENT_TYPES = (EVENT_STARTED, EVENT_PROGRESS, EVENT_COMPLETED, EVENT_ERROR, EVENT_CANCELLED)
TERMINAL_EVENT_TYPES = frozenset({EVENT_COMPLETED, EVENT_ERROR, EVENT_CANCELLED})

REPORT_OUTCOMES = ("ok", "timeout", "error")
DEFAULT_TTL_SECONDS = 86400
DEFAULT_KEY_PREFIX = "pp:"
#: Seconds between keepalive comments on an idle stream.
DEFAULT_KEEPALIVE_SECONDS = 15.0

MAX_ID_PART = 2**64 - 1
_EVENT_ID_RE = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")
# No ":" so that no operation id can name another operation's stream key in Redis.
_OPERATION_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

# action -> (statuses it may leave, status it moves to, event type), from the operation's state
# table. The Redis script receives the allowed statuses as an argument instead of repeating them.
_EVENT_OF = {"start": EVENT_STARTED, "progress": EVENT_PROGRESS, "complete": EVENT_COMPLETED,
             "fail": EVENT_ERROR, "cancel": EVENT_CANCELLED}
TRANSITIONS: dict[str, tuple[frozenset[str], str, str]] = {
    action: (frozenset(OPERATION.sources(action)), OPERATION.target(action), event)
    for action, event in _EVENT_OF.items()
}

class OperationExists(ValueError):
    """``create`` of an id that names a live operation."""


class EventStoreUnavailable(Exception):
    """The operation store's backend (Redis) cannot be reached; callers degrade, not crash."""


# --------------------------------------------------------------------------- values


def event_id_key(event_id: str) -> tuple[int, int]:
    """Parse ``"<ms>-<seq>"`` (or bare ``"<ms>"``) into a tuple that sorts like Redis does.

    Ids must be compared numerically: as strings ``"10-0" < "9-0"``.
    """
    match = _EVENT_ID_RE.fullmatch(event_id) if isinstance(event_id, str) else None
    if match is None:
        raise ValueError(f"invalid event id {event_id!r}: expected '<ms>-<seq>'")
    ms, seq = int(match.group(1)), int(match.group(2) or 0)
    if ms > MAX_ID_PART or seq > MAX_ID_PART:
        raise ValueError(f"invalid event id {event_id!r}: part out of range")
    return ms, seq


def format_event_id(key: tuple[int, int]) -> str:
    return f"{key[0]}-{key[1]}"


def parse_after(after: str | None) -> tuple[int, int]:
    """``None`` means from the start, which is the same as after ``0-0``."""
    return (0, 0) if after is None else event_id_key(after)


def new_operation_id() -> str:
    return "op_" + secrets.token_hex(12)


def utcnow() -> datetime:
    return datetime.now(UTC)


#: Where an operation stands in its owner's list: (created, in ms since the epoch; its id).
PageKey = tuple[int, str]


def created_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def page_key(operation: Operation) -> PageKey:
    """The operation's place in its owner's list, newest first (both stores order by it)."""
    return created_ms(operation.created_at), operation.id


def is_operation_id(operation_id: object) -> bool:
    """Ids end up in Redis keys and URLs; a malformed one names no operation."""
    return isinstance(operation_id, str) and _OPERATION_ID_RE.fullmatch(operation_id) is not None


def clamp_percent(percent: int | float | None) -> int | None:
    return None if percent is None else max(0, min(100, int(percent)))


def check_ttl(ttl_seconds: float) -> float:
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    return float(ttl_seconds)


def event_data(
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
class Change:
    """One write to an operation: the action (a key of ``TRANSITIONS``), the event's message,
    ``percent`` that raises progress (never lowers it), ``extra`` for the event's data and
    ``record`` for the status record. Made by the constructors below, one per public write."""

    action: str
    message: str
    percent: int | None
    extra: dict[str, Any]
    record: dict[str, str]

    @property
    def rule(self) -> tuple[frozenset[str], str, str]:
        """(statuses it may leave, status it moves to, event type)."""
        return TRANSITIONS[self.action]

    @classmethod
    def of(cls, action: str, message: str, *, percent: int | None = None,
           extra: dict[str, Any] | None = None, record: dict[str, str] | None = None) -> Change:
        # Round-trip the extra through JSON: both stores keep exactly what Redis would.
        return cls(action, str(message), percent, json.loads(json.dumps(extra or {})),
                   record or {})

    @classmethod
    def start(cls, message: str = "") -> Change:
        return cls.of("start", message or "Operation started")

    @classmethod
    def progress(cls, message: str, percent: int | None = None) -> Change:
        return cls.of("progress", message, percent=clamp_percent(percent))

    @classmethod
    def complete(cls, result: dict[str, Any]) -> Change:
        # Round-trip through JSON now: a result that cannot be stored fails before any write.
        result = json.loads(json.dumps(result))
        return cls.of("complete", "Operation completed", percent=100, extra={"result": result},
                      record={"result": json.dumps(result)})

    @classmethod
    def fail(cls, error: str, code: str | None = None) -> Change:
        """``error`` (the customer's sentence) and, when given, ``code`` (machine-readable:
        ``disk_full``, ``invalid_request``, ...), both in the event's data and the record."""
        error = str(error)
        extra: dict[str, Any] = {"error": error}
        record = {"error": error}
        if code is not None:
            extra["error_code"] = record["error_code"] = str(code)
        return cls.of("fail", error, extra=extra, record=record)

    @classmethod
    def cancel(cls, reason: str = "") -> Change:
        return cls.of("cancel", reason or "Operation cancelled", extra={"reason": reason})


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
    #: The failure's machine-readable code (``fail(..., code=)``), None otherwise.
    error_code: str | None = None

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
            "error_code": self.error_code,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "dagster_report": self.dagster_report,
            "dagster_report_detail": self.dagster_report_detail,
        }


# --------------------------------------------------------------------------- contract


class OperationStore(ABC):
    """The contract both stores keep; the public write methods are shared, the storage is not."""

    replay_batch: int = 500  # events per read while a subscriber replays or catches up
    ttl_seconds: float  # how long an operation's keys live after its last write

    @abstractmethod
    def create(
        self, kind: str, *, user_id: str | None = None, operation_id: str | None = None
    ) -> Operation:
        """Create a pending operation (id ``op_`` + 24 hex unless given).

        An id that exists raises ``OperationExists`` (a ValueError), one outside
        ``[A-Za-z0-9_.-]`` (max 128) ValueError. Every other method treats a malformed id as an
        unknown operation.
        """

    @abstractmethod
    def get(self, operation_id: str) -> Operation | None: ...

    @abstractmethod
    def operations_of(self, user_id: str, limit: int = 50, *,
                      before: PageKey | None = None) -> list[Operation]:
        """The user's operations that have not expired, newest first (by ``page_key``: an
        operation's creation in milliseconds, ties by id), and only those after ``before``
        in that order (the key of the last one a client saw) when it is given."""

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
        self, operation_id: str, after: str | None = None, *,
        keepalive: float = DEFAULT_KEEPALIVE_SECONDS,
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
    def _transition(self, operation_id: str, change: Change) -> OperationEvent | None:
        """Atomically check the transition, update the record, append the event, refresh TTL.

        None when the status cannot move.
        """

    def _transitions(self, operation_id: str, changes: Sequence[Change]
                     ) -> list[OperationEvent | None]:
        """``_transition`` for each change in turn; a store that can does it in one round trip."""
        return [self._transition(operation_id, change) for change in changes]

    def apply(self, operation_id: str, *changes: Change) -> list[OperationEvent | None]:
        """Apply ``changes`` in order, each atomically and by the same rules as one write (one
        that cannot move the status is skipped: None in its place), in one round trip where
        the store can: a writer with several lines to say waits once, not once a line."""
        if not is_operation_id(operation_id):
            return [None] * len(changes)  # names no operation, like an unknown id
        return self._transitions(operation_id, changes)

    def start(self, operation_id: str, message: str = "") -> OperationEvent | None:
        return self.apply(operation_id, Change.start(message))[0]

    def progress(
        self, operation_id: str, message: str, percent: int | None = None
    ) -> OperationEvent | None:
        return self.apply(operation_id, Change.progress(message, percent))[0]

    def complete(self, operation_id: str, result: dict[str, Any]) -> OperationEvent | None:
        return self.apply(operation_id, Change.complete(result))[0]

    def fail(self, operation_id: str, error: str, code: str | None = None
             ) -> OperationEvent | None:
        """End the operation failed (``Change.fail``)."""
        return self.apply(operation_id, Change.fail(error, code))[0]

    def cancel(self, operation_id: str, reason: str = "") -> OperationEvent | None:
        return self.apply(operation_id, Change.cancel(reason))[0]

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
