"""The rest of a resource's life, on Dagster's clock: the reaper sensor.

The reaper (``lifecycle_reaper_sensor``) is the safety net under every lifecycle change that a
webhook or a user starts directly. Each tick it

* launches a suspension for a subscription that billing ended (now, or at its period's end)
  while its resource is still live, and a reactivation for an active one whose graph is
  suspended (``lifecycle.out_of_step``), and a suspension for a graph no subscription pays
  for (made by an earlier version's restores);
* launches the deletion of each suspended graph past its grace, and of each deletion that began
  and did not finish (a teardown killed half-way is run again, and finishes), and each move
  whose worker died before it switched the graph's host (run again, it continues);
* finishes (or undoes) a restore whose worker died, removes what an earlier version's restore
  left, and backups past retention;
* logs an alert for each paid customer still without a resource after
  ``UNPROVISIONED_ALERT_MINUTES``, written once to the audit log.

(Subscriptions stuck ``provisioning`` past their attempts are failed by the provisioning
sensors, which own them.) Runs are keyed by the resource and a ten-minute window: a tick does not
launch the same change twice, and a run that failed is launched again in the next window. Every
flow is idempotent, so a run that finds the change made already says so and changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from provisioning_pipelines.errors import ServiceUnavailable
from provisioning_pipelines.flows import (
    DELETION_FLOW,
    MOVE_FLOW,
    REACTIVATION_FLOW,
    SUSPENSION_FLOW,
    DeletionConfig,
    Flow,
    LifecycleConfig,
    MoveConfig,
    follow_up,
)
from provisioning_pipelines.orchestration.jobs import JOBS
from provisioning_pipelines.runtime.resources import DatabaseResource, GraphEngineResource
from provisioning_pipelines.services import audit
from provisioning_pipelines.services.billing import subscriptions as billing
from provisioning_pipelines.services.catalog import TIERS
from provisioning_pipelines.services.graphs import backups, lifecycle, restores
from provisioning_pipelines.services.graphs import records as graphs
from provisioning_pipelines.services.upkeep import moves

#: A change is launched at most once per window; one that failed is launched again in the next.
WINDOW_SECONDS = 600


def _request(flow: Flow, config: object, key: str, now: datetime) -> RunRequest:
    window = int(now.timestamp() // WINDOW_SECONDS)
    return RunRequest(run_key=f"{flow.name}:{key}:{window}", job_name=JOBS[flow.name].name,
                      run_config=flow.run_config(config), tags=flow.run_tags(config))


def lifecycle_requests(database: DatabaseResource, now: datetime) -> list[RunRequest]:
    """The suspensions, reactivations and deletions that are due."""
    with database.get().session() as session:
        changes = lifecycle.out_of_step(session, now=now)
        unpaid = lifecycle.unpaid_graphs(session)
        deletions = lifecycle.due_deletions(session, now=now)
        stalled_moves = moves.interrupted(session, now=now)
    requests = []
    for change in changes:
        ending = change["action"] == "suspend"
        then = follow_up("canceled" if ending else "reactivated", change["subscription_id"],
                         actor="reaper", reason="billing ended the subscription" if ending
                         else "billing resumed it")
        requests.append(_request(then.flow, then.config, change["subscription_id"], now))
    for graph_id in unpaid:
        suspension = LifecycleConfig(graph_id=graph_id, actor="reaper",
                                     reason="paid for by no subscription")
        requests.append(_request(SUSPENSION_FLOW, suspension, graph_id, now))
    for graph_id in deletions:
        config = DeletionConfig(graph_id=graph_id, actor="reaper",
                                reason="the grace after cancellation is over")
        requests.append(_request(DELETION_FLOW, config, graph_id, now))
    for graph_id, to_host_id in stalled_moves:
        requests.append(_request(MOVE_FLOW, MoveConfig(graph_id=graph_id, to_host_id=to_host_id),
                                 graph_id, now))
    return requests


def reap(context: SensorEvaluationContext, database: DatabaseResource,
         graph_engine: GraphEngineResource, now: datetime, alert_minutes: float) -> list[str]:
    """Remove dead restores and expired backups; alert on paid customers without a resource.
    Returns what was done, one line each."""
    done = []
    with database.get().session() as session:
        backup_dir = Path(graph_engine.backup_dir or graph_engine.data_dir)
        done.extend(restores.finish_interrupted_restores(session, graph_engine.hosts(),
                                                        backup_dir, now=now))
        for graph_id in restores.stale_restores(session, now=now):
            graphs.discard_graph(session, graph_engine.hosts(), graph_id)
            done.append(f"removed the unfinished restore {graph_id}")
        for backup in backups.expired(session, now=now):
            try:
                backups.prune(session, graph_engine.hosts(), backup, backup_dir)
            except ServiceUnavailable as exc:  # kept, and pruned on a later round
                done.append(f"could not prune backup {backup.id}: {exc.message}")
                continue
            done.append(f"pruned backup {backup.id} (expired {backup.expires_at:%Y-%m-%d})")
        done.extend(backups.sweep_store(graph_engine.hosts().store, now=now))
        for age in backups.backup_ages(session, now=now):
            if age.stale:
                shown = ("has no backup" if age.age_seconds is None else
                         f"'s newest backup is {age.age_seconds / 3600:.1f} h old")
                context.log.error(
                    f"ALERT: graph {age.graph_id} ({age.tier}, on host {age.host_id}) {shown}; "
                    f"its tier allows {TIERS[age.tier].backup_max_age_hours:g} h")
        waiting = billing.unprovisioned(
            session, paid_before=now - timedelta(minutes=alert_minutes))
        for subscription in waiting:
            context.log.error(
                f"ALERT: subscription {subscription.id} ({subscription.resource_type}, user "
                f"{subscription.user_id}) was paid at {subscription.paid_at:%Y-%m-%d %H:%M} UTC "
                f"and has no resource ({subscription.status}: "
                f"{subscription.last_error or 'no error recorded'})")
            audit.record_once(session, actor="reaper", action="alert.paid_without_resource",
                              subject_type="subscription", subject_id=subscription.id,
                              details={"status": subscription.status,
                                       "last_error": subscription.last_error})
    return done


def lifecycle_reaper_sensor(*, interval_seconds: int, alert_minutes: float) -> SensorDefinition:
    @sensor(
        name="lifecycle_reaper_sensor",
        jobs=[JOBS[flow.name] for flow in (SUSPENSION_FLOW, REACTIVATION_FLOW, DELETION_FLOW)],
        minimum_interval_seconds=interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description="Suspends what billing ended, reactivates what it resumed, deletes graphs "
        "past their grace (and finishes interrupted deletions), removes dead restores and "
        "expired backups, and alerts on paid customers without a resource.",
    )
    def _sensor(context: SensorEvaluationContext, database: DatabaseResource,
                graph_engine: GraphEngineResource) -> SensorResult:
        now = datetime.now(UTC)
        requests = lifecycle_requests(database, now)
        for line in reap(context, database, graph_engine, now, alert_minutes):
            context.log.info(line)
        if not requests:
            return SensorResult(skip_reason=SkipReason("no lifecycle change is due"))
        return SensorResult(run_requests=requests)

    return _sensor
