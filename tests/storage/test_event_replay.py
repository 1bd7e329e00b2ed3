"""Replay and live tailing of an operation's events, on both stores, each subscription read on
the store itself and through the API's per-process ``Fanout`` (the ``via`` fixture).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from provisioning_pipelines.storage.events import (
    EVENT_COMPLETED,
    EVENT_STARTED,
    OperationEvent,
    OperationStore,
    event_id_key,
)
from tests.storage.conftest import collect


def _later(delay: float, action: Callable[[], Any]) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


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
            collect(store, op, bad, via=via)


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

    items = collect(store, op, on_item=on_item, via=via)
    writer.join(10)
    received = [item for item in items if item is not None]
    stored = store.events(op)
    assert len(stored) == 1 + 30 + 150 + 1
    assert [e.id for e in received] == [e.id for e in stored]
    assert received == stored
    assert received[-1].type == EVENT_COMPLETED

    # resuming from a Last-Event-ID replays only what follows it, then ends
    resumed = collect(store, op, stored[100].id, via=via)
    assert resumed == stored[101:]


def test_subscribe_keepalive_yields_none_when_idle(
    store: OperationStore, via: str,
) -> None:
    op = store.create("graph").id
    first = store.start(op)
    assert first is not None
    writer = _later(0.45, lambda: store.complete(op, {"graph_id": "kg1"}))
    items = collect(store, op, keepalive=0.1, via=via)
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

    items = collect(store, op, keepalive=10.0, on_item=on_item, via=via)
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
    assert collect(store, "op_unknown", keepalive=10.0, via=via) == []

    op = store.create("graph").id
    store.start(op)
    done = store.fail(op, "boom")
    assert done is not None
    assert collect(store, op, done.id, keepalive=10.0, via=via) == []  # terminal already seen
    assert collect(store, op, keepalive=10.0, via=via)[-1] == done
    assert time.monotonic() - started < 2.0
