"""Alembic environment: the URL comes from the caller (``migrate.upgrade``), else from
``DATABASE_URL``, else the embedded default in ``DATA_DIR`` (as the settings say).
"""

from __future__ import annotations

import os
from pathlib import Path

from alembic import context
from sqlalchemy import create_engine, pool

from provisioning_pipelines.storage.db import normalize_url
from provisioning_pipelines.storage.defaults import DEFAULT_DATA_DIR, embedded_database_url
from provisioning_pipelines.storage.models import Base

config = context.config
url = (config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL")
       or embedded_database_url(Path(os.environ.get("DATA_DIR") or DEFAULT_DATA_DIR)))
url = normalize_url(url)


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=Base.metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
