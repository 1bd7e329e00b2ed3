"""The daily backups, on Dagster's clock.

Every live graph is backed up once a day: one run per graph per day, keyed by the backup's own id
(``bk_daily_<graph>_<YYYYMMDD>``), so a retried tick makes no second backup; each is kept for
the tier's retention.
"""

from __future__ import annotations

from datetime import UTC, datetime

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from provisioning_pipelines.flows import BACKUP_FLOW, BackupConfig
from provisioning_pipelines.orchestration.jobs import JOBS
from provisioning_pipelines.runtime.resources import DatabaseResource
from provisioning_pipelines.services.graphs import backups, lifecycle

#: When the daily backups run (UTC).
DAILY_BACKUP_CRON = "0 2 * * *"


@schedule(
    name="daily_graph_backups",
    cron_schedule=DAILY_BACKUP_CRON,
    execution_timezone="UTC",
    job=JOBS[BACKUP_FLOW.name],
    default_status=DefaultScheduleStatus.RUNNING,
    description="Backs up every live graph once a day, kept for its tier's retention.",
)
def daily_graph_backups(context: ScheduleEvaluationContext,
                        database: DatabaseResource) -> list[RunRequest] | SkipReason:
    day = context.scheduled_execution_time or datetime.now(UTC)
    with database.get().session() as session:
        graph_ids = lifecycle.live_graphs(session)
    if not graph_ids:
        return SkipReason("no live graph to back up")
    requests = []
    for graph_id in graph_ids:
        backup_id = backups.backup_id_for("daily", graph_id, day=day)
        config = BackupConfig(graph_id=graph_id, kind="daily", backup_id=backup_id,
                              actor="schedule")
        requests.append(RunRequest(run_key=backup_id, run_config=BACKUP_FLOW.run_config(config),
                                   tags=BACKUP_FLOW.run_tags(config)))
    return requests


SCHEDULES: list[ScheduleDefinition] = [daily_graph_backups]
