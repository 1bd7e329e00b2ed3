"""A database that was never migrated, or is behind the newest revision: a command that uses it,
and ``serve``, stops with one line naming the problem and the command that fixes it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.cli.test_commands import cli
from tests.conftest import Unmigrated, free_port
from tests.serving import CLI, server_env


def refusal(database: Unmigrated) -> str:
    return (f"error: database not migrated: at revision {database.at}, needs {database.needs}; "
            "run `provisioning-pipelines db upgrade`")


def test_a_command_on_an_unmigrated_database_is_one_line_naming_the_fix(
    unmigrated: Unmigrated, tmp_path: Path,
) -> None:
    env = {"DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": unmigrated.url}

    listed = cli("subscriptions", "list", env=env)
    made = cli("users", "create", "--email", "ada@example.com", env=env)

    assert (listed.returncode, listed.stderr) == (2, refusal(unmigrated) + "\n")
    assert (made.returncode, made.stderr) == (2, refusal(unmigrated) + "\n")
    upgraded = cli("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert cli("subscriptions", "list", env=env).returncode == 0


def test_serve_refuses_to_start_on_an_unmigrated_database(
    unmigrated: Unmigrated, tmp_path: Path,
) -> None:
    started = subprocess.run([CLI, "serve", "--port", str(free_port())],
                             env=server_env(tmp_path, DATABASE_URL=unmigrated.url),
                             capture_output=True, text=True, timeout=120)
    assert started.returncode == 2
    assert started.stderr == refusal(unmigrated) + "\n"
