"""Stores of both kinds for the contract tests: the in-memory twin and real Redis.

Redis stores use a fresh key prefix per test and delete their keys afterwards. When Redis is not
reachable their tests are skipped locally, and fail under ``CI=true`` so a broken CI service is
noticed.

Time passes for a store only when a test says so (``elapse``): the in-memory store runs on a
``FakeClock``, and in Redis the keys' remaining TTLs are shortened so that Redis itself expires
them. No test sleeps through a TTL.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from provisioning_pipelines.storage.events import (
    Fanout,
    InMemoryOperationStore,
    OperationEvent,
    OperationStore,
    RedisOperationStore,
)

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
UNREACHABLE_URL = "redis://127.0.0.1:1/0"

MakeStore = Callable[..., OperationStore]
Elapse = Callable[[OperationStore, float], None]


class FakeClock:
    """A monotonic clock that moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@functools.cache
def redis_reachable() -> bool:
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.ConnectionError, redis.TimeoutError):
        return False


def require_redis() -> None:
    if redis_reachable():
        return
    message = f"Redis is not reachable at {REDIS_URL}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: Redis tests must run)")
    pytest.skip(message)


def delete_prefix(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def make_store(request: pytest.FixtureRequest) -> Iterator[MakeStore]:
    """A factory (so a test can pick a TTL) of stores of the parametrized kind."""
    kind = request.param
    prefix = f"test:{uuid.uuid4().hex}:"
    if kind == "redis":
        require_redis()
    created: list[OperationStore] = []

    def make(ttl_seconds: float = 86400) -> OperationStore:
        store: OperationStore
        if kind == "redis":
            store = RedisOperationStore(REDIS_URL, prefix=prefix, ttl_seconds=ttl_seconds)
        else:
            store = InMemoryOperationStore(ttl_seconds=ttl_seconds, clock=FakeClock())
        created.append(store)
        return store

    yield make
    for store in created:
        store.close()
    if kind == "redis":
        delete_prefix(prefix)


@pytest.fixture
def store(make_store: MakeStore) -> OperationStore:
    return make_store()


@pytest.fixture
def redis_store() -> Iterator[tuple[RedisOperationStore, redis.Redis]]:
    """A Redis store with a raw client on the same database, for checking keys directly."""
    require_redis()
    prefix = f"test:{uuid.uuid4().hex}:"
    store = RedisOperationStore(REDIS_URL, prefix=prefix, ttl_seconds=100)
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    yield store, client
    store.close()
    client.close()
    delete_prefix(prefix)


def _elapse_in_redis(store: RedisOperationStore, seconds: float) -> None:
    """Shorten the remaining TTL of every key of ``store`` by ``seconds``.

    A key whose TTL runs out is left 1 ms, then awaited until Redis has expired it: the expiry
    is Redis's own (a PEXPIRE of 0 or less would delete the key instead). A key without a TTL is
    left alone, as time would leave it.
    """
    step = int(seconds * 1000)
    client = redis.Redis.from_url(store.url, decode_responses=True)
    try:
        keys = list(client.scan_iter(match=f"{store.prefix}*", count=1000))
        expiring = []
        for key in keys:
            left = client.pttl(key)
            if left < 0:  # gone meanwhile, or no TTL
                continue
            if left > step:
                client.pexpire(key, left - step)
            else:
                client.pexpire(key, 1)
                expiring.append(key)
        deadline = time.monotonic() + 5.0
        while expiring and client.exists(*expiring):
            assert time.monotonic() < deadline, f"Redis did not expire {expiring}"
            time.sleep(0.001)
    finally:
        client.close()


@pytest.fixture
def elapse() -> Elapse:
    """``elapse(store, seconds)``: let that much time pass for everything the store holds."""

    def elapse(store: OperationStore, seconds: float) -> None:
        if isinstance(store, RedisOperationStore):
            _elapse_in_redis(store, seconds)
        elif isinstance(store, InMemoryOperationStore) and isinstance(store.clock, FakeClock):
            store.clock.advance(seconds)
        else:
            raise TypeError(f"time cannot be moved for {store!r}")

    return elapse


@pytest.fixture(params=["store", "fanout"])
def via(request: pytest.FixtureRequest) -> str:
    """Subscribe on the store itself, or through the API's per-process ``Fanout`` over it."""
    return str(request.param)


def collect(
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
