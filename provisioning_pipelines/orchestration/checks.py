"""Dagster as the operator's cockpit: asset checks beside the assets, their schedule, and a
sensor that records every failed provisioning run.

The checks read the rows and the files (``services/upkeep/integrity.py``) and show what disagrees as
the check's metadata, so the UI shows the health of the graph asset next to its history:

* ``graph_files_hold_their_schema``: the newest graphs' files open and hold their tables;
* ``hosts_within_capacity``: no host over capacity, and each host's slot count equal to the
  graphs on it;
* ``files_match_rows``: no graph file without a row, no row without a file.

A schedule runs them every hour (running from the start). A run-failure sensor writes each
failed provisioning run to the audit log (``run.failed``) and logs it.
"""

from __future__ import annotations

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetSelection,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    ScheduleDefinition,
    SensorDefinition,
    asset_check,
    define_asset_job,
    run_failure_sensor,
)

from provisioning_pipelines.orchestration.assets import GRAPH_ASSET
from provisioning_pipelines.orchestration.jobs import JOBS
from provisioning_pipelines.runtime.resources import DatabaseResource, GraphEngineResource
from provisioning_pipelines.services import audit
from provisioning_pipelines.services.upkeep import integrity
from provisioning_pipelines.services.upkeep.integrity import Finding

#: At most this many findings are listed in a check's metadata (the count is always exact).
SHOWN = 50


def _result(findings: list[Finding], **metadata: object) -> AssetCheckResult:
    return AssetCheckResult(
        passed=not findings, severity=AssetCheckSeverity.ERROR,
        metadata={"problems": len(findings),
                  "findings": "\n".join(str(f) for f in findings[:SHOWN]) or "none",
                  **metadata})


@asset_check(asset=GRAPH_ASSET.key, description="The newest graphs' database files open and "
             "hold every table of their stored schema.")
def graph_files_hold_their_schema(database: DatabaseResource,
                                  graph_engine: GraphEngineResource) -> AssetCheckResult:
    with database.get().session() as session:
        checked, findings = integrity.graphs_hold_their_schema(session, graph_engine.hosts())
    return _result(findings, graphs_checked=checked)


@asset_check(asset=GRAPH_ASSET.key, description="No host is over capacity, and each host's slot "
             "count equals the graphs living on it.")
def hosts_within_capacity(database: DatabaseResource) -> AssetCheckResult:
    with database.get().session() as session:
        return _result(integrity.hosts_within_capacity(session))


@asset_check(asset=GRAPH_ASSET.key, description="Every graph row has its file and every graph "
             "file has its row.")
def files_match_rows(database: DatabaseResource,
                     graph_engine: GraphEngineResource) -> AssetCheckResult:
    with database.get().session() as session:
        return _result(integrity.files_match_rows(session, graph_engine.hosts()))


CHECKS = [graph_files_hold_their_schema, hosts_within_capacity, files_match_rows]

provisioning_checks_job = define_asset_job(
    "provisioning_checks_job", selection=AssetSelection.checks(*CHECKS),
    description="Check that graph files, rows and host slots agree.")

provisioning_checks_schedule = ScheduleDefinition(
    name="provisioning_checks_schedule", job=provisioning_checks_job, cron_schedule="0 * * * *",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Runs the provisioning asset checks every hour.")


def build_run_failure_sensor() -> SensorDefinition:
    @run_failure_sensor(name="provisioning_run_failure_sensor",
                        monitored_jobs=list(JOBS.values()),
                        default_status=DefaultSensorStatus.RUNNING,
                        description="Records every failed provisioning run in the audit log.")
    def _sensor(context: RunFailureSensorContext, database: DatabaseResource) -> None:
        run = context.dagster_run
        steps = [event.step_failure_data.error.message.strip()
                 for event in context.get_step_failure_events()
                 if event.step_failure_data.error is not None]
        error = "; ".join(steps) or context.failure_event.message or "the run failed"
        subject = run.tags.get("provisioning/subscription_id") or run.tags.get(
            "provisioning/graph_id") or run.run_id
        with database.get().session() as session:
            audit.record(session, actor="dagster", action="run.failed",
                         subject_type="run", subject_id=subject[:128],
                         details={"run_id": run.run_id, "job": run.job_name,
                                  "error": error[:2000], "tags": dict(run.tags)})
        context.log.error(f"provisioning run {run.run_id} ({run.job_name}) failed: {error}")

    return _sensor
