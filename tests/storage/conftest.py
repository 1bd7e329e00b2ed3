"""Stores of both kinds for the contract tests: the in-memory twin and real Redis.

Redis stores use a fresh key prefix per test and delete their keys afterwards. When Redis is not
reachable their tests are skipped locally, and fail under ``CI=true`` so a broken CI service is
noticed.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from provisioning_pipelines.storage.events import (
    InMemoryOperationStore,
    OperationStore,
    RedisOperationStore,
)

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
UNREACHABLE_URL = "redis://127.0.0.1:1/0"

MakeStore = Callable[..., OperationStore]


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
            store = InMemoryOperationStore(ttl_seconds=ttl_seconds)
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
