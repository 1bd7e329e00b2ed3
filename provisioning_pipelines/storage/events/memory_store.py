"""The in-memory operation store: the embedded default's twin of the Redis store.

One process, no server, the same contract (the contract tests run on both). Expiry is measured
on an injectable monotonic clock, so tests move time instead of sleeping through a TTL.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from provisioning_pipelines.storage.events.contract import (
    DEFAULT_KEEPALIVE_SECONDS,
    DEFAULT_TTL_SECONDS,
    Change,
    Operation,
    OperationEvent,
    OperationExists,
    OperationStore,
    PageKey,
    check_ttl,
    event_data,
    event_id_key,
    format_event_id,
    page_key,
    parse_after,
    utcnow,
)


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

    ``clock`` (seconds, monotonic) is what the TTL is measured on; blocking waits still wait in
    real time.
    """

    _SWEEP_INTERVAL = 1.0

    def __init__(
        self, ttl_seconds: float = DEFAULT_TTL_SECONDS, *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_seconds = check_ttl(ttl_seconds)
        self.clock = clock
        self._lock = threading.Lock()
        self._records: dict[str, _MemoryRecord] = {}
        self._last_sweep = clock()

    def _live(self, operation_id: str) -> _MemoryRecord | None:
        """The record if it exists and has not expired; expired ones are dropped lazily."""
        record = self._records.get(operation_id)
        if record is not None and record.expires_at <= self.clock():
            del self._records[operation_id]
            return None
        return record

    def _sweep(self) -> None:
        now = self.clock()
        if now - self._last_sweep < self._SWEEP_INTERVAL:
            return
        self._last_sweep = now
        for operation_id in [k for k, r in self._records.items() if r.expires_at <= now]:
            del self._records[operation_id]

    def create(
        self, kind: str, *, user_id: str | None = None, operation_id: str | None = None
    ) -> Operation:
        operation_id = self._check_new(kind, operation_id)
        now = utcnow()
        operation = Operation.pending(operation_id, kind, user_id, now)
        with self._lock:
            self._sweep()
            if self._live(operation_id) is not None:
                raise OperationExists(f"operation {operation_id!r} already exists")
            self._records[operation_id] = _MemoryRecord(
                operation=operation,
                expires_at=self.clock() + self.ttl_seconds,
                cond=threading.Condition(self._lock),
            )
        return operation

    def operations_of(self, user_id: str, limit: int = 50, *,
                      before: PageKey | None = None) -> list[Operation]:
        with self._lock:
            self._sweep()
            mine = [record.operation for key in list(self._records)
                    if (record := self._live(key)) is not None
                    and record.operation.user_id == user_id
                    and (before is None or page_key(record.operation) < before)]
        mine.sort(key=page_key, reverse=True)
        return mine[:limit]

    def get(self, operation_id: str) -> Operation | None:
        with self._lock:
            record = self._live(operation_id)
            return None if record is None else record.operation

    def _transition(self, operation_id: str, change: Change) -> OperationEvent | None:
        allowed, status, event_type = change.rule
        percent, record = change.percent, change.record
        now = utcnow()
        with self._lock:
            rec = self._live(operation_id)
            if rec is None or rec.operation.status not in allowed:
                return None
            current = rec.operation
            progress = current.progress if percent is None else max(current.progress, percent)
            updates: dict[str, Any] = {}
            if "result" in record:
                updates["result"] = json.loads(record["result"])
            for key in ("error", "error_code"):
                if key in record:
                    updates[key] = record[key]
            rec.operation = replace(
                current,
                status=status,
                progress=progress,
                message=change.message,
                updated_at=now,
                **updates,
            )
            key = rec.next_id()
            event = OperationEvent(
                id=format_event_id(key),
                type=event_type,
                data=event_data(operation_id, status, progress, change.message,
                                now.isoformat(), change.extra),
            )
            rec.events.append(event)
            rec.keys.append(key)
            rec.expires_at = self.clock() + self.ttl_seconds
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
            rec.expires_at = self.clock() + self.ttl_seconds

    def events(self, operation_id: str, after: str | None = None) -> list[OperationEvent]:
        cursor = parse_after(after)
        with self._lock:
            rec = self._live(operation_id)
            return [] if rec is None else rec.after(cursor)

    def wait_events(
        self, operation_id: str, after: str | None, timeout: float
    ) -> list[OperationEvent]:
        cursor = parse_after(after)
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
                rec.cond.wait(min(remaining, max(0.0, rec.expires_at - self.clock())))

    async def subscribe(
        self, operation_id: str, after: str | None = None, *,
        keepalive: float = DEFAULT_KEEPALIVE_SECONDS,
    ) -> AsyncIterator[OperationEvent | None]:
        cursor = parse_after(after)
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
