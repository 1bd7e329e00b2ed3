"""A provisioning process: the flows the API processes hand over, run beside them, niced.

Run in an API process's own threads, provisioning takes the GIL from the event loop that
answers: during a burst of paid webhooks the answers waited on the flows (the answer's p99 ~30x
a refusal's, measured by ``benchmarks/bench_burst.py``). With ``PROVISIONING_PROCESSES=N``
``serve`` starts N of these; an API process then pushes each background flow onto a Redis list
(``storage/work_queue.py``) and answers, and a provisioner runs it through the same direct
executor (the same steps, claims, operation events in Redis and report to Dagster). It runs at a
lower priority (``NICENESS``), so that on a busy machine the answers get the CPU first and the
flows the rest.

What stays as it was: the claim makes each flow run once whoever runs it; the operation the
customer watches is in Redis, written from here; an item a provisioner took is on its own
``taken`` list until the flow ends, and put back when a provisioner of the same name starts
again (after a crash) or when one stops with work unfinished (its claims given back first);
the resumer of every API process still picks up a payment nobody claimed. The helper API stays
in-process for callers that want it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis

from provisioning_pipelines.direct.executor import DirectExecutor, build_executor
from provisioning_pipelines.flows import FLOWS
from provisioning_pipelines.services.provisioning import leases
from provisioning_pipelines.settings import Settings, get_settings
from provisioning_pipelines.storage.work_queue import WorkItem, WorkQueue

logger = logging.getLogger("provisioning_pipelines.provisioner")

#: How much lower a provisioner's priority is than the API's (``nice``: 0 to 19).
NICENESS = 10
_FLOWS = {flow.name: flow for flow in FLOWS}


def work_queue(settings: Settings) -> WorkQueue:
    assert settings.redis_url is not None, "provisioning processes need REDIS_URL"
    return WorkQueue(settings.redis_url, prefix=settings.redis_key_prefix)


class Provisioner:
    """Takes items while it has a free thread, runs each on the executor, until stopped."""

    def __init__(self, executor: DirectExecutor, queue: WorkQueue, name: str, *,
                 grace_seconds: float) -> None:
        self.executor = executor
        self.queue = queue
        self.name = name
        self.grace_seconds = grace_seconds
        self.stopping = threading.Event()
        self.forced = threading.Event()
        self._slots = threading.BoundedSemaphore(executor.max_concurrency)
        self._pool = ThreadPoolExecutor(executor.max_concurrency,
                                        thread_name_prefix="provisioner")
        self._running = 0
        self._idle = threading.Condition()

    def run(self) -> int:
        back = self.queue.give_back(self.name)
        if back:
            logger.info("%s: put back %d item(s) an earlier run of it had taken", self.name, back)
        while not self.stopping.is_set():
            if not self._slots.acquire(timeout=0.5):
                continue
            try:
                taken = self.queue.take(self.name)
            except redis.RedisError as exc:
                self._slots.release()
                logger.warning("%s: cannot take work (%s); trying again", self.name, exc)
                self.stopping.wait(1.0)
                continue
            if taken is None:
                self._slots.release()
                continue
            with self._idle:
                self._running += 1
            self._pool.submit(self._run_one, *taken)
        return self._stop()

    def _run_one(self, raw: str, item: WorkItem) -> None:
        try:
            flow = _FLOWS[item.flow]
            self.executor.run(flow, flow.config_cls(**item.config),
                              operation_id=item.operation_id)
        except Exception as exc:  # the operation says what failed; the log keeps it too
            logger.warning("%s: %s flow for operation %s ended: %s", self.name, item.flow,
                           item.operation_id, exc)
        finally:
            try:
                self.queue.done(self.name, raw)
            except redis.RedisError as exc:  # put back at the next start: run again, once
                logger.warning("%s: could not mark an item done (%s)", self.name, exc)
            with self._idle:
                self._running -= 1
                self._idle.notify_all()
            self._slots.release()

    def _stop(self) -> int:
        """Let running flows finish within the grace; then give their claims back and put
        their items back for another provisioner."""
        deadline = time.monotonic() + self.grace_seconds
        with self._idle:
            while self._running and not self.forced.is_set() and time.monotonic() < deadline:
                self._idle.wait(0.1)
            unfinished = self._running
        if unfinished:
            released = sum(keeper.release_all() for keeper in leases.all_keepers())
            back = self.queue.give_back(self.name)
            logger.warning("%s: stopped with %d flow(s) running; gave back %d claim(s) and "
                           "%d item(s)", self.name, unfinished, released, back)
            os._exit(0)  # the threads still in them must not hold up the exit
        self._pool.shutdown(wait=True)
        self.executor.close()
        return 0


def provisioner_main(name: str) -> None:
    """A provisioning process's entry (spawned by ``serve``, which sets up its logging)."""
    os.nice(NICENESS)
    settings = get_settings()
    provisioner = Provisioner(build_executor(settings), work_queue(settings), name,
                              grace_seconds=settings.shutdown_grace_seconds)

    def stop(sig: int, frame: Any) -> None:
        if provisioner.stopping.is_set():
            provisioner.forced.set()  # a second SIGTERM cuts the grace short
        provisioner.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logger.info("%s: provisioning the work the API hands over (nice %d)", name, NICENESS)
    raise SystemExit(provisioner.run())
