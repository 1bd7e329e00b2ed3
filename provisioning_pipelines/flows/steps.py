"""Steps and flows: each step of provisioning is written once, as a plain function.

A step is ``fn(ctx: StepContext, value) -> value``: the first step of a flow receives the flow's
config, each later step the previous step's output, and the last returns an ``Outcome``. The
Dagster jobs (``jobs.py``) wrap each step in an op; the direct executor (``direct.py``) calls the
same functions in-process. Keeping the bodies plain (rather than invoking ops directly) means the
direct path costs nothing beyond the work itself: no op context, no instance, no type checks.

What both paths share is decided here: which errors are worth another try (``RetryPolicy`` on the
step, honoured by Dagster and by the direct executor alike), and what a step that finally fails
must undo (``on_failure``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dagster import Backoff, RetryPolicy

from provisioning_pipelines.errors import ProvisioningError
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.ladybug import LadybugEngine

#: Transient failures (a dropped connection, a busy database) get two more tries inside one step.
TRANSIENT_RETRY = RetryPolicy(max_retries=2, delay=0.2, backoff=Backoff.EXPONENTIAL)


class Progress(Protocol):
    def __call__(self, message: str, percent: int | None = None) -> None: ...


@dataclass(frozen=True)
class Policy:
    """How many attempts a subscription gets, how long a claim lasts, how long to back off."""

    max_attempts: int = 3
    claim_lease_seconds: float = 120.0
    retry_backoff_seconds: float = 30.0


@dataclass
class StepContext:
    """What a step may touch. Built from Dagster resources in a run, from the same resources
    in the direct executor."""

    database: Database
    engine: LadybugEngine
    graph_data_dir: Path
    progress: Progress
    policy: Policy
    method: str
    log: logging.Logger | Any = field(default_factory=lambda: logging.getLogger("provisioning"))
    tag_run: Callable[[dict[str, str]], None] = lambda tags: None


@dataclass(frozen=True)
class Outcome:
    """What a flow produced: the user's result and the asset materialization describing it."""

    asset_key: tuple[str, ...]
    result: dict[str, Any]
    metadata: dict[str, Any]
    started_at: float
    materialize: bool = True

    def materialization_metadata(self, method: str) -> dict[str, Any]:
        duration_ms = round((time.time() - self.started_at) * 1000, 3)
        return {**self.metadata, "duration_ms": duration_ms, "provisioning_method": method}


FailureHandler = Callable[[StepContext, Any, BaseException], None]


@dataclass(frozen=True)
class Step:
    name: str
    fn: Callable[[StepContext, Any], Any]
    description: str
    retry: RetryPolicy | None = None
    on_failure: FailureHandler | None = None
    config_cls: type | None = None

    def __call__(self, ctx: StepContext, value: Any) -> Any:
        return self.fn(ctx, value)


def step(
    *,
    retry: RetryPolicy | None = TRANSIENT_RETRY,
    on_failure: FailureHandler | None = None,
    config: type | None = None,
) -> Callable[[Callable[[StepContext, Any], Any]], Step]:
    """Declare a step; its docstring becomes the op's description in the Dagster UI."""

    def wrap(fn: Callable[[StepContext, Any], Any]) -> Step:
        doc = (fn.__doc__ or fn.__name__).strip().split("\n\n")[0]
        return Step(name=fn.__name__, fn=fn, description=" ".join(doc.split()), retry=retry,
                    on_failure=on_failure, config_cls=config)

    return wrap


@dataclass(frozen=True)
class Flow:
    """An ordered list of steps, defined once; both execution paths are built from it."""

    name: str
    job_name: str
    description: str
    asset_key: tuple[str, ...]
    steps: tuple[Step, ...]

    @property
    def config_cls(self) -> type:
        config_cls = self.steps[0].config_cls
        assert config_cls is not None, f"flow {self.name}: the first step takes the config"
        return config_cls


def is_transient(exc: BaseException) -> bool:
    """Worth another try inside the same step: an infrastructure hiccup, not a domain error."""
    return not isinstance(exc, ProvisioningError)


def worth_retrying(exc: BaseException) -> bool:
    """Errors a user caused never pass by themselves; anything else might."""
    if isinstance(exc, ProvisioningError):
        return exc.retryable
    return True


def describe(exc: BaseException) -> str:
    if isinstance(exc, ProvisioningError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"
