"""Expiry: an operation's keys live ``ttl_seconds`` after its last write, on both stores.

Time passes only through ``elapse(store, seconds)``: the in-memory store's clock is moved, and
in Redis the keys' remaining TTLs are shortened so that Redis itself expires them. What is
checked is what a user sees: the operation gone, its events gone, its subscribers ended.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from provisioning_pipelines.storage.events import (
    EVENT_STARTED,
    OperationEvent,
    RedisOperationStore,
)
from tests.storage.conftest import Elapse, MakeStore, collect

TTL = 100.0
#: Far enough below the TTL that the few milliseconds a test really takes never matter.
MOST_OF_TTL = 90.0


def test_an_operation_and_its_events_expire_after_the_ttl(
    make_store: MakeStore, elapse: Elapse, via: str,
) -> None:
    store = make_store(ttl_seconds=TTL)
    op = store.create("graph").id
    store.start(op)
    store.progress(op, "halfway", 50)

    elapse(store, MOST_OF_TTL)
    assert store.get(op) is not None
    assert len(store.events(op)) == 2

    elapse(store, TTL - MOST_OF_TTL)
    assert store.get(op) is None
    assert store.events(op) == []
    assert store.wait_events(op, None, 5.0) == []
    assert collect(store, op, keepalive=10.0, via=via) == []
    assert store.start(op) is None
    store.record_report(op, "ok")  # ignored: it brings nothing back
    assert store.get(op) is None
    store.create("graph", operation_id=op)  # the id is free again, with an empty stream
    assert store.events(op) == []


def test_every_write_renews_the_ttl(make_store: MakeStore, elapse: Elapse) -> None:
    store = make_store(ttl_seconds=TTL)
    op = store.create("graph").id
    writes: list[Callable[[], Any]] = [
        lambda: store.start(op),
        lambda: store.progress(op, "step", 40),
        lambda: store.progress(op, "no number", None),
        lambda: store.complete(op, {"graph_id": "kg1"}),
        lambda: store.record_report(op, "ok"),  # a report is a write too
    ]
    for write in writes:
        elapse(store, MOST_OF_TTL)
        assert store.get(op) is not None
        write()
    # five times most of a TTL since the create: each write gave it a whole TTL again
    record = store.get(op)
    assert record is not None
    assert (record.status, record.dagster_report) == ("completed", "ok")
    assert len(store.events(op)) == 4

    elapse(store, MOST_OF_TTL)
    assert store.get(op) is not None
    elapse(store, TTL - MOST_OF_TTL)
    assert store.get(op) is None
    assert store.events(op) == []


def test_reads_and_refused_writes_do_not_renew_the_ttl(
    make_store: MakeStore, elapse: Elapse, via: str,
) -> None:
    store = make_store(ttl_seconds=TTL)
    op = store.create("graph", user_id="usr_a").id
    store.start(op)
    done = store.complete(op, {})
    assert done is not None

    elapse(store, MOST_OF_TTL)
    assert store.get(op) is not None
    assert store.events(op)[-1] == done
    assert store.wait_events(op, None, 0.0)[-1] == done
    assert collect(store, op, via=via)[-1] == done
    assert [o.id for o in store.operations_of("usr_a")] == [op]
    assert store.progress(op, "after the end", 99) is None
    assert store.fail(op, "after the end") is None
    with pytest.raises(ValueError):
        store.create("graph", operation_id=op)

    elapse(store, TTL - MOST_OF_TTL)
    assert store.get(op) is None
    assert store.events(op) == []


def test_a_subscriber_of_an_operation_that_expires_ends(
    make_store: MakeStore, elapse: Elapse, via: str,
) -> None:
    store = make_store(ttl_seconds=TTL)
    op = store.create("graph").id
    started = store.start(op)

    def expire_once_started(item: OperationEvent | None) -> None:
        if item is not None and item.type == EVENT_STARTED:
            elapse(store, TTL)

    items = collect(store, op, keepalive=0.1, on_item=expire_once_started, via=via, limit=10.0)
    # no terminal event will come: the stream ends after at most a keepalive or two
    assert items[0] == started
    assert all(item is None for item in items[1:])
    assert len(items) <= 3
    assert store.get(op) is None


def test_expired_operations_leave_the_users_list(make_store: MakeStore, elapse: Elapse) -> None:
    store = make_store(ttl_seconds=TTL)
    gone = store.create("graph_provisioning", user_id="usr_a").id
    elapse(store, TTL / 2)
    kept = store.create("graph_provisioning", user_id="usr_a").id

    elapse(store, TTL / 2)
    assert [o.id for o in store.operations_of("usr_a")] == [kept]
    assert store.get(gone) is None


def test_an_operation_kept_alive_by_writes_stays_in_its_users_list(
    make_store: MakeStore, elapse: Elapse,
) -> None:
    store = make_store(ttl_seconds=TTL)
    op = store.create("graph_provisioning", user_id="usr_a").id
    store.start(op)
    for _ in range(3):
        elapse(store, MOST_OF_TTL)
        store.progress(op, "still working", None)
    assert [o.id for o in store.operations_of("usr_a")] == [op]

    elapse(store, TTL)
    assert store.operations_of("usr_a") == []


def test_redis_sets_one_ttl_on_every_key_and_refreshes_them_together(
    redis_store: tuple[RedisOperationStore, redis.Redis],
) -> None:
    store, client = redis_store
    op = store.create("graph", user_id="usr_a").id
    record_key = f"{store.prefix}op:{op}"
    stream_key = f"{record_key}:events"
    owner_key = f"{store.prefix}owner:usr_a:operations"
    assert client.type(record_key) == "hash"
    assert client.type(owner_key) == "zset"
    for key in (record_key, owner_key):
        assert 98_000 < client.pttl(key) <= 100_000

    store.start(op)
    assert client.type(stream_key) == "stream"
    keys = (record_key, stream_key, owner_key)
    for key in keys:
        assert 98_000 < client.pttl(key) <= 100_000
    assert client.xrange(stream_key)[0][0] == store.events(op)[0].id

    writes: list[Callable[[], Any]] = [
        lambda: store.progress(op, "step", 10),
        lambda: store.complete(op, {}),
        lambda: store.record_report(op, "ok"),
    ]
    for write in writes:
        for key, left in zip(keys, (5_000, 30_000, 60_000), strict=True):
            client.pexpire(key, left)
        write()
        ttls = [client.pttl(key) for key in keys]
        assert all(98_000 < ttl <= 100_000 for ttl in ttls), ttls

    # a refused write (the operation has ended) and a read renew nothing
    for key in keys:
        client.pexpire(key, 5_000)
    assert store.progress(op, "after the end", 99) is None
    store.get(op)
    store.events(op)
    ttls = [client.pttl(key) for key in keys]
    assert all(0 < ttl <= 5_000 for ttl in ttls), ttls


def test_a_page_stays_whole_when_operations_within_it_expired(make_store: MakeStore,
                                                              elapse: Elapse) -> None:
    """Expired operations between live ones do not shorten a page (a short page would read as
    the list's last): both stores fill it from the live ones behind."""
    store = make_store(ttl_seconds=TTL)
    kept_alive = [store.create("graph_provisioning", user_id="usr_e").id for _ in range(3)]
    expiring = [store.create("graph_provisioning", user_id="usr_e").id for _ in range(4)]
    elapse(store, MOST_OF_TTL)
    for op in kept_alive:
        store.progress(op, "still here", None)
    elapse(store, TTL - MOST_OF_TTL + 1)
    assert all(store.get(op) is None for op in expiring)
    assert {o.id for o in store.operations_of("usr_e", limit=3)} == set(kept_alive)
