"""The embedded Dagster instance's storages are made by the starting process, before ``dev``'s
webserver and daemon or ``serve``'s workers open it at once (which once stamped one SQLite
database twice: "alembic_version has more than one head")."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from pathlib import Path

from provisioning_pipelines.cli.instance import MADE, make_embedded_storage
from provisioning_pipelines.settings import EMBEDDED_DAGSTER_YAML

OPEN = """
import sys
from dagster import DagsterInstance
with DagsterInstance.from_config(sys.argv[1]) as instance:
    instance.get_runs(limit=1)
    instance.all_instigator_state()
"""


def test_a_made_instance_opens_in_several_processes_at_once(tmp_path: Path) -> None:
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text(EMBEDDED_DAGSTER_YAML)

    make_embedded_storage(home)

    assert all((home / part).is_file() for part in MADE)
    openers = [subprocess.Popen([sys.executable, "-c", OPEN, str(home)],
                                stderr=subprocess.PIPE, text=True) for _ in range(4)]
    for opener in openers:
        _out, err = opener.communicate(timeout=120)
        assert opener.returncode == 0, err
    for part in MADE:
        with contextlib.closing(sqlite3.connect(home / part)) as db:
            stamps = db.execute("SELECT version_num FROM alembic_version").fetchall()
        assert len(stamps) == 1, (part, stamps)
