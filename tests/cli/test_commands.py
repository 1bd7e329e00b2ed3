"""The command line, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "provisioning-pipelines"), *args], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=120)


def test_users_create_prints_the_key_once_as_json(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path / "data")}
    made = cli("users", "create", "--email", "ada@example.com", "--org", "Analytical",
               "--json", env=env)
    assert made.returncode == 0, made.stderr
    answer = json.loads(made.stdout)
    assert set(answer) == {"user_id", "org_id", "api_key"}
    assert answer["api_key"].startswith("ppk_")

    again = cli("users", "create", "--email", "ada@example.com", env=env)
    assert again.returncode == 2
    assert again.stderr.strip() == "error: email: a user with 'ada@example.com' exists already"
    assert "Traceback" not in again.stderr


def test_invalid_setting_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    bad = cli("db", "upgrade", env={"DATA_DIR": str(tmp_path),
                                    "DAGSTER_MATERIALIZATION_TIMEOUT": "soon"})
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: invalid settings: DAGSTER_MATERIALIZATION_TIMEOUT")
    assert len(bad.stderr.strip().splitlines()) == 1
