"""What a benchmark makes for itself on the shared servers, and removes when it ends."""

from __future__ import annotations

from types import TracebackType

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from provisioning_pipelines.storage.db import dispose_database


class ScratchDatabases:
    """PostgreSQL databases made on a server for one benchmark run, dropped at its end."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self._admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
        self._made: list[str] = []

    def create(self, name: str) -> str:
        """An empty database ``name``; returns its URL."""
        with self._admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(self.server_url).set(database=name).render_as_string(hide_password=False)
        self._made.append(url)
        return url

    def drop_all(self) -> None:
        with self._admin.connect() as connection:
            for url in self._made:
                dispose_database(url)
                name = make_url(url).database
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self._made.clear()
        self._admin.dispose()

    def __enter__(self) -> ScratchDatabases:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.drop_all()


def delete_redis_prefix(redis_url: str, prefix: str) -> None:
    """Remove every key a run wrote under its own prefix."""
    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(f"{prefix}*", count=1000):
            client.delete(key)
    finally:
        client.close()
