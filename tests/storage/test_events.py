"""One contract, two stores: the operation record and its writes, on the in-memory store and on
real Redis (the ``make_store`` and ``store`` fixtures run each test on both).

Replay and live tailing are in ``test_event_replay.py``, expiry in ``test_event_expiry.py``.
"""

from __future__ import annotations

import functools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisioning_pipelines.storage.events import (
    EVENT_CANCELLED,
    EVENT_COMPLETED,
    EVENT_ERROR,
    EVENT_PROGRESS,
    EVENT_STARTED,
    EVENT_TYPES,
    OPERATION_STATUSES,
    TERMINAL_EVENT_TYPES,
    TERMINAL_STATUSES,
    EventStoreUnavailable,
    InMemoryOperationStore,
    OperationEvent,
    OperationExists,
    OperationStore,
    RedisOperationStore,
    build_operation_store,
    event_id_key,
    page_key,
)
from provisioning_pipelines.storage.events.contract import Change
from tests.storage.conftest import (
    UNREACHABLE_URL,
    MakeStore,
    collect,
)

# ----------------------------------------------------------------------------- values


def test_constants_match_the_contract() -> None:
    assert OPERATION_STATUSES == ("pending", "running", "completed", "failed", "cancelled")
    assert frozenset({"completed", "failed", "cancelled"}) == TERMINAL_STATUSES
    assert set(EVENT_TYPES) == {
        "operation_started",
        "operation_progress",
        "operation_completed",
        "operation_error",
        "operation_cancelled",
    }
    assert {EVENT_COMPLETED, EVENT_ERROR, EVENT_CANCELLED} == TERMINAL_EVENT_TYPES


def test_event_ids_compare_numerically() -> None:
    assert event_id_key("10-0") > event_id_key("9-5")  # as strings it would be the other way
    assert event_id_key("5-10") > event_id_key("5-9")
    assert event_id_key("0") == (0, 0)
    assert event_id_key("7") == (7, 0)
    for bad in ["", "abc", "1-", "-1", "1-2-3", "1.5-0", " 1-0", "99999999999999999999999-0"]:
        with pytest.raises(ValueError):
            event_id_key(bad)


def test_factory_picks_the_store_by_url() -> None:
    memory = build_operation_store(None)
    assert isinstance(memory, InMemoryOperationStore)
    # Building the Redis store does not connect, so an unreachable URL is fine here.
    remote = build_operation_store(UNREACHABLE_URL, prefix="x:", ttl_seconds=60)
    assert isinstance(remote, RedisOperationStore)
    assert remote.prefix == "x:"
    remote.close()


def test_unreachable_redis_fails_fast_with_event_store_unavailable(via: str) -> None:
    store = RedisOperationStore(UNREACHABLE_URL)
    started = time.monotonic()
    assert store.ping() is False
    calls: list[Callable[[], Any]] = [
        lambda: store.create("graph"),
        lambda: store.get("op_x"),
        lambda: store.start("op_x"),
        lambda: store.complete("op_x", {}),
        lambda: store.record_report("op_x", "ok"),
        lambda: store.events("op_x"),
        lambda: store.wait_events("op_x", None, 5.0),
        lambda: collect(store, "op_x", via=via),
    ]
    for call in calls:
        with pytest.raises(EventStoreUnavailable):
            call()
    assert time.monotonic() - started < 5.0
    store.close()


# ----------------------------------------------------------------------------- records


def test_create_and_get_round_trip(store: OperationStore) -> None:
    operation = store.create("graph", user_id="user-1")
    assert re.fullmatch(r"op_[0-9a-f]{24}", operation.id)
    assert operation.status == "pending"
    assert operation.progress == 0
    fetched = store.get(operation.id)
    assert fetched == operation
    assert fetched is not None
    assert fetched.created_at.tzinfo is not None

    as_dict = json.loads(json.dumps(fetched.to_dict()))
    assert as_dict == {
        "operation_id": operation.id,
        "kind": "graph",
        "user_id": "user-1",
        "status": "pending",
        "progress": 0,
        "message": "",
        "result": None,
        "error": None,
        "error_code": None,
        "created_at": operation.created_at.isoformat(),
        "updated_at": operation.updated_at.isoformat(),
        "dagster_report": None,
        "dagster_report_detail": None,
    }

    named = store.create("subgraph", operation_id="op_given-1")
    assert named.id == "op_given-1"
    assert named.user_id is None
    assert store.get("op_given-1") == named
    with pytest.raises(OperationExists):
        store.create("subgraph", operation_id="op_given-1")
    with pytest.raises(ValueError) as refused:
        store.create("graph", operation_id="not a valid id")
    assert not isinstance(refused.value, OperationExists)
    assert store.get("op_missing") is None
    assert store.events("op_missing") == []


def test_a_malformed_id_names_no_operation(
    store: OperationStore, via: str,
) -> None:
    op = store.create("graph", operation_id="op_a").id
    store.start(op)
    # "op_a:events" would be op_a's stream key in Redis: it must not reach it
    for bad in ("op_a:events", "op a", "", "../op_a"):
        assert store.get(bad) is None
        assert store.events(bad) == []
        assert store.wait_events(bad, None, 1.0) == []
        assert store.start(bad) is None
        assert store.progress(bad, "x", 1) is None
        assert store.complete(bad, {}) is None
        store.record_report(bad, "ok")
        assert collect(store, bad, via=via) == []
    assert len(store.events(op)) == 1


def test_status_moves_only_forward(store: OperationStore) -> None:
    op = store.create("graph").id
    started = store.start(op, "go")
    assert started is not None
    assert started.type == EVENT_STARTED
    assert started.data["status"] == "running"
    assert store.start(op) is None  # running cannot start again

    # progress on a pending operation moves it to running, without a started event
    other = store.create("graph").id
    moved = store.progress(other, "first step", 10)
    assert moved is not None
    assert moved.type == EVENT_PROGRESS
    assert store.get(other).status == "running"  # type: ignore[union-attr]
    assert store.start(other) is None

    done = store.complete(op, {"graph_id": "kg0123456789abcdef"})
    assert done is not None
    count = len(store.events(op))
    assert store.start(op) is None
    assert store.progress(op, "late", 99) is None
    assert store.complete(op, {}) is None
    assert store.fail(op, "late") is None
    assert store.cancel(op, "late") is None
    assert len(store.events(op)) == count
    final = store.get(op)
    assert final is not None
    assert (final.status, final.progress) == ("completed", 100)

    # a pending operation may end directly
    pending = store.create("graph").id
    cancelled = store.cancel(pending, "user asked")
    assert cancelled is not None
    assert cancelled.type == EVENT_CANCELLED
    assert store.get(pending).status == "cancelled"  # type: ignore[union-attr]

    for action in (lambda: store.start("op_unknown"), lambda: store.fail("op_unknown", "x")):
        assert action() is None


def test_event_payloads(store: OperationStore) -> None:
    required = {"operation_id", "status", "progress", "message", "timestamp"}
    ok, bad, stopped = (store.create("graph").id for _ in range(3))
    store.start(ok)
    result = {"graph_id": "kg1", "tables": ["a", "b"], "nested": {"n": 1.5, "none": None}}
    completed = store.complete(ok, result)
    failed = store.fail(bad, "host exhausted")
    cancelled = store.cancel(stopped)
    assert completed is not None and failed is not None and cancelled is not None

    assert completed.data["result"] == result
    assert failed.type == EVENT_ERROR
    assert failed.data["error"] == "host exhausted"
    assert cancelled.data["reason"] == ""
    for event in (completed, failed, cancelled):
        assert required <= event.data.keys()
        assert event.is_terminal
        json.dumps(event.data)
    # what a writer gets back is what a reader replays
    assert store.events(ok)[-1] == completed
    assert store.events(bad) == [failed]

    record = store.get(ok)
    assert record is not None and record.result == result and record.error is None
    failed_record = store.get(bad)
    assert failed_record is not None and failed_record.error == "host exhausted"

    # a result that cannot be stored fails before anything is written
    pending = store.create("graph").id
    with pytest.raises(TypeError):
        store.complete(pending, {"when": object()})
    assert store.get(pending).status == "pending"  # type: ignore[union-attr]
    assert store.events(pending) == []


def test_a_failure_keeps_its_code_in_the_event_and_the_record(store: OperationStore) -> None:
    coded, plain = (store.create("graph").id for _ in range(2))
    failed = store.fail(coded, "the disk was full", "disk_full")
    assert failed is not None
    assert failed.data["error"] == "the disk was full"
    assert failed.data["error_code"] == "disk_full"
    assert store.events(coded) == [failed]  # replayed as written
    record = store.get(coded)
    assert record is not None and record.error_code == "disk_full"
    assert record.to_dict()["error_code"] == "disk_full"
    assert store.fail(coded, "again", "internal_error") is None  # the first terminal wins
    assert store.get(coded).error_code == "disk_full"  # type: ignore[union-attr]

    without = store.fail(plain, "no code")
    assert without is not None and "error_code" not in without.data
    assert store.get(plain).error_code is None  # type: ignore[union-attr]


def test_first_terminal_state_wins(store: OperationStore) -> None:
    op = store.create("graph").id
    store.start(op)
    assert store.complete(op, {"graph_id": "kg1"}) is not None
    assert store.fail(op, "too late") is None
    assert store.cancel(op, "too late") is None
    record = store.get(op)
    assert record is not None
    assert (record.status, record.error, record.result) == ("completed", None, {"graph_id": "kg1"})
    assert [e.type for e in store.events(op) if e.is_terminal] == [EVENT_COMPLETED]


def test_first_terminal_state_wins_under_racing_threads(store: OperationStore) -> None:
    operations = [store.create("graph").id for _ in range(40)]
    for op in operations:
        store.start(op)
    outcomes: dict[str, list[OperationEvent | None]] = {op: [] for op in operations}
    lock = threading.Lock()

    def race(op: str, barrier: threading.Barrier, action: Callable[[], Any]) -> None:
        barrier.wait()
        outcome = action()
        with lock:
            outcomes[op].append(outcome)

    threads = []
    for op in operations:
        barrier = threading.Barrier(3)
        actions: list[Callable[[], Any]] = [
            functools.partial(store.complete, op, {"winner": "complete"}),
            functools.partial(store.fail, op, "failed"),
            functools.partial(store.cancel, op, "cancelled"),
        ]
        threads += [threading.Thread(target=race, args=(op, barrier, a)) for a in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    status_of = {EVENT_COMPLETED: "completed", EVENT_ERROR: "failed", EVENT_CANCELLED: "cancelled"}
    for op in operations:
        winners = [o for o in outcomes[op] if o is not None]
        assert len(outcomes[op]) == 3
        assert len(winners) == 1, op
        terminal = [e for e in store.events(op) if e.is_terminal]
        assert terminal == winners
        assert store.get(op).status == status_of[winners[0].type]  # type: ignore[union-attr]


def test_progress_is_clamped_and_never_decreases(store: OperationStore) -> None:
    op = store.create("graph").id

    def percent(message: str, value: int | None) -> int:
        event = store.progress(op, message, value)
        assert event is not None
        return int(event.data["progress"])

    assert percent("below", -5) == 0
    assert percent("forty", 40) == 40
    assert percent("back", 20) == 40
    assert percent("no number", None) == 40
    assert percent("above", 250) == 100
    record = store.get(op)
    assert record is not None
    assert (record.progress, record.message) == (100, "above")

    other = store.create("graph").id
    store.progress(other, "a", 30)
    completed = store.complete(other, {})
    assert completed is not None and completed.data["progress"] == 100


_CHANGES = st.one_of(
    st.builds(Change.start, st.text(max_size=20)),
    st.builds(Change.progress, st.text(max_size=20),
              st.one_of(st.none(), st.integers(-10, 150))),
    st.builds(Change.complete, st.dictionaries(st.text(max_size=5), st.integers(), max_size=2)),
    st.builds(Change.fail, st.text(min_size=1, max_size=20),
              st.one_of(st.none(), st.sampled_from(["disk_full", "invalid_request"]))),
    st.builds(Change.cancel, st.text(max_size=20)),
)


def _seen(store: OperationStore, op: str) -> tuple[list[tuple[Any, ...]], tuple[Any, ...]]:
    """An operation's events and record, without what differs between two operations (ids,
    times)."""
    events = [(e.type, {k: v for k, v in e.data.items() if k not in ("operation_id", "timestamp")})
              for e in store.events(op)]
    record = store.get(op)
    assert record is not None
    return events, (record.status, record.progress, record.message, record.result,
                    record.error, record.error_code)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.lists(_CHANGES, min_size=1, max_size=6))
def test_changes_applied_together_write_what_they_write_one_by_one(
        store: OperationStore, changes: list[Change]) -> None:
    together, one_by_one = (store.create("graph").id for _ in range(2))
    written = store.apply(together, *changes)
    alone = [store.apply(one_by_one, change)[0] for change in changes]
    # the same changes are skipped (a status that cannot move), the same events are written
    assert [event is None for event in written] == [event is None for event in alone]
    assert _seen(store, together) == _seen(store, one_by_one)
    assert [e for e in written if e is not None] == store.events(together)
    assert store.apply("no such:id", *changes) == [None] * len(changes)


def test_changes_applied_together_after_redis_forgot_the_script(
        redis_store: tuple[RedisOperationStore, redis.Redis]) -> None:
    store, client = redis_store
    op = store.create("graph").id
    store.start(op)  # the script is loaded and known by its hash
    client.script_flush()
    written = store.apply(op, Change.progress("one", 10), Change.progress("two", 20),
                          Change.complete({"graph_id": "kg1"}))
    assert [event.type for event in written if event is not None] == [
        EVENT_PROGRESS, EVENT_PROGRESS, EVENT_COMPLETED]
    assert [event.data["message"] for event in store.events(op)] == [
        "Operation started", "one", "two", "Operation completed"]


def test_record_report_after_completion(store: OperationStore) -> None:
    op = store.create("graph").id
    store.start(op)
    store.complete(op, {"graph_id": "kg1"})
    events_before = store.events(op)

    store.record_report(op, "ok")
    record = store.get(op)
    assert record is not None
    assert (record.dagster_report, record.dagster_report_detail) == ("ok", None)
    assert record.status == "completed"

    store.record_report(op, "timeout", "no answer within 15 s")
    record = store.get(op)
    assert record is not None
    assert (record.dagster_report, record.dagster_report_detail) == (
        "timeout",
        "no answer within 15 s",
    )
    assert record.to_dict()["dagster_report"] == "timeout"
    assert store.events(op) == events_before  # a report is not an event

    with pytest.raises(ValueError):
        store.record_report(op, "maybe")
    store.record_report("op_unknown", "error", "gone")  # ignored, and creates nothing
    assert store.get("op_unknown") is None



def test_a_users_operations_are_listed_newest_first_and_only_theirs(
    make_store: MakeStore,
) -> None:
    store = make_store()
    mine = []
    for index in range(3):
        mine.append(store.create("graph_provisioning", user_id="usr_a").id)
        time.sleep(0.002 * (index + 1))  # distinct creation times
    store.create("graph_provisioning", user_id="usr_b")
    store.create("graph_provisioning")  # nobody's

    assert [o.id for o in store.operations_of("usr_a")] == list(reversed(mine))
    assert [o.id for o in store.operations_of("usr_a", limit=2)] == list(reversed(mine))[:2]
    assert len(store.operations_of("usr_b")) == 1
    assert store.operations_of("usr_nobody") == []



def _walk(store: OperationStore, user_id: str, limit: int,
          between: Callable[[], None] | None = None) -> list[str]:
    """Every page of the user's operations, ``limit`` at a time, from the newest."""
    seen: list[str] = []
    before = None
    while True:
        page = store.operations_of(user_id, limit=limit, before=before)
        seen.extend(operation.id for operation in page)
        if len(page) < limit:
            return seen
        before = page_key(page[-1])
        if between is not None:
            between()


def test_pages_of_a_users_operations_lose_and_repeat_none_while_more_are_made(
    make_store: MakeStore,
) -> None:
    """250 operations, many in one millisecond (ties broken by id), walked 7 at a time while
    new ones are made between pages: each of the first 250 is seen exactly once, newest first,
    and the new ones (newer than the walk's start) are not met on the way down."""
    store = make_store()
    made = [store.create("graph_provisioning", user_id="usr_p").id for _ in range(250)]
    store.create("graph_provisioning", user_id="usr_q")  # somebody else's
    time.sleep(0.002)  # the new ones are of a later millisecond than any of the 250
    newer: list[str] = []
    seen = _walk(store, "usr_p", 7,
                 lambda: newer.append(store.create("backup", user_id="usr_p").id))
    assert sorted(seen) == sorted(made) and len(seen) == 250
    keys = [page_key(store.get(op)) for op in seen]  # type: ignore[arg-type]
    assert keys == sorted(keys, reverse=True)
    assert newer and set(newer).isdisjoint(seen)
    assert set(_walk(store, "usr_p", 100)[:len(newer)]) == set(newer)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=st.integers(min_value=1, max_value=12),
       before=st.tuples(st.integers(min_value=0, max_value=2**53), st.text(max_size=40)))
def test_any_limit_and_any_key_give_a_slice_of_the_list_in_order(
    make_store: MakeStore, limit: int, before: tuple[int, str]) -> None:
    store = make_store()
    user = f"usr_{uuid.uuid4().hex}"
    for _ in range(5):
        store.create("graph_provisioning", user_id=user)
    everything = store.operations_of(user, limit=100)
    expected = [o.id for o in everything if page_key(o) < before][:limit]
    assert [o.id for o in store.operations_of(user, limit=limit, before=before)] == expected
    assert [o.id for o in store.operations_of(user, limit=limit)] == [
        o.id for o in everything][:limit]
