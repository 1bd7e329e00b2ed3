"""Operations as provisioning writes them: events that never fail the work, and progress.

Both execution paths use these: the direct executor keeps an operation's record and events with
``SafeEvents``, and a step's ``progress(message, percent)`` is a ``ProgressReporter`` in a
Dagster run and in the direct path alike. An event store that is down is logged once per
operation and counted; provisioning goes on without events.
"""

from __future__ import annotations

import logging
import threading
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
from provisioning_pipelines.storage.events import OperationStore, new_operation_id

logger = logging.getLogger("provisioning_pipelines")

#: An operation's owner, or how to find it: looked up only when the operation must be created
#: (the webhook and the API open operations with their owner first, so the direct path skips it).
Owner = str | None | Callable[[], str | None]


class SafeEvents:
    """The operation store as provisioning uses it: a store that fails never fails the work.

    The first failure per operation is logged; every failure is counted (``failures``).
    """

    def __init__(self, store: OperationStore) -> None:
        self.store = store
        self.failures = 0
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def open(self, kind: str, user_id: Owner, operation_id: str | None) -> str:
        """Create the operation (pending) unless it exists; returns its id either way."""
        if operation_id is not None and self.call(operation_id, "get") is not None:
            return operation_id
        operation_id = operation_id or new_operation_id()
        owner = user_id() if callable(user_id) else user_id
        try:
            self.store.create(kind, user_id=owner, operation_id=operation_id)
        except Exception as exc:
            self._failed(operation_id, exc)
        return operation_id

    def call(self, operation_id: str, method: str, *args: Any) -> Any:
        try:
            return getattr(self.store, method)(operation_id, *args)
        except Exception as exc:
            self._failed(operation_id, exc)
            return None

    def _failed(self, operation_id: str, exc: Exception) -> None:
        metrics.OUTAGES.labels("event_store").inc()
        with self._lock:
            self.failures += 1
            first = operation_id not in self._warned
            self._warned.add(operation_id)
        if first:
            logger.warning("operation %s: event store unavailable (%s: %s); provisioning "
                           "continues without events", operation_id, type(exc).__name__, exc)


class ProgressReporter:
    """``progress(message, percent)`` for step code: always to the log, and appended to the
    operation's events, synchronously and in order, when there is an operation. A Dagster run
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
