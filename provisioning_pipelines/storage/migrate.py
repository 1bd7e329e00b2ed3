"""Upgrade a database to the newest schema with Alembic, from code (the CLI and tests use it)."""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from provisioning_pipelines.storage.db import normalize_url

MIGRATIONS = Path(__file__).parent / "migrations"


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
_lock = threading.Lock()


def upgrade_once(url: str) -> None:
    """Upgrade a database the first time this process uses it (the embedded default)."""
    key = normalize_url(url)
    with _lock:
        if key not in _upgraded:
            upgrade(key)
            _upgraded.add(key)
