"""Operation status records and their append-only event streams.

An operation (one provisioning call) has a status record and a stream of events. The stream id
of an event is its SSE ``id:``, so a reconnecting client sends it back as ``Last-Event-ID`` and
resumes exactly where it left off. Two stores keep one contract (``contract.py``):
``RedisOperationStore`` (production: shared by every API worker and Dagster run process) and
``InMemoryOperationStore`` (the embedded default: one process, no server).

The rules both enforce: status only moves forward (pending -> running -> completed | failed |
cancelled), the first terminal state wins, every write refreshes one TTL on every key of the
operation, and ``subscribe`` replays then tails with no gap and no duplicate, ending after the
terminal event. In Redis the check-and-write is one Lua script, so racing writers in different
processes cannot both win; in memory it is one lock.
"""

from __future__ import annotations

from provisioning_pipelines.storage.events.contract import (
    DEFAULT_KEEPALIVE_SECONDS,
    DEFAULT_KEY_PREFIX,
    DEFAULT_TTL_SECONDS,
    EVENT_CANCELLED,
    EVENT_COMPLETED,
    EVENT_ERROR,
    EVENT_PROGRESS,
    EVENT_STARTED,
    EVENT_TYPES,
    REPORT_OUTCOMES,
    TERMINAL_EVENT_TYPES,
    EventStoreUnavailable,
    Operation,
    OperationEvent,
    OperationExists,
    OperationStore,
    PageKey,
    event_id_key,
    format_event_id,
    is_operation_id,
    new_operation_id,
    page_key,
)
from provisioning_pipelines.storage.events.fanout import Fanout
from provisioning_pipelines.storage.events.memory_store import InMemoryOperationStore
from provisioning_pipelines.storage.events.redis_store import RedisOperationStore
from provisioning_pipelines.storage.events.states import (
    OPERATION,
    OPERATION_STATUSES,
    TERMINAL_STATUSES,
)


def build_operation_store(
    redis_url: str | None, *, prefix: str = DEFAULT_KEY_PREFIX,
    ttl_seconds: float = DEFAULT_TTL_SECONDS,
) -> OperationStore:
    """Redis when a URL is configured (production), the in-memory twin otherwise (embedded)."""
    if redis_url:
        return RedisOperationStore(redis_url, prefix=prefix, ttl_seconds=ttl_seconds)
    return InMemoryOperationStore(ttl_seconds=ttl_seconds)


__all__ = [
    "DEFAULT_KEEPALIVE_SECONDS",
    "DEFAULT_KEY_PREFIX",
    "DEFAULT_TTL_SECONDS",
    "EVENT_CANCELLED",
    "EVENT_COMPLETED",
    "EVENT_ERROR",
    "EVENT_PROGRESS",
    "EVENT_STARTED",
    "EVENT_TYPES",
    "OPERATION",
    "OPERATION_STATUSES",
    "REPORT_OUTCOMES",
    "TERMINAL_EVENT_TYPES",
    "TERMINAL_STATUSES",
    "EventStoreUnavailable",
    "Fanout",
    "InMemoryOperationStore",
    "Operation",
    "OperationEvent",
    "OperationExists",
    "OperationStore",
    "PageKey",
    "RedisOperationStore",
    "build_operation_store",
    "event_id_key",
    "format_event_id",
    "is_operation_id",
    "new_operation_id",
    "page_key",
]
