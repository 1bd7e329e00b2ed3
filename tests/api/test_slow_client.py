"""A viewer whose socket takes nothing is dropped after ``SLOW_CLIENT_TIMEOUT_SECONDS``, at the
ASGI level (a real stuck socket needs megabytes of events to fill the kernel's buffers)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from provisioning_pipelines import metrics
from provisioning_pipelines.api import operations


def test_a_client_taking_nothing_is_dropped_and_its_stream_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(operations, "SLOW_CLIENT_TIMEOUT_SECONDS", 0.2)
    closed = asyncio.Event()
    sent: list[dict[str, Any]] = []

    async def events() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"event: operation_progress\r\ndata: {}\r\n\r\n"
                await asyncio.sleep(0.01)
        finally:
            closed.set()

    async def run() -> float:
        stuck = asyncio.Event()  # never set: the client's socket is full

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and len(sent) > 3:
                await stuck.wait()

        async def receive() -> dict[str, Any]:
            await stuck.wait()  # the client never hangs up
            return {"type": "http.disconnect"}

        before = metrics.SLOW_CLIENTS._value.get()
        started = asyncio.get_running_loop().time()
        scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
        await asyncio.wait_for(operations.SseStream(events(), ping=None)(scope, receive, send),
                               10)
        await asyncio.wait_for(closed.wait(), 5)
        assert metrics.SLOW_CLIENTS._value.get() == before + 1
        return asyncio.get_running_loop().time() - started

    took = asyncio.run(run())
    assert 0.2 <= took < 5  # dropped after the timeout, not before, not never
    assert len(sent) == 4  # the response start, three events, then the stuck send
