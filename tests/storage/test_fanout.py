"""The fan-out: many subscribers of one operation share one store reader (both stores).

The contract of ``subscribe`` itself (replay, no gap, keepalive, the end) is checked through the
fanout in ``test_event_replay.py`` and ``test_event_expiry.py``; here, what sharing adds: one
reader and one Redis connection for a thousand subscribers, the identical sequence for each, a
slow subscriber holding up no one, and an outage reaching every subscriber.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis

from provisioning_pipelines.storage.events import (
    EVENT_COMPLETED,
    EVENT_STARTED,
    EventStoreUnavailable,
    Fanout,
    OperationEvent,
    OperationStore,
    RedisOperationStore,
)
from tests.conftest import free_port
from tests.storage.conftest import REDIS_URL

SUBSCRIBERS = 1000


def _subscriber_connections(store: OperationStore) -> int | None:
    """How many ``subscribe`` connections Redis sees for this store (None: not Redis)."""
    if not isinstance(store, RedisOperationStore):
        return None
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        return sum(1 for entry in client.client_list() if entry["name"] == store.subscriber_name)
    finally:
        client.close()


async def _readers_closed(fanout: Fanout, timeout: float = 5.0) -> None:
    """Until no reader is left (one that ended still closes its connection for a moment)."""
    deadline = time.monotonic() + timeout
    while fanout.readers and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


def _wait_until_redis_sees_them_closed(store: OperationStore, timeout: float = 10.0) -> None:
    """Redis notices a closed connection a moment after the close."""
    deadline = time.monotonic() + timeout
    while _subscriber_connections(store) not in (None, 0) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_thousand_subscribers_share_one_reader_and_see_the_identical_sequence(
    store: OperationStore,
) -> None:
    op = store.create("graph").id
    store.start(op)
    joined = threading.Event()
    seen_while_watching: dict[str, int | None] = {}

    def write() -> None:
        joined.wait(30)
        for i in range(20):
            store.progress(op, f"step {i}", i * 5)
        store.complete(op, {"graph_id": "kg1"})

    async def watch() -> list[list[OperationEvent]]:
        fanout = Fanout(store, keepalive=5.0)
        ready = 0

        async def one() -> list[OperationEvent]:
            nonlocal ready
            received: list[OperationEvent] = []
            async for event in fanout.subscribe(op, None, keepalive=5.0):
                if event is None:
                    continue
                received.append(event)
                if len(received) == 1:
                    ready += 1
                    if ready == SUBSCRIBERS:  # every one has joined and read the replay
                        seen_while_watching["readers"] = fanout.readers
                        seen_while_watching["subscribers"] = fanout.subscribers
                        seen_while_watching["connections"] = await asyncio.to_thread(
                            _subscriber_connections, store)
                        joined.set()
            return received

        results = await asyncio.gather(*(one() for _ in range(SUBSCRIBERS)))
        assert fanout.subscribers == 0
        await _readers_closed(fanout)  # the reader ended with the operation, and closes
        assert fanout.readers == 0
        return results

    writer = threading.Thread(target=write)
    writer.start()
    results = asyncio.run(asyncio.wait_for(watch(), 60))
    writer.join(10)

    stored = store.events(op)
    assert len(stored) == 22 and stored[-1].type == EVENT_COMPLETED
    assert all(received == stored for received in results)
    assert seen_while_watching["readers"] == 1
    assert seen_while_watching["subscribers"] == SUBSCRIBERS
    if isinstance(store, RedisOperationStore):
        assert seen_while_watching["connections"] == 1  # not one per subscriber
    _wait_until_redis_sees_them_closed(store)
    assert _subscriber_connections(store) in (None, 0)


def test_the_last_subscriber_leaving_stops_the_reader_of_a_live_operation(
    store: OperationStore,
) -> None:
    op = store.create("graph").id
    store.start(op)

    async def watch() -> tuple[int, int | None]:
        fanout = Fanout(store, keepalive=5.0)
        streams = [fanout.subscribe(op, None, keepalive=5.0) for _ in range(3)]
        for stream in streams:
            await anext(stream)
        watching = (fanout.readers, await asyncio.to_thread(_subscriber_connections, store))
        for stream in streams:  # the clients go away before the operation ends
            await stream.aclose()
        await _readers_closed(fanout)
        assert fanout.readers == 0 and fanout.subscribers == 0
        return watching

    readers, connections = asyncio.run(asyncio.wait_for(watch(), 30))
    assert readers == 1 and connections in (None, 1)
    _wait_until_redis_sees_them_closed(store)
    assert _subscriber_connections(store) in (None, 0)


def test_a_slow_subscriber_holds_up_neither_the_reader_nor_the_others(
    store: OperationStore,
) -> None:
    op = store.create("graph").id
    store.start(op)

    async def watch() -> tuple[list[OperationEvent], list[list[OperationEvent]]]:
        fanout = Fanout(store, keepalive=5.0)
        release_slow = asyncio.Event()

        async def slow() -> list[OperationEvent]:
            received: list[OperationEvent] = []
            async for event in fanout.subscribe(op, None, keepalive=5.0):
                if event is not None:
                    received.append(event)
                    await release_slow.wait()  # takes nothing more until the others are done
            return received

        async def fast() -> list[OperationEvent]:
            return [event async for event in fanout.subscribe(op, None, keepalive=5.0)
                    if event is not None]

        slow_task = asyncio.create_task(slow())
        await asyncio.sleep(0)
        writer = asyncio.create_task(asyncio.to_thread(write_all))
        fast_results = await asyncio.gather(*(fast() for _ in range(10)))
        await writer
        stuck_at = slow_task.done()
        release_slow.set()
        slow_received = await slow_task
        assert not stuck_at
        return slow_received, fast_results

    def write_all() -> None:
        for i in range(50):
            store.progress(op, f"step {i}", i)
        store.complete(op, {})

    slow_received, fast_results = asyncio.run(asyncio.wait_for(watch(), 60))
    stored = store.events(op)
    assert all(received == stored for received in fast_results)
    assert slow_received == stored  # it lagged, then caught up on the same sequence


def test_subscribers_joining_late_and_resuming_share_the_reader(store: OperationStore) -> None:
    op = store.create("graph").id
    store.start(op)
    for i in range(5):
        store.progress(op, f"step {i}", i)
    history = store.events(op)

    async def watch() -> tuple[list[OperationEvent], list[OperationEvent], int]:
        fanout = Fanout(store, keepalive=5.0)
        first = fanout.subscribe(op, None, keepalive=5.0)
        head = [await anext(first) for _ in range(6)]
        resumed = fanout.subscribe(op, history[2].id, keepalive=5.0)
        resumed_head = await anext(resumed)
        readers = fanout.readers
        await asyncio.to_thread(store.complete, op, {})
        rest = [event async for event in first]
        resumed_rest = [event async for event in resumed]
        return head + rest, [resumed_head, *resumed_rest], readers

    everything, resumed, readers = asyncio.run(asyncio.wait_for(watch(), 30))
    stored = store.events(op)
    assert readers == 1
    assert everything == stored
    assert resumed == stored[3:]


@pytest.mark.redis
def test_redis_stopping_ends_every_subscriber_with_unavailable_then_a_new_one_reads_again(
    tmp_path: Path,
) -> None:
    """A private ``redis-server``, killed by its PID: every subscriber gets the outage at once
    (the API turns it into a ``stream_error``), and once Redis is back a new subscriber of the
    same fanout starts a fresh reader."""
    port = free_port()

    def start_redis() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(["redis-server", "--port", str(port), "--save", "",
                                    "--appendonly", "no", "--dir", str(tmp_path)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                return process
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    server = start_redis()
    store = RedisOperationStore(f"redis://127.0.0.1:{port}/0", socket_timeout=1.0)
    try:
        op = store.create("graph").id
        store.start(op)
        fanout = Fanout(store, keepalive=0.5)

        async def watch() -> list[BaseException | list[OperationEvent | None]]:
            started = 0

            async def one() -> list[OperationEvent | None]:
                nonlocal started
                received: list[OperationEvent | None] = []
                async for event in fanout.subscribe(op, None, keepalive=0.5):
                    received.append(event)
                    if len(received) == 1:
                        started += 1
                        if started == 50:
                            server.kill()
                            server.wait(10)
                return received

            return await asyncio.gather(*(one() for _ in range(50)), return_exceptions=True)

        outcomes = asyncio.run(asyncio.wait_for(watch(), 30))
        assert all(isinstance(outcome, EventStoreUnavailable) for outcome in outcomes)
        assert fanout.readers == 0 and fanout.subscribers == 0

        server = start_redis()  # empty: the operation is gone, so a new reader ends at once
        op = store.create("graph").id
        store.start(op)
        store.complete(op, {})

        async def again() -> list[OperationEvent | None]:
            return [event async for event in fanout.subscribe(op, None, keepalive=0.5)]

        assert [event.type for event in asyncio.run(again()) if event] == [EVENT_STARTED,
                                                                           EVENT_COMPLETED]
    finally:
        store.close()
        server.kill()
        server.wait(10)


def test_wake_ends_the_subscribers_whose_stop_is_true(store: OperationStore) -> None:
    """How the API ends its streams at shutdown: no event comes, yet they end at once."""
    op = store.create("graph").id
    store.start(op)

    async def watch() -> list[OperationEvent | None]:
        fanout = Fanout(store, keepalive=30.0)
        stopping = False
        stream = fanout.subscribe(op, None, keepalive=30.0, stop=lambda: stopping)
        received = [await anext(stream)]
        waiting = asyncio.create_task(anext(stream))
        await asyncio.sleep(0.05)
        stopping = True
        fanout.wake(op)
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiting, 5)
        return received

    assert [event.type for event in asyncio.run(watch()) if event] == [EVENT_STARTED]
