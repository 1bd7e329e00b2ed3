"""One contract, two stores: every test here runs against the in-memory store and real Redis.

Redis tests use a fresh key prefix per test and delete their keys afterwards. When Redis is not
reachable they are skipped locally, and fail under ``CI=true`` so a broken CI service is noticed.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

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
    Fanout,
    InMemoryOperationStore,
    OperationEvent,
    OperationStore,
    RedisOperationStore,
    build_operation_store,
    event_id_key,
)
from tests.storage.conftest import (
    UNREACHABLE_URL,
    MakeStore,
)


@pytest.fixture(params=["store", "fanout"])
def via(request: pytest.FixtureRequest) -> str:
    """Subscribe on the store itself, or through the API's per-process ``Fanout`` over it."""
    return str(request.param)


def _collect(
    store: OperationStore,
    operation_id: str,
    after: str | None = None,
    *,
    keepalive: float = 5.0,
    limit: float = 20.0,
    on_item: Callable[[OperationEvent | None], Any] | None = None,
    via: str = "store",
) -> list[OperationEvent | None]:
    """Run ``subscribe`` to its end in a fresh event loop, bounded by ``limit`` seconds, on the
    store itself or through a ``Fanout`` over it (``via``): both keep one contract."""

    async def consume() -> list[OperationEvent | None]:
        items: list[OperationEvent | None] = []
        source = store if via == "store" else Fanout(store, keepalive=keepalive)
        async for item in source.subscribe(operation_id, after, keepalive=keepalive):
            items.append(item)
            if on_item is not None:
                on_item(item)
        return items

    return asyncio.run(asyncio.wait_for(consume(), limit))


def _later(delay: float, action: Callable[[], Any]) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


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
        lambda: _collect(store, "op_x", via=via),
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
        "created_at": operation.created_at.isoformat(),
        "updated_at": operation.updated_at.isoformat(),
        "dagster_report": None,
        "dagster_report_detail": None,
    }

    named = store.create("subgraph", operation_id="op_given-1")
    assert named.id == "op_given-1"
    assert named.user_id is None
    assert store.get("op_given-1") == named
    with pytest.raises(ValueError):
        store.create("subgraph", operation_id="op_given-1")
    with pytest.raises(ValueError):
        store.create("graph", operation_id="not a valid id")
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
        assert _collect(store, bad, via=via) == []
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


# ----------------------------------------------------------------------------- replay


def test_events_replay_after_a_given_id(
    store: OperationStore, via: str,
) -> None:
    op = store.create("graph").id
    store.start(op)
    for i in range(8):
        store.progress(op, f"step {i}", i * 10)
    store.complete(op, {})
    everything = store.events(op)
    assert len(everything) == 10
    keys = [event_id_key(e.id) for e in everything]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)  # strictly increasing

    assert store.events(op, after=everything[3].id) == everything[4:]
    assert store.events(op, after="0") == everything
    assert store.events(op, after="0-0") == everything
    assert store.events(op, after=everything[-1].id) == []
    for bad in ("abc", "1-2-3", "-1"):
        with pytest.raises(ValueError):
            store.events(op, after=bad)
        with pytest.raises(ValueError):
            store.wait_events(op, bad, 0.1)
        with pytest.raises(ValueError):
            _collect(store, op, bad, via=via)


def test_wait_events_wakes_on_an_event_from_another_thread(store: OperationStore) -> None:
    op = store.create("graph").id
    first = store.start(op)
    assert first is not None
    assert store.wait_events(op, None, 5.0) == [first]  # already there: no wait

    writer = _later(0.2, lambda: store.progress(op, "from a thread", 50))
    started = time.monotonic()
    woke = store.wait_events(op, first.id, 10.0)
    elapsed = time.monotonic() - started
    writer.join()
    assert [e.data["message"] for e in woke] == ["from a thread"]
    assert 0.1 < elapsed < 2.0

    started = time.monotonic()
    assert store.wait_events(op, woke[-1].id, 0.3) == []
    assert time.monotonic() - started >= 0.25

    done = store.complete(op, {})
    assert done is not None
    started = time.monotonic()
    assert store.wait_events(op, done.id, 5.0) == []  # terminal: nothing can come
    assert store.wait_events("op_unknown", None, 5.0) == []
    assert time.monotonic() - started < 1.0


def test_subscribe_replays_then_tails_without_gap_or_duplicate(
    store: OperationStore, via: str,
) -> None:
    op = store.create("graph").id
    store.start(op)
    for i in range(30):
        store.progress(op, f"before {i}", i)
    store.replay_batch = 7  # many replay reads, with writes landing between them

    replay_started = threading.Event()

    def write_while_replaying() -> None:
        replay_started.wait(10)
        for i in range(150):
            store.progress(op, f"during {i}", 30 + i // 3)
            if i % 10 == 0:
                time.sleep(0.001)
        store.complete(op, {"graph_id": "kg1"})
        store.progress(op, "after the end", 100)  # refused: nothing follows the terminal

    writer = threading.Thread(target=write_while_replaying)
    writer.start()

    def on_item(item: OperationEvent | None) -> None:
        replay_started.set()
        time.sleep(0.0005)  # a slow consumer, so the writer overlaps the replay

    items = _collect(store, op, on_item=on_item, via=via)
    writer.join(10)
    received = [item for item in items if item is not None]
    stored = store.events(op)
    assert len(stored) == 1 + 30 + 150 + 1
    assert [e.id for e in received] == [e.id for e in stored]
    assert received == stored
    assert received[-1].type == EVENT_COMPLETED

    # resuming from a Last-Event-ID replays only what follows it, then ends
    resumed = _collect(store, op, stored[100].id, via=via)
    assert resumed == stored[101:]


def test_subscribe_keepalive_yields_none_when_idle(
    store: OperationStore, via: str,
) -> None:
    op = store.create("graph").id
    first = store.start(op)
    assert first is not None
    writer = _later(0.45, lambda: store.complete(op, {"graph_id": "kg1"}))
    items = _collect(store, op, keepalive=0.1, via=via)
    writer.join()
    assert items[0] == first
    assert items[-1] is not None and items[-1].type == EVENT_COMPLETED
    assert items[1:-1] and all(item is None for item in items[1:-1])
    assert len(items[1:-1]) >= 2


def test_subscribe_wakes_promptly_on_a_write_from_another_thread(
    store: OperationStore, via: str,
) -> None:
    op = store.create("graph").id
    store.start(op)
    written_at: list[float] = []
    received_at: list[float] = []

    def write() -> None:
        written_at.append(time.monotonic())
        store.progress(op, "now", 50)
        time.sleep(0.2)
        written_at.append(time.monotonic())
        store.complete(op, {})

    writer = _later(0.3, write)
    started = time.monotonic()

    def on_item(item: OperationEvent | None) -> None:
        if item is not None and item.type != EVENT_STARTED:
            received_at.append(time.monotonic())

    items = _collect(store, op, keepalive=10.0, on_item=on_item, via=via)
    writer.join()
    assert None not in items  # keepalive is 10 s: the wake-up came from the write
    assert len(received_at) == 2
    for written, received in zip(written_at, received_at, strict=True):
        assert received - written < 0.25
    assert time.monotonic() - started < 3.0


def test_subscribe_ends_at_once_when_there_is_nothing_to_tail(
    store: OperationStore, via: str,
) -> None:
    started = time.monotonic()
    assert _collect(store, "op_unknown", keepalive=10.0, via=via) == []

    op = store.create("graph").id
    store.start(op)
    done = store.fail(op, "boom")
    assert done is not None
    assert _collect(store, op, done.id, keepalive=10.0, via=via) == []  # terminal already seen
    assert _collect(store, op, keepalive=10.0, via=via)[-1] == done
    assert time.monotonic() - started < 2.0


# ----------------------------------------------------------------------------- TTL


def test_operation_expires_after_its_ttl_and_every_write_refreshes_it(
    make_store: MakeStore, via: str,
) -> None:
    store = make_store(ttl_seconds=0.6)
    op = store.create("graph").id
    store.start(op)
    for _ in range(2):
        time.sleep(0.4)
        assert store.progress(op, "still here", None) is not None
    time.sleep(0.4)
    store.record_report(op, "ok")  # a report is a write too
    time.sleep(0.4)  # 1.6 s since create, well past one TTL: each write extended it
    assert store.get(op) is not None
    assert len(store.events(op)) == 3

    time.sleep(0.9)
    assert store.get(op) is None
    assert store.events(op) == []
    assert store.start(op) is None
    assert _collect(store, op, via=via) == []
    store.create("graph", operation_id=op)  # the id is free again, with an empty stream
    assert store.events(op) == []


def test_redis_sets_one_ttl_on_every_key_and_refreshes_them_together(
    redis_store: tuple[RedisOperationStore, redis.Redis],
) -> None:
    store, client = redis_store
    op = store.create("graph").id
    record_key = f"{store.prefix}op:{op}"
    stream_key = f"{record_key}:events"
    assert client.type(record_key) == "hash"
    assert 98_000 < client.pttl(record_key) <= 100_000

    store.start(op)
    assert client.type(stream_key) == "stream"
    for key in (record_key, stream_key):
        assert 98_000 < client.pttl(key) <= 100_000
    assert client.xrange(stream_key)[0][0] == store.events(op)[0].id

    writes: list[Callable[[], Any]] = [
        lambda: store.progress(op, "step", 10),
        lambda: store.complete(op, {}),
        lambda: store.record_report(op, "ok"),
    ]
    for write in writes:
        client.pexpire(record_key, 5_000)
        client.pexpire(stream_key, 30_000)
        write()
        ttls = [client.pttl(record_key), client.pttl(stream_key)]
        assert all(98_000 < ttl <= 100_000 for ttl in ttls), ttls


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


def test_expired_operations_leave_the_users_list(make_store: MakeStore) -> None:
    short = make_store(ttl_seconds=2)
    gone = short.create("graph_provisioning", user_id="usr_a").id
    time.sleep(2.3)
    kept = short.create("graph_provisioning", user_id="usr_a").id

    assert [o.id for o in short.operations_of("usr_a")] == [kept]
    assert gone not in [o.id for o in short.operations_of("usr_a")]
