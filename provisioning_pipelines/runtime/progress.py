"""Operations as provisioning writes them: events that never fail the work, and progress.

Both execution paths use these: the direct executor keeps an operation's record and events with
``SafeEvents``, and a step's ``progress(message, percent)`` is a ``ProgressReporter`` in a
Dagster run and in the direct path alike. An event store that is down is logged once per
operation and counted; provisioning goes on without events.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from provisioning_pipelines import metrics
from provisioning_pipelines.flows.public import customer_error, describe, public_result
from provisioning_pipelines.services.provisioning.claims import (
    ClaimHeld,
    ClaimLost,
    Queued,
    RetryScheduled,
)
from provisioning_pipelines.storage.events import (
    OperationExists,
    OperationStore,
    new_operation_id,
)
from provisioning_pipelines.storage.events.contract import Change

logger = logging.getLogger("provisioning_pipelines")

#: An operation's owner, or how to find it: looked up only when the operation must be created
#: (the webhook and the API open operations with their owner first, so the direct path skips it).
Owner = str | None | Callable[[], str | None]


class SafeEvents:
    """The operation store as provisioning uses it: a store that fails never fails the work.

    The first failure per operation is logged; every failure is counted (``failures``).

    With ``progress_delay`` (the direct executor's), progress lines are held back for at most
    that long and written with the operation's next write, in one round trip: a flow that
    takes milliseconds says its four lines and its end at once, instead of waiting on Redis
    five times; a slow step's line still shows within ``progress_delay`` (a flusher thread
    writes what is due). Writes of an operation keep their order: a write waits while the
    flusher is writing that operation's lines. Lines held back when the process dies are lost;
    the operation itself is not (its start and its end are never held back).
    """

    def __init__(self, store: OperationStore, *, progress_delay: float = 0.0) -> None:
        self.store = store
        self.failures = 0
        self.progress_delay = progress_delay
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        #: operation -> (when its lines are due, the lines held back)
        self._held: dict[str, tuple[float, list[Change]]] = {}
        self._flushing: set[str] = set()
        self._flusher: threading.Thread | None = None
        self._closed = False

    def open(self, kind: str, user_id: Owner, operation_id: str | None) -> str:
        """Create the operation (pending) unless it exists; returns its id either way.

        One round trip: the store's create refuses an id that exists. Only when the owner
        must be looked up (a callable) is the operation asked for first, so an operation that
        exists costs no lookup."""
        if (operation_id is not None and callable(user_id)
                and self.call(operation_id, "get") is not None):
            return operation_id
        operation_id = operation_id or new_operation_id()
        owner = user_id() if callable(user_id) else user_id
        try:
            self.store.create(kind, user_id=owner, operation_id=operation_id)
        except OperationExists:
            pass
        except Exception as exc:
            self._failed(operation_id, exc)
        return operation_id

    def call(self, operation_id: str, method: str, *args: Any) -> Any:
        if method == "progress" and self.progress_delay > 0:
            return self._hold(operation_id, Change.progress(*args))
        held = self._take(operation_id)
        try:
            make = _CHANGES.get(method) if held else None
            if make is not None:  # this write and the held lines, in one round trip
                return self.store.apply(operation_id, *held, make(*args))[-1]
            if held:
                self.store.apply(operation_id, *held)
            return getattr(self.store, method)(operation_id, *args)
        except Exception as exc:
            self._failed(operation_id, exc)
            return None
        finally:
            if held:
                self._done_flushing([operation_id])

    def flush(self) -> None:
        """Write every line held back now (a process about to stop)."""
        with self._lock:
            due = list(self._held)
        for operation_id in due:
            self._write_held(operation_id, self._take(operation_id))

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._closed = True
            self._changed.notify_all()

    def _hold(self, operation_id: str, change: Change) -> None:
        with self._lock:
            if not self._closed:
                if operation_id in self._held:
                    self._held[operation_id][1].append(change)
                    return
                self._held[operation_id] = (time.monotonic() + self.progress_delay, [change])
                if self._flusher is None:
                    self._flusher = threading.Thread(target=self._flush_when_due,
                                                     name="progress-flusher", daemon=True)
                    self._flusher.start()
                self._changed.notify_all()
                return
        # closed: nobody flushes any more, so written now (after what is still held)
        self._write_held(operation_id, [*self._take(operation_id), change])

    def _take(self, operation_id: str) -> list[Change]:
        """The operation's held lines, taken for writing (none: nothing to wait for); until
        ``_done_flushing``, a later write of the operation waits."""
        with self._lock:
            while operation_id in self._flushing:
                self._changed.wait()
            if self.progress_delay <= 0 or operation_id not in self._held:
                return []
            self._flushing.add(operation_id)
            return self._held.pop(operation_id)[1]

    def _done_flushing(self, operation_ids: list[str]) -> None:
        with self._lock:
            self._flushing.difference_update(operation_ids)
            self._changed.notify_all()

    def _write_held(self, operation_id: str, held: list[Change]) -> None:
        if not held:
            return
        try:
            self.store.apply(operation_id, *held)
        except Exception as exc:
            self._failed(operation_id, exc)
        finally:
            self._done_flushing([operation_id])

    def _flush_when_due(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    self._flusher = None
                    return
                now = time.monotonic()
                due = [op for op, (at, _) in self._held.items() if at <= now]
                if not due:
                    soonest = min((at for at, _ in self._held.values()), default=None)
                    self._changed.wait(None if soonest is None else soonest - now)
                    continue
                batches = [(op, self._held.pop(op)[1]) for op in due]
                self._flushing.update(due)
            for operation_id, held in batches:
                self._write_held(operation_id, held)

    def _failed(self, operation_id: str, exc: Exception) -> None:
        metrics.OUTAGES.labels("event_store").inc()
        with self._lock:
            self.failures += 1
            first = operation_id not in self._warned
            self._warned.add(operation_id)
        if first:
            logger.warning("operation %s: event store unavailable (%s: %s); provisioning "
                           "continues without events", operation_id, type(exc).__name__, exc)


#: The writes that can share a round trip with held lines (the others are reads or creates).
_CHANGES: dict[str, Callable[..., Change]] = {
    "start": Change.start, "complete": Change.complete, "fail": Change.fail,
    "cancel": Change.cancel,
}


class ProgressReporter:
    """``progress(message, percent)`` for step code: always to the log, and appended to the
    operation's events, in order, when there is an operation (at once, or held back briefly
    to share a round trip: ``SafeEvents``). A Dagster run
    also ends its operation with it (``complete``, ``fail``); the first terminal write wins."""

    def __init__(self, log: Any, events: SafeEvents | None, operation_id: str | None) -> None:
        self.log = log
        self.events = events
        self.operation_id = operation_id

    def __call__(self, message: str, percent: int | None = None) -> None:
        self.log.info(f"[{percent if percent is not None else '-'}%] {message}")
        self._write("progress", message, percent)

    def start(self, message: str) -> None:
        """Move a pending operation to running (one already running is left as it is)."""
        self._write("start", message)

    def complete(self, result: dict[str, Any]) -> None:
        self._write("complete", {**public_result(result), "operation_id": self.operation_id})

    def fail(self, error: str, code: str | None = None) -> None:
        self._write("fail", error, code)

    def _write(self, method: str, *args: Any) -> None:
        if self.events is not None and self.operation_id is not None:
            self.events.call(self.operation_id, method, *args)


def end_on_error(progress: ProgressReporter, exc: BaseException, *, made_here: bool) -> None:
    """End an operation whose flow raised ``exc``: the one rule for both paths.

    An operation ends ``failed`` only when its work has finally failed. A queued subscription's
    operation goes on (a progress line; whoever provisions it ends it), and so does one whose
    attempt failed with attempts left (``RetryScheduled``: the next attempt, in any process,
    continues it). While another worker holds the claim, or took it over, that worker ends the
    operation, unless this caller made the operation itself (``made_here``: then no one else
    knows of it). Any other error fails it, with the customer's sentence and code (never a
    path, a host or a driver's message: ``flows/public.py``).
    """
    if isinstance(exc, Queued | RetryScheduled):
        progress(describe(exc))
    elif isinstance(exc, ClaimHeld | ClaimLost) and not made_here:
        return
    else:
        error = customer_error(exc)
        progress.fail(error.message, error.code)
