"""SSE viewers whose sockets stop reading, over real sockets against a real uvicorn server.

``test_slow_client.py`` checks the drop at the ASGI level; here the kernel's buffers really
fill: an operation holds megabytes of events, and each viewer announces a tiny receive buffer
and never reads. What a stuck viewer holds is bounded by uvicorn's flow control (a send waits
while its transport holds more than its high-water mark), never the stream it has not taken;
and after ``SLOW_CLIENT_TIMEOUT_SECONDS`` it is dropped.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from provisioning_pipelines import metrics
from provisioning_pipelines.api import operations
from tests.api.helpers import Api
from tests.factories import new_customer

EVENTS = 400
EVENT_BYTES = 16 * 1024  # 6.25 MiB of events in all
VIEWERS = 12


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def wait_until(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def stuck_viewer(url: str, api_key: str, operation_id: str) -> socket.socket:
    """A viewer that asks for the stream and never reads a byte of it."""
    where = urlsplit(url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((where.hostname, where.port))
    sock.sendall(f"GET /v1/operations/{operation_id}/events HTTP/1.1\r\n"
                 f"Host: {where.netloc}\r\nAuthorization: Bearer {api_key}\r\n\r\n".encode())
    return sock


def test_viewers_that_stop_reading_hold_little_and_are_dropped(
    api: Api, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(operations, "SLOW_CLIENT_TIMEOUT_SECONDS", 1.0)
    user = new_customer(api.database)
    operation_id = api.executor.open_operation("graph_provisioning", user.user_id)
    api.executor.store.start(operation_id)
    for index in range(EVENTS):
        api.executor.store.progress(operation_id, f"{index:05d}" + "x" * EVENT_BYTES)
    dropped = metrics.SLOW_CLIENTS._value.get()
    streams = metrics.STREAMS._value.get()
    before = rss_mib()

    viewers = [stuck_viewer(api.url, user.api_key, operation_id) for _ in range(VIEWERS)]
    peak = before
    try:
        def all_dropped() -> bool:
            nonlocal peak
            peak = max(peak, rss_mib())
            return metrics.SLOW_CLIENTS._value.get() >= dropped + VIEWERS

        wait_until(all_dropped)
        wait_until(lambda: metrics.STREAMS._value.get() == streams)
    finally:
        for sock in viewers:
            sock.close()
    # Had each viewer buffered the stream it did not take, they would hold 12 times 6.25 MiB.
    assert peak - before < 30, f"RSS {before:.0f} MiB before, peak {peak:.0f} MiB"
