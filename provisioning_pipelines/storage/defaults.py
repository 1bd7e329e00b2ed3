"""Where the embedded default keeps its data, for the settings and for Alembic alike.

Alembic's environment runs below the settings (it is storage), so the one rule it shares with
them lives here: with no ``DATABASE_URL``, the database is SQLite in ``DATA_DIR``.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_DATA_DIR = Path(".data")


def embedded_database_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'provisioning.db').resolve()}"
