"""Reporting direct provisionings to Dagster, in the background and bounded.

One ``report_runless_asset_event`` against dagster-postgres costs more than the provisioning it
describes, and a Dagster instance whose storage hangs would hang the caller, so a report never
sits on the user's path: the completed event and the helper's return come first. Reports run on a
worker thread (one is enough once reports are batched, and dagster-postgres keeps one
connection open: a second worker opened and closed another for each overlap); each has a
deadline of ``timeout`` seconds from submission, and a
supervisor thread settles it ``timeout`` when the deadline passes, whether or not a worker is
still stuck in it. At most ``max_pending`` reports wait at once: beyond that a report is settled
``error`` at once instead of piling up. Each outcome (``ok``, ``timeout``, ``error``) is logged
and recorded on the operation.

Reports that wait together are written together: a worker takes every report queued within
``linger_seconds`` of the first (up to ``max_batch``) and writes those of one asset key in one
batch (one insert of the events, one of their tags, one update of the asset's latest row, which
is why a batch holds one key), where one report alone is three statements in two transactions.
A burst, or a script provisioning one graph after another, then costs Dagster's database a few
statements per batch instead of per graph, and the report's writes stop competing with the
next provisioning; a lone report lands ``linger_seconds`` later. A batch that fails is written
again one report at a time, so one bad event fails only itself.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterEvent,
    DagsterEventType,
    DagsterInstance,
    EventLogEntry,
)
from dagster._core.events import StepMaterializationData
from dagster._core.instance.utils import RUNLESS_JOB_NAME, RUNLESS_RUN_ID

from provisioning_pipelines import metrics
from provisioning_pipelines.settings import Settings
from provisioning_pipelines.storage.events import OperationStore

logger = logging.getLogger("provisioning_pipelines.reporting")


@dataclass(order=True)
class _Report:
    deadline: float
    operation_id: str = field(compare=False)
    event: AssetMaterialization = field(compare=False)
    submitted_at: float = field(default_factory=time.time, compare=False)
    settled: threading.Event = field(default_factory=threading.Event, compare=False)
    lock: threading.Lock = field(default_factory=threading.Lock, compare=False)


class MaterializationReporter:
    def __init__(
        self,
        instance: DagsterInstance | Callable[[], DagsterInstance],
        store: OperationStore | None,
        *,
        timeout: float,
        max_workers: int = 1,
        max_pending: int = 256,
        max_batch: int = 64,
        linger_seconds: float = 0.2,
    ) -> None:
        self._instance = instance
        self._instance_lock = threading.Lock()
        self.store = store
        self.timeout = timeout
        self.max_pending = max_pending
        self.max_batch = max_batch
        self.linger_seconds = linger_seconds
        self._workers = max_workers
        self._pending: list[_Report] = []  # by deadline, for the supervisor
        self._queue: deque[_Report] = deque()  # in order, for the workers
        self._condition = threading.Condition()
        self._closed = False
        self.outcomes: dict[str, int] = {"ok": 0, "timeout": 0, "error": 0}
        self._threads = [threading.Thread(target=self._work, name=f"dagster-report-{index}",
                                          daemon=True) for index in range(max_workers)]
        self._supervisor = threading.Thread(target=self._supervise, name="dagster-report-deadlines",
                                            daemon=True)
        for thread in [*self._threads, self._supervisor]:
            thread.start()

    @property
    def instance(self) -> DagsterInstance:
        """Made on first use, once: two workers making a fresh SQLite instance at the same time
        would both create its tables.

        An instance made here holds its connections (``optimize_for_webserver``, what Dagster's
        webserver does for its own long-lived process): dagster-postgres otherwise connects
        afresh for every write, twice per report, which was half of what a report cost and a
        new server process on PostgreSQL's side each time. Each statement is then bounded by
        the report's deadline on the server too (``statement_timeout``).
        """
        with self._instance_lock:
            if callable(self._instance) and not isinstance(self._instance, DagsterInstance):
                instance = self._instance()
                instance.optimize_for_webserver(statement_timeout=max(int(self.timeout * 1000), 1),
                                                pool_recycle=3600, max_overflow=self._workers)
                self._instance = instance
            return self._instance

    def submit(self, operation_id: str, event: AssetMaterialization) -> None:
        """Report ``event`` for the operation in the background; returns at once."""
        report = _Report(time.monotonic() + self.timeout, operation_id, event)
        with self._condition:
            if self._closed or len(self._pending) >= self.max_pending:
                reason = "reporter closed" if self._closed else "too many reports pending"
                full = True
            else:
                full = False
                heapq.heappush(self._pending, report)
                self._queue.append(report)
                self._condition.notify_all()
        if full:
            self._settle(report, "error", reason)

    def _work(self) -> None:
        """A worker: every report waiting when it is free, one batch per asset key."""
        while True:
            with self._condition:
                while not self._queue and not self._closed:
                    self._condition.wait()
                if not self._queue:
                    return
                # Linger a moment for the reports that follow (a script's next call, a
                # burst's next graph), so that they share one write.
                lingered = self._queue[0].submitted_at + self.linger_seconds
                while (len(self._queue) < self.max_batch and not self._closed
                       and (left := lingered - time.time()) > 0):
                    self._condition.wait(left)
                taken = [self._queue.popleft()
                         for _ in range(min(self.max_batch, len(self._queue)))]
            by_key: dict[AssetKey, list[_Report]] = {}
            for report in taken:
                if not report.settled.is_set():
                    by_key.setdefault(report.event.asset_key, []).append(report)
            for reports in by_key.values():
                self._write(reports)

    def _write(self, reports: list[_Report]) -> None:
        if len(reports) > 1:
            try:
                self.instance.event_log_storage.store_event_batch(
                    [_entry(report) for report in reports])
            except Exception as exc:
                logger.warning("a batch of %d Dagster reports failed (%s: %s); writing them "
                               "one by one", len(reports), type(exc).__name__, exc)
            else:
                for report in reports:
                    self._settle(report, "ok", None)
                return
        for report in reports:
            if report.settled.is_set():
                continue
            try:
                self.instance.report_runless_asset_event(report.event)
            except Exception as exc:
                self._settle(report, "error", f"{type(exc).__name__}: {exc}")
            else:
                self._settle(report, "ok", None)

    def _supervise(self) -> None:
        while True:
            with self._condition:
                while self._pending and self._pending[0].settled.is_set():
                    heapq.heappop(self._pending)
                if self._closed and not self._pending:
                    return
                wait = (self._pending[0].deadline - time.monotonic()) if self._pending else None
                if wait is None or wait > 0:
                    self._condition.wait(wait)
                    continue
                report = heapq.heappop(self._pending)
            self._settle(report, "timeout", f"no answer within {self.timeout:g} s")

    def _settle(self, report: _Report, outcome: str, detail: str | None) -> None:
        with report.lock:
            if report.settled.is_set():
                return
            report.settled.set()
        self.outcomes[outcome] += 1
        metrics.REPORTS.labels(outcome).inc()
        log = logger.info if outcome == "ok" else logger.warning
        log("operation %s: Dagster report %s%s", report.operation_id, outcome,
            f" ({detail})" if detail else "")
        if self.store is not None:
            try:
                self.store.record_report(report.operation_id, outcome, detail)
            except Exception as exc:
                logger.warning("operation %s: could not record the report outcome (%s)",
                               report.operation_id, exc)
        with self._condition:
            self._condition.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every submitted report is settled; False if ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while any(not r.settled.is_set() for r in self._pending):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._condition.wait(remaining if remaining is not None else 0.5)
        return True

    def close(self) -> None:
        """A clean shutdown: pending reports get up to their deadline, then the pool stops."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        self.wait_idle(self.timeout + 1)

    def join(self) -> None:
        """Wait for the worker threads themselves, stuck ones included (tests)."""
        for thread in self._threads:
            thread.join()


def _entry(report: _Report) -> EventLogEntry:
    """The event log entry ``report_runless_asset_event`` would write for the report, dated
    when it was submitted."""
    event = DagsterEvent(event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
                         event_specific_data=StepMaterializationData(report.event),
                         job_name=RUNLESS_JOB_NAME)
    return EventLogEntry(user_message="", level=logging.INFO, job_name=RUNLESS_JOB_NAME,
                         run_id=RUNLESS_RUN_ID,
                         error_info=None, timestamp=report.submitted_at, step_key=None,
                         dagster_event=event)


def build_reporter(settings: Settings, store: OperationStore | None,
                   instance: DagsterInstance | Callable[[], DagsterInstance] = DagsterInstance.get,
                   ) -> MaterializationReporter:
    """The reporter of the direct path, bounded by ``DAGSTER_MATERIALIZATION_TIMEOUT``: the one
    place that setting is read."""
    return MaterializationReporter(instance, store,
                                   timeout=settings.dagster_materialization_timeout)
