"""Dagster resources at every boundary: database, graph engine, operation events, progress, policy.

A resource is configuration; the heavy object behind it (an engine and its pool, a Redis pool, a
template cache) is made once per process and shared, because the direct executor runs thousands
of provisionings in one process and a Dagster run should not pay for a new pool per op. Tests swap
a resource; nothing patches a module.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource
from pydantic import Field

from provisioning_pipelines.flows.steps import Policy
from provisioning_pipelines.settings import Settings
from provisioning_pipelines.storage.db import Database, get_database
from provisioning_pipelines.storage.events import (
    OperationStore,
    build_operation_store,
    new_operation_id,
)
from provisioning_pipelines.storage.ladybug import LadybugEngine
from provisioning_pipelines.storage.migrate import upgrade_once

OPERATION_TAG = "provisioning/operation_id"
logger = logging.getLogger("provisioning_pipelines")


class DatabaseResource(ConfigurableResource):
    """The application's SQL database (SQLite embedded, PostgreSQL in production)."""

    url: str = Field(description="SQLAlchemy URL, e.g. postgresql+psycopg2://… or sqlite:///…")
    auto_migrate: bool = Field(default=False, description="Upgrade the schema on first use.")

    def get(self) -> Database:
        if self.auto_migrate:
            upgrade_once(self.url)
        return get_database(self.url)


class GraphEngineResource(ConfigurableResource):
    """LadybugDB files under a data folder."""

    data_dir: str = Field(description="Folder under which each host keeps its graph files.")
    buffer_pool_mb: int = Field(default=16, description="Buffer pool per open database.")
    use_templates: bool = Field(default=True, description="Copy verified schema templates.")

    def get(self) -> LadybugEngine:
        return _engine(self.data_dir, self.buffer_pool_mb, self.use_templates)

    @property
    def graph_data_dir(self) -> Path:
        return Path(self.data_dir)


@lru_cache(maxsize=8)
def _engine(data_dir: str, buffer_pool_mb: int, use_templates: bool) -> LadybugEngine:
    return LadybugEngine(buffer_pool_bytes=buffer_pool_mb * 1024 * 1024,
                         template_dir=Path(data_dir) / ".templates",
                         use_templates=use_templates)


class OperationEventsResource(ConfigurableResource):
    """Operation status records and event streams: Redis when a URL is set, else in memory."""

    redis_url: str | None = Field(default=None, description="redis://…; none = in-memory.")
    key_prefix: str = Field(default="pp:", description="Prefix of every Redis key.")
    ttl_seconds: int = Field(default=86400, description="How long an operation is kept.")

    def get(self) -> OperationStore:
        return _store(self.redis_url, self.key_prefix, self.ttl_seconds)


@lru_cache(maxsize=8)
def _store(redis_url: str | None, key_prefix: str, ttl_seconds: int) -> OperationStore:
    return build_operation_store(redis_url, prefix=key_prefix, ttl_seconds=ttl_seconds)


#: An operation's owner, or how to find it: looked up only when the operation must be created
#: (the webhook and the API open operations with their owner first, so the direct path skips it).
Owner = str | None | Callable[[], str | None]


class SafeEvents:
    """The operation store as provisioning uses it: a store that fails never fails the work.

    The first failure per operation is logged; every failure is counted (``failures``).
    """

    def __init__(self, store: OperationStore) -> None:
        self.store = store
        self.failures = 0
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def open(self, kind: str, user_id: Owner, operation_id: str | None) -> str:
        """Create the operation (pending) unless it exists; returns its id either way."""
        if operation_id is not None and self.call(operation_id, "get") is not None:
            return operation_id
        operation_id = operation_id or new_operation_id()
        owner = user_id() if callable(user_id) else user_id
        try:
            self.store.create(kind, user_id=owner, operation_id=operation_id)
        except Exception as exc:
            self._failed(operation_id, exc)
        return operation_id

    def call(self, operation_id: str, method: str, *args: Any) -> Any:
        try:
            return getattr(self.store, method)(operation_id, *args)
        except Exception as exc:
            self._failed(operation_id, exc)
            return None

    def _failed(self, operation_id: str, exc: Exception) -> None:
        with self._lock:
            self.failures += 1
            first = operation_id not in self._warned
            self._warned.add(operation_id)
        if first:
            logger.warning("operation %s: event store unavailable (%s: %s); provisioning "
                           "continues without events", operation_id, type(exc).__name__, exc)


class ProgressReporter:
    """``progress(message, percent)`` for step code: always to the log, and appended to the
    operation's events, synchronously and in order, when there is an operation."""

    def __init__(self, log: Any, events: SafeEvents | None, operation_id: str | None) -> None:
        self.log = log
        self.events = events
        self.operation_id = operation_id

    def __call__(self, message: str, percent: int | None = None) -> None:
        self.log.info(f"[{percent if percent is not None else '-'}%] {message}")
        if self.events is not None and self.operation_id is not None:
            self.events.call(self.operation_id, "progress", message, percent)


class ProgressResource(ConfigurableResource):
    """Where step progress goes: the log, and the operation's events when there is one."""

    events: OperationEventsResource

    def reporter(self, log: Any, operation_id: str | None,
                 events: SafeEvents | None = None) -> ProgressReporter:
        if operation_id is None:
            return ProgressReporter(log, None, None)
        return ProgressReporter(log, events or SafeEvents(self.events.get()), operation_id)


class PolicyResource(ConfigurableResource):
    """Attempts, claim lease and backoff for subscriptions."""

    max_attempts: int = Field(default=3, description="Attempts before a subscription fails.")
    claim_lease_seconds: float = Field(default=120.0, description="How long a claim lasts.")
    retry_backoff_seconds: float = Field(default=30.0, description="Base of the backoff.")

    def get(self) -> Policy:
        return Policy(self.max_attempts, self.claim_lease_seconds, self.retry_backoff_seconds)


def build_resources(settings: Settings) -> dict[str, ConfigurableResource]:
    """The resources every entry point uses, from the settings."""
    events = OperationEventsResource(redis_url=settings.redis_url,
                                     key_prefix=settings.redis_key_prefix,
                                     ttl_seconds=settings.operation_ttl_seconds)
    return {
        "database": DatabaseResource(url=settings.resolved_database_url,
                                     auto_migrate=settings.database_url is None),
        "graph_engine": GraphEngineResource(data_dir=str(settings.resolved_graph_data_dir),
                                            buffer_pool_mb=settings.ladybug_buffer_pool_mb,
                                            use_templates=settings.graph_templates_enabled),
        "operation_events": events,
        "progress": ProgressResource(events=events),
        "policy": PolicyResource(max_attempts=settings.max_attempts,
                                 claim_lease_seconds=settings.claim_lease_seconds,
                                 retry_backoff_seconds=settings.retry_backoff_seconds),
    }
