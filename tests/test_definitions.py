"""The code location loads, with its jobs, assets and resources."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dagster import AssetKey, Definitions

ROOT = Path(__file__).resolve().parent.parent


def load() -> Definitions:
    from provisioning_pipelines.definitions import defs

    return defs


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
    from provisioning_pipelines.jobs import JOBS

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
