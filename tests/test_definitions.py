"""The code location loads, with its jobs, assets and resources."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, Definitions

ROOT = Path(__file__).resolve().parent.parent


def load() -> Definitions:
    from provisioning_pipelines.definitions import defs

    return defs()


def test_importing_the_code_location_reads_no_setting_and_makes_no_folder(tmp_path: Path) -> None:
    # A setting that would stop start-up proves the settings are not read at import.
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path),
           "DATA_DIR": str(tmp_path / "data"), "PROVISIONING_MAX_ATTEMPTS": "not a number"}
    script = ("import provisioning_pipelines.definitions as d; "
              "print(type(d.defs).__name__)")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "LazyDefinitions"
    assert not (tmp_path / "data").exists()


def test_urls_from_the_environment_reach_dagster_as_env_vars(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from dagster import EnvVar

    from provisioning_pipelines.orchestration.resources import build_resources
    from provisioning_pipelines.settings import load_settings

    url = f"sqlite:///{tmp_path / 'app.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    settings = load_settings()
    in_dagster = build_resources(settings, env_vars=True)
    assert isinstance(in_dagster["database"].url, EnvVar)
    assert in_dagster["database"].url.env_var_name == "DATABASE_URL"
    assert build_resources(settings)["database"].url == url  # the direct path: the value


def test_definitions_hold_the_three_jobs_and_assets() -> None:
    defs = load()
    repository = defs.get_repository_def()
    assert {job.name for job in repository.get_all_jobs()} >= {
        "provision_graph_job", "provision_repository_job", "create_subgraph_job"}
    keys = set(repository.asset_graph.get_all_asset_keys())
    assert keys >= {AssetKey(["provisioning", "graph"]), AssetKey(["provisioning", "subgraph"]),
                    AssetKey(["provisioning", "repository_access"])}


def test_jobs_follow_the_flows_step_for_step() -> None:
    from provisioning_pipelines.flows import FLOWS
    from provisioning_pipelines.orchestration.jobs import JOBS

    for flow in FLOWS:
        job = JOBS[flow.name]
        assert [node.name for node in job.graph.nodes_in_topological_order] == [
            step.name for step in flow.steps]


def test_dagster_validates_the_workspace(tmp_path: Path) -> None:
    # As `make validate` does: the embedded instance, not the production dagster.yaml at the top.
    home = tmp_path / "data" / "dagster"
    home.mkdir(parents=True)
    env = {"PATH": str(Path(sys.executable).parent), "DATA_DIR": str(tmp_path / "data"),
           "HOME": str(tmp_path), "DAGSTER_HOME": str(home)}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate",
         "-w", "workspace.yaml"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
