"""Upgrade a database to the newest schema with Alembic, from code (the CLI and tests use it),
and tell whether a database is at that schema.

A database that was never migrated, or is behind the newest revision, fails every statement
that touches what is missing; ``schema_problem`` says so in one line, with the command that
fixes it, before anything runs against it. It reads one row (``alembic_version``), so it is
checked where it is cheap to: when a command or ``serve`` starts, and on ``/healthz``.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from provisioning_pipelines.errors import DatabaseNotMigrated
from provisioning_pipelines.storage.db import Database, get_database, normalize_url

MIGRATIONS = Path(__file__).parent / "migrations"
#: The command that brings a database to the newest revision.
UPGRADE_COMMAND = "provisioning-pipelines db upgrade"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), revision)


_upgraded: set[str] = set()
#: Databases found (or made) current by this process.
_current: set[str] = set()
_lock = threading.Lock()


def upgrade_once(url: str) -> None:
    """Upgrade a database the first time this process uses it (the embedded default)."""
    key = normalize_url(url)
    with _lock:
        if key not in _upgraded:
            upgrade(key)
            _upgraded.add(key)
            _current.add(key)


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory(str(MIGRATIONS))


def head_revisions() -> tuple[str, ...]:
    """The newest revision(s) this code's migrations know."""
    return tuple(_scripts().get_heads())


def previous_revision(revision: str) -> str:
    """The revision ``revision`` is migrated from (tests migrate to it: a database behind)."""
    down = _scripts().get_revision(revision).down_revision
    if not isinstance(down, str):
        raise ValueError(f"revision {revision} has no single revision before it")
    return down


def current_revisions(database: Database) -> tuple[str, ...]:
    """The revision(s) the database is at; empty for one never migrated."""
    with database.engine.connect() as connection:
        return tuple(MigrationContext.configure(connection).get_current_heads())


def schema_problem(database: Database) -> str | None:
    """None when the database is at the newest revision; else one line naming what is wrong
    and what fixes it (no URL: it may be shown on ``/healthz``)."""
    heads, current = head_revisions(), current_revisions(database)
    if set(current) == set(heads):
        return None
    known = {script.revision for script in _scripts().walk_revisions()}
    unknown = [revision for revision in current if revision not in known]
    if unknown:
        return (f"database at revision {', '.join(unknown)}, which this version does not know "
                f"(newest here: {', '.join(heads)}); it was migrated by a newer version: run "
                "that one")
    return (f"database not migrated: at revision {', '.join(current) or 'none'}, needs "
            f"{', '.join(heads)}; run `{UPGRADE_COMMAND}`")


def require_current(url: str) -> None:
    """Raise ``DatabaseNotMigrated`` unless the database is at the newest revision; checked
    once per process and URL (a command's or a server's start)."""
    key = normalize_url(url)
    if key in _current:
        return
    problem = schema_problem(get_database(key))
    if problem is not None:
        raise DatabaseNotMigrated(problem, field="DATABASE_URL")
    _current.add(key)
