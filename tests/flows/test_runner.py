"""The one step runner: retries as Dagster computes them, undo once, and the hand-over to Dagster.

Unit tests use steps of their own; the last test runs a real job whose engine fails once, to see
the retry in Dagster's own event log.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from dagster import Backoff, DagsterEventType, DagsterInstance, Jitter, RetryPolicy
from sqlalchemy import text
from sqlalchemy.exc import DataError

from provisioning_pipelines.errors import InvalidRequest
from provisioning_pipelines.flows import (
    GRAPH_FLOW,
    Outcome,
    RetryLater,
    StepContext,
    SubscriptionConfig,
    materialization,
    run_step,
)
from provisioning_pipelines.flows.steps import TRANSIENT_RETRY, Policy, step, worth_retrying
from provisioning_pipelines.runtime.resources import GraphEngineResource
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.ladybug import LadybugEngine
from tests.factories import new_customer, paid_graph_subscription
from tests.flows.helpers import run_job


def bare_context() -> StepContext:
    """A context for steps that touch nothing but the log."""
    return StepContext(database=None, hosts=None, graph_data_dir=Path("."),  # type: ignore[arg-type]
                       progress=lambda message, percent=None: None,
                       policy=Policy(3, 120, 0, 0), method="direct",
                       log=logging.getLogger("tests"))


class Recorder:
    """A step body that fails with the given errors, in order, then returns ``"done"``."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.undone: list[BaseException] = []

    def body(self, ctx: StepContext, value: Any) -> Any:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"

    def undo(self, ctx: StepContext, value: Any, exc: BaseException) -> None:
        self.undone.append(exc)

    def step(self, retry: RetryPolicy | None = TRANSIENT_RETRY) -> Any:
        return step(retry=retry, on_failure=self.undo)(self.body)


def test_transient_errors_are_retried_after_dagsters_own_delays() -> None:
    recorder = Recorder(OSError("flaky disk"), ConnectionError("dropped"))
    waits: list[float] = []

    assert run_step(recorder.step(), bare_context(), None, sleep=waits.append) == "done"

    assert recorder.calls == 3 and recorder.undone == []
    assert waits == [TRANSIENT_RETRY.calculate_delay(1), TRANSIENT_RETRY.calculate_delay(2)]
    assert waits == pytest.approx([0.2, 0.6])


def test_a_step_that_keeps_failing_is_undone_once_after_its_last_try() -> None:
    errors = [OSError(f"try {n}") for n in range(5)]
    recorder = Recorder(*errors)

    with pytest.raises(OSError, match="try 2"):
        run_step(recorder.step(), bare_context(), None, sleep=lambda seconds: None)

    assert recorder.calls == 3  # the first try and TRANSIENT_RETRY's two retries
    assert [str(e) for e in recorder.undone] == ["try 2"]


def test_a_users_mistake_is_never_retried() -> None:
    recorder = Recorder(InvalidRequest("name: required", field="name"))

    with pytest.raises(InvalidRequest):
        run_step(recorder.step(), bare_context(), None, sleep=lambda seconds: pytest.fail())

    assert recorder.calls == 1 and len(recorder.undone) == 1


def test_the_dagster_adapter_gets_the_retry_handed_over_without_undo() -> None:
    recorder = Recorder(OSError("flaky disk"))

    with pytest.raises(RetryLater) as retry:
        run_step(recorder.step(), bare_context(), None, retries_done=1, hand_over_retries=True)

    assert retry.value.delay == pytest.approx(TRANSIENT_RETRY.calculate_delay(2))
    assert retry.value.max_retries == TRANSIENT_RETRY.max_retries
    assert isinstance(retry.value.cause, OSError) and recorder.undone == []


def test_jittered_delays_stay_within_dagsters_bounds() -> None:
    policy = RetryPolicy(max_retries=3, delay=1.0, backoff=Backoff.LINEAR, jitter=Jitter.FULL)
    waits: list[float] = []
    recorder = Recorder(OSError("a"), OSError("b"), OSError("c"))

    run_step(recorder.step(retry=policy), bare_context(), None, sleep=waits.append)

    assert len(waits) == 3
    assert all(0 <= wait <= 1.0 * (n + 1) for n, wait in enumerate(waits))


def test_an_outcome_becomes_a_materialization_naming_its_method() -> None:
    outcome = Outcome(asset_key=("provisioning", "graph"), result={"graph_id": "kg0"},
                      metadata={"graph_id": "kg0"}, started_at=time.time() - 0.05)

    event = materialization(outcome, "direct", operation_id="op_1")

    assert event.asset_key.path == ["provisioning", "graph"]
    metadata = {key: value.value for key, value in event.metadata.items()}
    assert metadata["provisioning_method"] == "direct"
    assert metadata["operation_id"] == "op_1" and metadata["graph_id"] == "kg0"
    assert metadata["duration_ms"] >= 50


class FailsOnce(LadybugEngine):
    failures_left = 1

    def ensure_database(self, path: Path, ddl: Any) -> bool:
        if FailsOnce.failures_left:
            FailsOnce.failures_left -= 1
            raise OSError("transient I/O error")
        return super().ensure_database(path, ddl)


class FailsOnceResource(GraphEngineResource):
    def get(self) -> LadybugEngine:
        return FailsOnce(template_dir=Path(self.data_dir) / ".templates")


def test_in_a_run_a_transient_error_shows_as_a_dagster_retry_of_the_step(
    database: Database, resources: dict[str, Any], dagster_instance: DagsterInstance,
    graph_dir: Path,
) -> None:
    FailsOnce.failures_left = 1
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user)
    engine = FailsOnceResource(data_dir=str(graph_dir), buffer_pool_mb=16, use_templates=True)

    result = run_job(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id),
                     instance=dagster_instance, resources={**resources, "graph_engine": engine})

    assert result.success and FailsOnce.failures_left == 0
    retried = [event.step_key for event in result.all_events
               if event.event_type == DagsterEventType.STEP_UP_FOR_RETRY]
    assert retried == ["create_graph_database"]
    assert result.output_for_node("activate_subscription").result["status"] == "active"


def test_data_the_database_refuses_is_final_at_once(postgres_database: Database) -> None:
    def store_out_of_range(ctx: StepContext, value: Any) -> Any:
        with postgres_database.session() as session:
            session.execute(text("SELECT CAST(:big AS INTEGER)"), {"big": 2**40})

    undone: list[BaseException] = []
    refusing = step(on_failure=lambda ctx, value, exc: undone.append(exc))(store_out_of_range)

    with pytest.raises(DataError):
        run_step(refusing, bare_context(), None, sleep=lambda seconds: pytest.fail("retried"))

    assert len(undone) == 1 and not worth_retrying(undone[0])  # no attempt is burnt on it
    assert not worth_retrying(ValueError("A string literal cannot contain NUL (0x00) characters."))
    assert worth_retrying(OSError("disk hiccup"))
