"""Dagster resources at every boundary: database, graph engine, operation events, progress,
policy, backups and the billing system.

A resource is configuration; the heavy object behind it (an engine and its pool, a Redis pool, a
template cache) is made once per process and shared, because the direct executor runs thousands
of provisionings in one process and a Dagster run should not pay for a new pool per op. Both
paths build their ``StepContext`` from these resources with ``step_context``. Tests swap a
resource; nothing patches a module.

Values come from ``settings.py`` (the one home of every default). In the code location a URL
that came from the environment is passed as an ``EnvVar``, resolved when a run starts, so the
Dagster UI shows the variable's name rather than a password.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from provisioning_pipelines.flows import Policy, StepContext
from provisioning_pipelines.runtime.progress import ProgressReporter, SafeEvents
from provisioning_pipelines.services.billing.outbound import StripeSender
from provisioning_pipelines.services.graphs.backups import BackupPolicy
from provisioning_pipelines.settings import Settings
from provisioning_pipelines.storage.backup_store import BackupStore, build_backup_store
from provisioning_pipelines.storage.db import Database, get_database
from provisioning_pipelines.storage.events import OperationStore, build_operation_store
from provisioning_pipelines.storage.hosts.directory import HostDirectory
from provisioning_pipelines.storage.ladybug import LadybugEngine, MiB
from provisioning_pipelines.storage.migrate import upgrade_once


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
    buffer_pool_mb: int = Field(description="Buffer pool per open database, for schema work.")
    use_templates: bool = Field(description="Make graphs by copying verified schema templates.")
    local_host_capacity: int | None = Field(
        default=None, description="Slots of each tier's local host when it is registered "
        "(none: the tier's own figure).")
    local_hosts: bool = Field(default=True, description="Register in-process local hosts "
                              "per tier (false: only hosts added with `hosts add`).")
    host_token: str | None = Field(default=None, description="Bearer token of the graph "
                                   "host servers (GRAPH_HOST_TOKEN).")
    backup_dir: str | None = Field(default=None, description="Where local hosts keep backups.")
    backup_store_url: str | None = Field(default=None, description="s3://BUCKET/PREFIX where "
                                         "local hosts keep backups (none: backup_dir).")
    backup_store_endpoint_url: str | None = Field(default=None, description="The S3 server, "
                                                  "when it is not AWS.")
    backup_store_storage_class: str | None = Field(default=None, description="S3 storage "
                                                   "class of backup objects.")
    host_timeout: float = Field(default=10.0, description="Seconds a graph host server may "
                                "take to answer one call (GRAPH_HOST_TIMEOUT_SECONDS).")
    host_work_timeout: float = Field(default=900.0, description="Seconds it may take for work "
                                     "that grows with the graph: a fork, a backup, a restore "
                                     "(GRAPH_HOST_WORK_TIMEOUT_SECONDS).")

    def get(self) -> LadybugEngine:
        return _engine(self.data_dir, self.buffer_pool_mb, self.use_templates)

    def hosts(self) -> HostDirectory:
        """The graph hosts: local ones over this resource's engine, servers over HTTP."""
        store = backup_store(self.backup_store_url, self.backup_dir,
                             self.backup_store_endpoint_url, self.backup_store_storage_class)
        return _directory(self.get(), self.host_token, self.backup_dir, self.host_timeout,
                          self.host_work_timeout, store)

    @property
    def graph_data_dir(self) -> Path:
        return Path(self.data_dir)


@lru_cache(maxsize=8)
def _engine(data_dir: str, buffer_pool_mb: int, use_templates: bool) -> LadybugEngine:
    return LadybugEngine(buffer_pool_bytes=buffer_pool_mb * MiB,
                         template_dir=Path(data_dir) / ".templates",
                         use_templates=use_templates)


@lru_cache(maxsize=8)
def _directory(engine: LadybugEngine, token: str | None, backup_dir: str | None,
               timeout: float, work_timeout: float, store: BackupStore | None) -> HostDirectory:
    return HostDirectory(engine, token=token, backup_dir=Path(backup_dir) if backup_dir else None,
                         timeout=timeout, work_timeout=work_timeout, store=store)


@lru_cache(maxsize=8)
def backup_store(url: str | None, backup_dir: str | None, endpoint_url: str | None,
                 storage_class: str | None) -> BackupStore | None:
    """One store per configuration in a process (its client's connections are reused)."""
    if not url and not backup_dir:
        return None
    return build_backup_store(url, Path(backup_dir or "."), endpoint_url=endpoint_url,
                              storage_class=storage_class)


class OperationEventsResource(ConfigurableResource):
    """Operation status records and event streams: Redis when a URL is set, else in memory."""

    redis_url: str | None = Field(description="redis://…; none = in-memory.")
    key_prefix: str = Field(description="Prefix of every Redis key.")
    ttl_seconds: int = Field(description="How long an operation is kept.")

    def get(self) -> OperationStore:
        return _store(self.redis_url, self.key_prefix, self.ttl_seconds)


@lru_cache(maxsize=8)
def _store(redis_url: str | None, key_prefix: str, ttl_seconds: int) -> OperationStore:
    return build_operation_store(redis_url, prefix=key_prefix, ttl_seconds=ttl_seconds)


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

    max_attempts: int = Field(description="Attempts before a subscription fails.")
    claim_lease_seconds: float = Field(description="How long one attempt's claim lasts.")
    retry_backoff_seconds: float = Field(
        description="Base of the backoff: attempt n+1 waits this * 2**(n-1) seconds.")
    deletion_grace_days: float = Field(
        description="Days a suspended graph is kept before it is deleted.")

    def get(self) -> Policy:
        return Policy(self.max_attempts, self.claim_lease_seconds, self.retry_backoff_seconds,
                      self.deletion_grace_days * 86400)


class BackupsResource(ConfigurableResource):
    """Where graph backups go, and how long the backup taken before a deletion is kept."""

    backup_dir: str = Field(description="Folder of backups (one folder per graph).")
    final_retention_days: int = Field(description="Days the final backup is kept.")
    store_url: str | None = Field(default=None, description="s3://BUCKET/PREFIX (none: the "
                                  "folder).")
    store_endpoint_url: str | None = Field(default=None, description="The S3 server, when it "
                                           "is not AWS.")
    store_storage_class: str | None = Field(default=None, description="S3 storage class.")

    def get(self) -> BackupPolicy:
        store = backup_store(self.store_url, self.backup_dir, self.store_endpoint_url,
                             self.store_storage_class)
        assert store is not None
        return BackupPolicy(Path(self.backup_dir), self.final_retention_days, store)


class BillingResource(ConfigurableResource):
    """The billing system (Stripe) that cancellations and reactivations decided here are sent
    to; without an API key nothing is sent and the outbox keeps them."""

    api_key: str | None = Field(default=None, description="Stripe secret key; none = off.")
    api_base: str = Field(default="https://api.stripe.com", description="Stripe's API URL.")

    def sender(self) -> StripeSender | None:
        return _sender(self.api_key, self.api_base) if self.api_key else None


@lru_cache(maxsize=8)
def _sender(api_key: str, api_base: str) -> StripeSender:
    return StripeSender(api_key, api_base)


def build_resources(settings: Settings, *, env_vars: bool = False
                    ) -> dict[str, ConfigurableResource]:
    """The resources every entry point uses, from the settings.

    With ``env_vars`` (the code location), a URL read from the environment is passed as an
    ``EnvVar`` so that Dagster resolves it at launch and never displays it.
    """

    def from_env(name: str, value: str) -> str:
        return EnvVar(name) if env_vars and os.environ.get(name) == value else value

    redis_url = settings.redis_url and from_env("REDIS_URL", settings.redis_url)
    store = {"backup_store_url": settings.backup_store_url,
             "backup_store_endpoint_url": settings.backup_store_endpoint_url,
             "backup_store_storage_class": settings.backup_store_storage_class}
    events = OperationEventsResource(redis_url=redis_url, key_prefix=settings.redis_key_prefix,
                                     ttl_seconds=settings.operation_ttl_seconds)
    return {
        "database": DatabaseResource(url=from_env("DATABASE_URL", settings.resolved_database_url),
                                     auto_migrate=settings.database_url is None),
        "graph_engine": GraphEngineResource(data_dir=str(settings.resolved_graph_data_dir),
                                            buffer_pool_mb=settings.ladybug_buffer_pool_mb,
                                            use_templates=settings.graph_templates_enabled,
                                            local_host_capacity=settings.local_host_capacity,
                                            local_hosts=settings.local_graph_hosts,
                                            host_token=settings.graph_host_token and from_env(
                                                "GRAPH_HOST_TOKEN", settings.graph_host_token),
                                            backup_dir=str(settings.resolved_backup_dir),
                                            host_timeout=settings.graph_host_timeout_seconds,
                                            host_work_timeout=(
                                                settings.graph_host_work_timeout_seconds),
                                            **store),
        "operation_events": events,
        "progress": ProgressResource(events=events),
        "policy": PolicyResource(max_attempts=settings.max_attempts,
                                 claim_lease_seconds=settings.claim_lease_seconds,
                                 retry_backoff_seconds=settings.retry_backoff_seconds,
                                 deletion_grace_days=settings.deletion_grace_days),
        "backups": BackupsResource(backup_dir=str(settings.resolved_backup_dir),
                                   final_retention_days=settings.final_backup_retention_days,
                                   store_url=store["backup_store_url"],
                                   store_endpoint_url=store["backup_store_endpoint_url"],
                                   store_storage_class=store["backup_store_storage_class"]),
        "billing": BillingResource(
            api_key=settings.stripe_api_key and from_env("STRIPE_API_KEY",
                                                         settings.stripe_api_key),
            api_base=settings.stripe_api_base),
    }


def step_context(resources: Mapping[str, Any], *, method: str, log: Any,
                 operation_id: str | None, events: SafeEvents | None = None) -> StepContext:
    """A step's view of the resources, the same in a Dagster run and in the direct path.

    Progress goes to ``log`` and, when there is an operation, straight to its events,
    synchronously and in order.
    """
    return StepContext(
        database=resources["database"].get(),
        hosts=resources["graph_engine"].hosts(),
        graph_data_dir=resources["graph_engine"].graph_data_dir,
        local_host_capacity=resources["graph_engine"].local_host_capacity,
        local_hosts=resources["graph_engine"].local_hosts,
        progress=resources["progress"].reporter(log, operation_id, events=events),
        policy=resources["policy"].get(),
        method=method,
        log=log,
        operation_id=operation_id,
        backups=resources["backups"].get() if "backups" in resources else None,
    )
