"""The embedded Dagster instance's SQLite storage, made once before processes share it.

Dagster makes each SQLite storage (runs, schedules, event index) the first time a process opens
the instance, and stamps it with its Alembic revision. Two processes doing it at the same moment
(``dev``'s webserver and daemon, ``serve --workers N``'s workers) stamped one database twice,
after which every open of it fails ("alembic_version has more than one head"). So the starting
process makes them first, alone; later starts find them and skip this (and Dagster's import).
"""

from __future__ import annotations

from pathlib import Path

#: What a made embedded instance holds (Dagster's own layout under DAGSTER_HOME).
MADE = (Path("history") / "runs.db", Path("history") / "runs" / "index.db",
        Path("schedules") / "schedules.db")


def make_embedded_storage(home: Path) -> None:
    """Open the instance at ``home`` once, so that its storages exist before anyone shares it."""
    if all((home / part).exists() for part in MADE):
        return
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs(limit=1)
        instance.all_instigator_state()
