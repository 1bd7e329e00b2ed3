"""The resources every entry point builds from the settings, and the step context from them."""

from __future__ import annotations

import logging
from pathlib import Path

from provisioning_pipelines.direct.executor import build_executor
from provisioning_pipelines.runtime.resources import build_resources, step_context
from provisioning_pipelines.settings import load_settings


def test_the_reporters_timeout_is_dagster_materialization_timeout(tmp_path: Path) -> None:
    settings = load_settings(DATA_DIR=str(tmp_path), DAGSTER_MATERIALIZATION_TIMEOUT="2.5")
    executor = build_executor(settings)
    try:
        assert executor.reporter is not None
        assert executor.reporter.timeout == 2.5
    finally:
        executor.close()

    assert "dagster_reporter" not in build_resources(settings)  # no resource no op uses


def test_both_paths_build_the_same_context_from_the_settings(tmp_path: Path) -> None:
    settings = load_settings(DATA_DIR=str(tmp_path), PROVISIONING_MAX_ATTEMPTS="5",
                             PROVISIONING_CLAIM_LEASE_SECONDS="60",
                             PROVISIONING_RETRY_BACKOFF_SECONDS="7",
                             GRAPH_DATA_DIR=str(tmp_path / "graphs"))
    resources = build_resources(settings)
    log = logging.getLogger("tests")

    direct = step_context(resources, method="direct", log=log, operation_id=None)
    dagster = step_context(resources, method="dagster", log=log, operation_id=None)

    for ctx in (direct, dagster):
        assert (ctx.policy.max_attempts, ctx.policy.claim_lease_seconds,
                ctx.policy.retry_backoff_seconds) == (5, 60, 7)
        assert ctx.graph_data_dir == (tmp_path / "graphs").resolve()
    assert direct.database is dagster.database and direct.hosts is dagster.hosts
    assert (direct.method, dagster.method) == ("direct", "dagster")
