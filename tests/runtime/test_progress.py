"""Progress lines held back to share a round trip (``SafeEvents(progress_delay=...)``), on the
in-memory store and on real Redis: every line is written, in order, with the end or on its own
within the delay, and a store that is down still never fails the work."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence

import pytest

from provisioning_pipelines.runtime.progress import SafeEvents
from provisioning_pipelines.storage.events import (
    EVENT_COMPLETED,
    EVENT_PROGRESS,
    EVENT_STARTED,
    OperationEvent,
    OperationStore,
    RedisOperationStore,
)
from provisioning_pipelines.storage.events.contract import Change
from tests.storage.conftest import UNREACHABLE_URL, MakeStore


class CountingStore:
    """A real store, counting the writes that reach it (one ``apply`` is one round trip)."""

    def __init__(self, store: OperationStore) -> None:
        self.store = store
        self.round_trips = 0

    def apply(self, operation_id: str, *changes: Change) -> list[OperationEvent | None]:
        self.round_trips += 1
        return self.store.apply(operation_id, *changes)

    def __getattr__(self, name: str) -> object:
        method = getattr(self.store, name)
        if name in ("start", "progress", "complete", "fail", "cancel"):
            self.round_trips += 1
        return method


def _types(store: OperationStore, op: str) -> list[str]:
    return [event.type for event in store.events(op)]


def _messages(store: OperationStore, op: str) -> Sequence[str]:
    return [event.data["message"] for event in store.events(op)]


def test_lines_of_a_quick_flow_are_written_with_its_end_in_one_round_trip(
        make_store: MakeStore) -> None:
    store = make_store()
    counting = CountingStore(store)
    events = SafeEvents(counting, progress_delay=30.0)  # type: ignore[arg-type]
    op = events.open("graph_provisioning", "u1", None)
    events.call(op, "start", "graph provisioning started")
    for index in range(4):
        events.call(op, "progress", f"step {index}", 20 * (index + 1))
    assert _types(store, op) == [EVENT_STARTED]  # held back, not lost: see below
    before = counting.round_trips
    completed = events.call(op, "complete", {"graph_id": "kg1"})

    assert counting.round_trips == before + 1
    assert completed is not None and completed.type == EVENT_COMPLETED
    assert _messages(store, op) == ["graph provisioning started", "step 0", "step 1", "step 2",
                                    "step 3", "Operation completed"]
    record = store.get(op)
    assert record is not None and (record.status, record.progress) == ("completed", 100)
    events.close()


def test_a_slow_steps_line_shows_within_the_delay_without_another_write(
        make_store: MakeStore) -> None:
    store = make_store()
    events = SafeEvents(store, progress_delay=0.05)
    op = events.open("graph_provisioning", "u1", None)
    events.call(op, "progress", "uploading the backup", 40)
    deadline = time.monotonic() + 10
    while _types(store, op) != [EVENT_PROGRESS] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _messages(store, op) == ["uploading the backup"]
    events.call(op, "progress", "uploaded", 90)
    events.call(op, "complete", {})
    assert _messages(store, op) == ["uploading the backup", "uploaded", "Operation completed"]
    events.close()


def test_writes_keep_their_order_while_the_flusher_races_them(make_store: MakeStore) -> None:
    """A delay as short as the work, so the flusher writes some operations' lines while their
    threads write their ends: no line lost, none after its end, for any of them."""
    store = make_store()
    events = SafeEvents(store, progress_delay=0.002)
    rng = random.Random(7)
    pauses = [[rng.uniform(0, 0.004) for _ in range(3)] for _ in range(60)]
    ops = [events.open("graph_provisioning", "u1", None) for _ in pauses]

    def work(op: str, waits: list[float]) -> None:
        for index, wait in enumerate(waits):
            events.call(op, "progress", f"line {index}", 10 * index)
            time.sleep(wait)
        events.call(op, "complete", {})

    threads = [threading.Thread(target=work, args=pair) for pair in zip(ops, pauses, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for op in ops:
        assert _messages(store, op) == ["line 0", "line 1", "line 2", "Operation completed"], op
    assert events.failures == 0
    events.close()


def test_close_writes_what_is_held_back(make_store: MakeStore) -> None:
    store = make_store()
    events = SafeEvents(store, progress_delay=30.0)
    op = events.open("graph_provisioning", "u1", None)
    events.call(op, "progress", "almost there", 95)
    events.close()
    assert _messages(store, op) == ["almost there"]
    events.call(op, "progress", "after close", 99)  # written at once: nobody flushes now
    assert _messages(store, op) == ["almost there", "after close"]


def test_a_store_that_is_down_fails_neither_the_lines_nor_the_end(
        caplog: pytest.LogCaptureFixture) -> None:
    store = RedisOperationStore(UNREACHABLE_URL, connect_timeout=0.2, socket_timeout=0.2)
    events = SafeEvents(store, progress_delay=0.01)
    op = events.open("graph_provisioning", "u1", None)
    events.call(op, "progress", "held back", 10)
    deadline = time.monotonic() + 10
    while events.failures < 2 and time.monotonic() < deadline:  # the open, then the flusher
        time.sleep(0.01)
    assert events.failures == 2
    events.call(op, "progress", "again", 20)
    assert events.call(op, "complete", {}) is None
    assert events.failures >= 3
    warnings = [r for r in caplog.records if "event store unavailable" in r.getMessage()]
    assert len(warnings) == 1 and op in warnings[0].getMessage()
    events.close()
    store.close()
