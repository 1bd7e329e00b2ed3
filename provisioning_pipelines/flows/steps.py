"""Steps and flows: each step of provisioning is written once, as a plain function.

A step is ``fn(ctx: StepContext, value) -> value``: the first step of a flow receives the flow's
config, each later step the previous step's output, and the last returns an ``Outcome``. The
Dagster jobs wrap each step in an op; the direct executor calls the same functions in-process;
both run them through the one step runner (``runner.py``). Keeping the bodies plain (rather than
invoking ops directly) means the direct path costs nothing beyond the work itself: no op
context, no instance, no type checks.

A ``Flow`` also describes its runs once, for every trigger: the tags a run is launched with,
its run config, who owns its operation, and the result a finished run left behind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dagster import Backoff, Config, RetryPolicy

from provisioning_pipelines.errors import ProvisioningError
from provisioning_pipelines.services.graphs.backups import BackupPolicy
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.errors import is_refused_data
from provisioning_pipelines.storage.hosts.directory import HostDirectory

#: Transient failures (a dropped connection, a busy database) get two more tries inside one step.
TRANSIENT_RETRY = RetryPolicy(max_retries=2, delay=0.2, backoff=Backoff.EXPONENTIAL)

# Run tags, set at launch by every trigger (the run queue's per-graph limit reads them).
OPERATION_TAG = "provisioning/operation_id"
SUBSCRIPTION_TAG = "provisioning/subscription_id"
GRAPH_TAG = "provisioning/graph_id"
USER_TAG = "provisioning/user_id"
ATTEMPT_TAG = "provisioning/attempt"
FLOW_TAG = "provisioning/flow"


class Progress(Protocol):
    def __call__(self, message: str, percent: int | None = None) -> None: ...


@dataclass(frozen=True)
class Policy:
    """How many attempts a subscription gets, how long a claim lasts, how long to back off.

    No defaults here: they live in ``settings.py`` (one home per default).
    """

    max_attempts: int
    claim_lease_seconds: float
    retry_backoff_seconds: float
    deletion_grace_seconds: float


@dataclass
class StepContext:
    """What a step may touch. Built from the same resources in a Dagster run and in the direct
    executor; ``method`` says which (``dagster`` or ``direct``)."""

    database: Database
    #: The graph hosts, reached only through their interface (``storage/hosts/``).
    hosts: HostDirectory
    graph_data_dir: Path
    progress: Progress
    policy: Policy
    method: str
    log: logging.Logger | Any = field(default_factory=lambda: logging.getLogger("provisioning"))
    #: The operation reporting this work, if any: recorded on the subscription it claims, so
    #: whoever picks the work up after a crash continues the same operation.
    operation_id: str | None = None
    #: Where backups go and how long the final one is kept (lifecycle flows).
    backups: BackupPolicy | None = None
    #: Slots of each tier's local host when a fresh install registers it (None: the tier's).
    local_host_capacity: int | None = None
    #: Whether a fresh install registers in-process local hosts (``LOCAL_GRAPH_HOSTS``).
    local_hosts: bool = True


@dataclass(frozen=True)
class Outcome:
    """What a flow produced: the user's result and the asset materialization describing it."""

    asset_key: tuple[str, ...]
    result: dict[str, Any]
    metadata: dict[str, Any]
    started_at: float
    materialize: bool = True
    #: The work waits (a full tier's queue): its operation stays open, and whoever provisions
    #: the subscription later continues and ends it.
    pending: bool = False

    def materialization_metadata(self, method: str) -> dict[str, Any]:
        duration_ms = round((time.time() - self.started_at) * 1000, 3)
        return {**self.metadata, "duration_ms": duration_ms, "provisioning_method": method}


FailureHandler = Callable[[StepContext, Any, BaseException], None]
#: What a step runs inside of, e.g. the heartbeat that keeps a claim's lease alive.
Surrounding = Callable[[StepContext, Any], AbstractContextManager[Any]]


@dataclass(frozen=True)
class Step:
    name: str
    fn: Callable[[StepContext, Any], Any]
    description: str
    retry: RetryPolicy | None = None
    on_failure: FailureHandler | None = None
    config_cls: type[Config] | None = None
    around: Surrounding | None = None

    def __call__(self, ctx: StepContext, value: Any) -> Any:
        return self.fn(ctx, value)


def step(
    *,
    retry: RetryPolicy | None = TRANSIENT_RETRY,
    on_failure: FailureHandler | None = None,
    config: type[Config] | None = None,
    around: Surrounding | None = None,
) -> Callable[[Callable[[StepContext, Any], Any]], Step]:
    """Declare a step; its docstring becomes the op's description in the Dagster UI."""

    def wrap(fn: Callable[[StepContext, Any], Any]) -> Step:
        doc = (fn.__doc__ or fn.__name__).strip().split("\n\n")[0]
        return Step(name=fn.__name__, fn=fn, description=" ".join(doc.split()), retry=retry,
                    on_failure=on_failure, config_cls=config, around=around)

    return wrap


@dataclass(frozen=True)
class Flow:
    """An ordered list of steps, defined once; both execution paths are built from it.

    ``tags``, ``owner`` and ``result`` describe a run of the flow for every trigger: the tags
    it is launched with (derived from its config, so the run queue sees them), the user who
    owns its operation, and what a finished run left behind, read back from the database.
    """

    name: str
    job_name: str
    operation_kind: str
    description: str
    asset_key: tuple[str, ...]
    steps: tuple[Step, ...]
    tags: Callable[[Any], dict[str, str]]
    owner: Callable[[Database, Any], str | None]
    result: Callable[[Database, Any], dict[str, Any]]

    @property
    def config_cls(self) -> type[Config]:
        config_cls = self.steps[0].config_cls
        assert config_cls is not None, f"flow {self.name}: the first step takes the config"
        return config_cls

    def run_tags(self, config: Any, **extra: str) -> dict[str, str]:
        """Every tag a run of this flow carries, set when it is launched."""
        return {**self.tags(config), **extra}

    def run_config(self, config: Any) -> dict[str, Any]:
        """The run config a launched job needs: the flow's config on its first op."""
        return {"ops": {self.steps[0].name: {"config": config.model_dump()}}}


def is_transient(exc: BaseException) -> bool:
    """Worth another try inside the same step: an infrastructure hiccup, not a domain error
    nor data the store refuses."""
    return not isinstance(exc, ProvisioningError) and not is_refused_data(exc)


def worth_retrying(exc: BaseException) -> bool:
    """Another attempt could succeed: errors a user caused, or data the store refuses, never
    pass by themselves; anything else might."""
    if isinstance(exc, ProvisioningError):
        return exc.retryable
    return not is_refused_data(exc)
