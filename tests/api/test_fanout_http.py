"""A thousand viewers of one operation, over real HTTP, on a real ``serve`` process (PostgreSQL,
Redis): no stream is cut, all see the identical sequence, and the server holds one Redis
connection for them, not a thousand."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import httpx
import pytest
import redis

from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.events import EVENT_COMPLETED, RedisOperationStore
from tests.conftest import REDIS_URL
from tests.factories import new_customer
from tests.serving import api_process, server_env

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

VIEWERS = 1000

Event = tuple[str, str, dict[str, object]]


async def _view(client: httpx.AsyncClient, operation_id: str, joined: asyncio.Event,
                count: list[int]) -> list[Event]:
    """Every event of one stream, in order; raises if the body is cut."""
    events: list[Event] = []
    current: dict[str, str] = {}
    async with client.stream("GET", f"/v1/operations/{operation_id}/events") as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith(":"):
                continue
            if line:
                field, _, value = line.partition(":")
                current[field] = value.removeprefix(" ")
                continue
            if "event" in current:
                events.append((current["id"], current["event"], json.loads(current["data"])))
                if len(events) == 1:
                    count[0] += 1
                    if count[0] == VIEWERS:
                        joined.set()
            current = {}
    return events


def test_a_thousand_viewers_of_one_operation_see_every_event_and_no_stream_is_cut(
    postgres_database: Database, postgres_app_url: str, redis_prefix: str, tmp_path: Path,
) -> None:
    user = new_customer(postgres_database)
    store = RedisOperationStore(REDIS_URL, prefix=redis_prefix)
    operation_id = store.create("graph", user_id=user.user_id).id
    store.start(operation_id)
    env = server_env(tmp_path, DATABASE_URL=postgres_app_url, REDIS_URL=REDIS_URL,
                     REDIS_KEY_PREFIX=redis_prefix)
    monitor = redis.Redis.from_url(REDIS_URL, decode_responses=True)

    def readers() -> int:
        return sum(1 for entry in monitor.client_list()
                   if entry["name"] == store.subscriber_name)

    def write() -> None:
        for i in range(20):
            store.progress(operation_id, f"step {i}", i * 5)
        store.complete(operation_id, {"graph_id": "kg_many"})

    async def watch(url: str) -> tuple[list[list[Event] | BaseException], int]:
        joined = asyncio.Event()
        count = [0]
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits,
                                     headers={"Authorization": f"Bearer {user.api_key}"}
                                     ) as client:
            views = [asyncio.create_task(_view(client, operation_id, joined, count))
                     for _ in range(VIEWERS)]
            await asyncio.wait_for(joined.wait(), 120)  # every viewer has its first event
            connections = await asyncio.to_thread(readers)
            writer = threading.Thread(target=write)
            writer.start()
            results = await asyncio.gather(*views, return_exceptions=True)
            writer.join(30)
        return results, connections

    try:
        with api_process(env, tmp_path / "serve.log") as server:
            results, connections = asyncio.run(watch(server.url))
        stored = [(event.id, event.type) for event in store.events(operation_id)]
    finally:
        monitor.close()
        store.close()

    cut = [result for result in results if isinstance(result, BaseException)]
    assert cut == []
    assert len(stored) == 22 and stored[-1][1] == EVENT_COMPLETED
    sequences = {tuple((id_, type_) for id_, type_, _ in result) for result in results
                 if not isinstance(result, BaseException)}
    assert sequences == {tuple(stored)}  # all thousand saw exactly what the store holds
    assert connections == 1
