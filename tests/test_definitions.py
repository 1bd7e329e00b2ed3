"""The code location loads, with its jobs, assets and resources."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, Definitions

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


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

    from provisioning_pipelines.runtime.resources import build_resources
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


def dagster(*words: str, env: dict[str, str], cwd: Path = ROOT,
            program: str = "dagster") -> subprocess.CompletedProcess[str]:
    """Dagster's own CLI (or dg) in a session of its own, and whatever it started stopped after."""
    process = subprocess.Popen([str(BIN / program), *words], cwd=cwd, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        out, err = process.communicate(timeout=240)
    finally:
        with contextlib.suppress(ProcessLookupError):  # a code server it left to linger
            os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_dagster_validates_the_workspace(tmp_path: Path) -> None:
    # As `make validate` does: the embedded instance, not deploy/dagster.yaml.
    home = tmp_path / "data" / "dagster"
    home.mkdir(parents=True)
    env = {"PATH": str(BIN), "DATA_DIR": str(tmp_path / "data"), "HOME": str(tmp_path),
           "DAGSTER_HOME": str(home)}
    result = dagster("definitions", "validate", "-w", "workspace.yaml", env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dagsters_cli_works_in_the_repository_root_with_nothing_set(tmp_path: Path) -> None:
    env = {"PATH": str(BIN), "HOME": str(tmp_path), "DATA_DIR": str(tmp_path / "data")}
    validated = dagster("definitions", "validate", env=env)
    listed = dagster("job", "list", "-w", "workspace.yaml", env=env)

    cli = [str(BIN / "provisioning-pipelines")]
    user = json.loads(subprocess.run([*cli, "users", "create", "--email", "d@example.com",
                                      "--json"], env=env, capture_output=True, text=True,
                                     check=True).stdout)
    made = json.loads(subprocess.run([*cli, "subscriptions", "create", "--user",
                                      user["user_id"]], env=env, capture_output=True,
                                     text=True, check=True).stdout)
    subprocess.run([*cli, "subscriptions", "pay", made["subscription_id"]], env=env,
                   check=True, capture_output=True)
    config = tmp_path / "run.yaml"
    config.write_text("ops:\n  claim_subscription:\n    config:\n"
                      f"      subscription_id: {made['subscription_id']}\n")
    executed = dagster("job", "execute", "-m", "provisioning_pipelines.definitions", "-j",
                       "provision_graph_job",
                       "-c", str(config), env=env)
    shown = json.loads(subprocess.run([*cli, "subscriptions", "show", made["subscription_id"]],
                                      env=env, capture_output=True, text=True).stdout)

    for result in (validated, listed, executed):
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        assert "Traceback" not in result.stderr
    assert "provision_graph_job" in listed.stdout
    assert shown["status"] == "active" and shown["resource_id"].startswith("kg")


INSTANCE_IN_THE_ROOT = """
import json
from dagster._cli.utils import get_possibly_temporary_instance_for_cli
with get_possibly_temporary_instance_for_cli("this test") as instance:
    queue = instance.run_coordinator.get_run_queue_config()
    print(json.dumps({"root": instance.root_directory,
                      "run_storage": type(instance.run_storage).__name__,
                      "telemetry": instance.get_settings("telemetry"),
                      "tag_limits": queue.tag_concurrency_limits}))
"""


def test_dagsters_cli_in_the_root_reads_the_top_level_dagster_yaml_with_nothing_set(
        tmp_path: Path) -> None:
    # With DAGSTER_HOME unset Dagster's CLI keeps its storage in a temporary folder but reads
    # ./dagster.yaml, so that file must load with nothing set: no PostgreSQL, nothing from the
    # environment, the production run queue's limit per graph.
    env = {"PATH": str(BIN), "HOME": str(tmp_path)}
    ran = subprocess.run([sys.executable, "-c", INSTANCE_IN_THE_ROOT], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)

    assert ran.returncode == 0, ran.stderr[-3000:]
    instance = json.loads(ran.stdout.strip().splitlines()[-1])
    assert Path(instance["root"]).parent == ROOT
    assert Path(instance["root"]).name.startswith(".tmp_dagster_home_")  # in .gitignore
    assert not Path(instance["root"]).exists()  # removed on exit
    assert instance["run_storage"] == "SqliteRunStorage"
    assert instance["telemetry"] == {"enabled": False}
    assert instance["tag_limits"] == [{"key": "provisioning/graph_id", "limit": 1,
                                       "value": {"applyLimitPerUniqueValue": True}}]


def test_dg_checks_and_lists_the_code_location_in_the_repository_root(tmp_path: Path) -> None:
    env = {"PATH": str(BIN), "HOME": str(tmp_path), "DATA_DIR": str(tmp_path / "data")}
    checked = dagster("check", "defs", env=env, program="dg")
    listed = dagster("list", "defs", "--json", env=env, program="dg")

    assert checked.returncode == 0, checked.stdout + checked.stderr[-3000:]
    assert "All definitions loaded successfully" in checked.stdout
    assert listed.returncode == 0, listed.stderr[-3000:]
    found = json.loads(listed.stdout)
    assert {job["name"] for job in found["jobs"]} >= {
        "provision_graph_job", "provision_repository_job", "create_subgraph_job"}
    assert {asset["asset_key"] for asset in found["assets"]} >= {
        "provisioning/graph", "provisioning/subgraph", "provisioning/repository_access"}
