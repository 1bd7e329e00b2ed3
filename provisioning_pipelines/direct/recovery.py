"""An API process heals what crashed: it resumes lapsed work and sweeps leftovers, by itself.

The resumer asks the claim's own question every ``interval`` seconds: which paid subscriptions
may start an attempt now that nobody works on (a dead worker's lease lapsed; a payment nobody
picked up within the grace period; a backoff that ended; a queued one for which a slot is now
free)? It runs each on the direct executor,
continuing the operation the dead worker left open, without waiting behind a live holder. Every
API process does this; they race on the claim like any other trigger, so the work is done once.
Subscriptions with no attempt left are failed, as the sensors do. The sensors stay the safety
net for when no API process is up.

The sweeper removes what failures leave on disk (``services/upkeep/housekeeping.py``: temp files and
half-written copies, fork workspaces, sidecars of nothing, orphans) and finishes live graphs'
unfinished checkpoints, and removes billing event records past their retention, at start-up and
every ``sweep_interval`` seconds.

The billing courier sends the outbox (cancellations and reactivations decided here) to the
billing system every ``billing_interval`` seconds (``services/billing/outbound.py``), with direct
provisioning on or off; Dagster's billing sensor does the same, and the two race on each row's
claim.

The host prober asks every remote graph host's ``/healthz`` every ``probe_interval`` seconds
(``services/capacity/remote.py``): ``probe_misses`` unanswered in a row make it ``unhealthy``
(no new graph is placed on it), an answer makes it healthy again.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from provisioning_pipelines import metrics
from provisioning_pipelines.direct.executor import DirectExecutor
from provisioning_pipelines.flows import SUBSCRIPTION_FLOWS, SubscriptionConfig
from provisioning_pipelines.services.billing import outbound
from provisioning_pipelines.services.billing import subscriptions as billing
from provisioning_pipelines.services.capacity import remote
from provisioning_pipelines.services.provisioning import claims
from provisioning_pipelines.services.provisioning.claims import DueSubscription
from provisioning_pipelines.services.provisioning.due import due_now
from provisioning_pipelines.services.upkeep import housekeeping

logger = logging.getLogger("provisioning_pipelines.recovery")
_BATCH = 500


class Recovery:
    """The resumer and the sweeper of one API process, as asyncio tasks."""

    def __init__(self, executor: DirectExecutor, *, interval: float, grace_seconds: float,
                 sweep_interval: float, stray_age_seconds: float,
                 billing_interval: float = 0, webhook_retention_days: float = 30,
                 probe_interval: float = 0, probe_misses: int = 3,
                 host_token: str | None = None) -> None:
        self.executor = executor
        self.probe_interval = probe_interval
        self.probe_misses = probe_misses
        self.host_token = host_token
        self.billing_interval = billing_interval
        self.interval = interval
        self.grace_seconds = grace_seconds
        self.sweep_interval = sweep_interval
        self.stray_age_seconds = stray_age_seconds
        self.webhook_retention_days = webhook_retention_days
        self.resumed = 0
        self._running: set[str] = set()
        policy = executor.resources["policy"].get()
        self.lease_seconds = policy.claim_lease_seconds
        self.operation_ttl_seconds = executor.store.ttl_seconds
        self._settled_until: datetime | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def _database(self) -> Any:
        return self.executor.resources["database"].get()

    def start(self) -> None:
        if self.interval > 0:
            self._spawn(self._resume_forever())
        if self.sweep_interval > 0:
            self._spawn(self._sweep_forever())
        if self.billing_interval > 0 and self._billing_sender() is not None:
            self._spawn(self._deliver_forever())
        if self.probe_interval > 0:
            self._spawn(self._probe_forever())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _resume_forever(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.end_orphaned_operations)
                for due in await asyncio.to_thread(self.find_due):
                    if due.subscription_id not in self._running:
                        self._running.add(due.subscription_id)
                        self._spawn(self._resume(due))
            except Exception as exc:  # an outage: the next round tries again
                logger.warning("resumer: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(self.interval)

    def end_orphaned_operations(self) -> int:
        """End the operations of subscriptions settled by a worker that died before it could
        say so (active: completed with the subscription; failed: failed with its error).

        The first round looks back over the operations' lifetime, later rounds over what
        settled since the previous one; what settled within the last lease is left to the
        worker that settled it, which ends its operation within milliseconds.
        """
        now = datetime.now(UTC)
        until = now - timedelta(seconds=self.lease_seconds)
        since = self._settled_until or now - timedelta(seconds=self.operation_ttl_seconds)
        settled: list[dict[str, Any]] = []
        while since < until:  # in batches, oldest first
            with self._database.session() as session:
                batch = billing.settled_between(session, since, until, limit=_BATCH)
            settled += batch
            if len(batch) < _BATCH:
                break
            since = batch[-1]["settled_at"]
        ended = 0
        for row in settled:
            row.pop("settled_at")
            operation_id = self.executor.live_operation(row.pop("operation_id"))
            if operation_id is None:
                continue
            if row["status"] == "active":
                self.executor.store.complete(operation_id, {
                    **row, "operation_id": operation_id, "completed_by": "another worker"})
            else:
                self.executor.store.fail(operation_id, row["error"] or "provisioning failed",
                                         "provisioning_failed")
            ended += 1
            logger.warning("operation %s: ended for subscription %s, whose worker died after "
                           "settling it", operation_id, row["subscription_id"])
        self._settled_until = max(until, since)
        return ended

    def find_due(self) -> list[DueSubscription]:
        now = datetime.now(UTC)
        policy = self.executor.resources["policy"].get()
        with self._database.session() as session:
            due = due_now(session, SUBSCRIPTION_FLOWS, now=now, grace_seconds=self.grace_seconds,
                          direct_enabled=True, max_attempts=policy.max_attempts,
                          actor="resumer")
        for failed in due.failed:
            logger.warning("subscription %s: no attempts left; failed", failed)
        return due.subscriptions

    async def _resume(self, due: DueSubscription) -> None:
        try:
            flow = SUBSCRIPTION_FLOWS[due.resource_type]
            config = SubscriptionConfig(subscription_id=due.subscription_id)
            # Continue the operation the dead worker left open, so its stream ends.
            operation_id = await asyncio.to_thread(self.executor.live_operation,
                                                   due.operation_id)
            made = await self.executor.run_async(self.executor.run, flow, config,
                                                 operation_id=operation_id,
                                                 wait_for_holder=False)
            self.resumed += 1
            metrics.RESUMED.inc()
            logger.info("resumed subscription %s (operation %s)", due.subscription_id,
                        made.operation_id)
        except claims.ClaimHeld:
            pass  # someone else holds it now: theirs to finish
        except Exception as exc:
            logger.warning("resuming subscription %s failed: %s", due.subscription_id, exc)
        finally:
            self._running.discard(due.subscription_id)

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.sweep)
            except Exception as exc:
                logger.warning("housekeeping: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(self.sweep_interval)

    def sweep(self) -> housekeeping.SweepReport:
        resources = self.executor.resources
        backups = resources["backups"].get() if "backups" in resources else None
        with self._database.session() as session:
            housekeeping.remove_old_webhook_events(
                session, retention_days=self.webhook_retention_days)
            housekeeping.remove_expired_idempotency_keys(session)
        with self._database.session() as session:
            return housekeeping.sweep(
                session, resources["graph_engine"].graph_data_dir,
                min_age_seconds=self.stray_age_seconds, engine=resources["graph_engine"].get(),
                directory=resources["graph_engine"].hosts(),
                backup_dir=backups.backup_dir if backups else None)

    def _billing_sender(self) -> outbound.Sender | None:
        billing_resource = self.executor.resources.get("billing")
        return billing_resource.sender() if billing_resource is not None else None

    async def _deliver_forever(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.deliver_billing_changes)
            except Exception as exc:  # an outage of the database: the next round tries again
                logger.warning("billing outbox: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(self.billing_interval)

    def deliver_billing_changes(self) -> outbound.Delivered:
        return outbound.deliver_due(self._database, self._billing_sender())

    async def _probe_forever(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.probe_hosts)
            except Exception as exc:  # an outage of the database: the next round tries again
                logger.warning("host probes: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(self.probe_interval)

    def probe_hosts(self) -> dict[str, str]:
        """One round of probes: each remote host's health after it."""
        return remote.probe_hosts(self._database, self.host_token, misses=self.probe_misses)
