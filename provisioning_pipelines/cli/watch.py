"""Following an operation from a terminal: an SSE client with a live progress bar.

Reconnects with ``Last-Event-ID`` if the connection drops, so no event is shown twice or missed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

TERMINAL = {"operation_completed", "operation_error", "operation_cancelled"}


@dataclass
class Watched:
    status: str = "pending"
    result: dict[str, Any] | None = None
    error: str | None = None
    events: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)


def stream_events(client: httpx.Client, operation_id: str, after: str | None = None
                  ) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Yield (id, type, data) for each event; ends after the stream closes."""
    headers = {"Last-Event-ID": after} if after else {}
    current: dict[str, str] = {}
    with client.stream("GET", f"/v1/operations/{operation_id}/events", headers=headers,
                       timeout=httpx.Timeout(10, read=60)) as response:
        if response.status_code != 200:
            response.read()
            raise RuntimeError(f"{response.status_code}: {response.text}")
        for line in response.iter_lines():
            if not line:
                if "event" in current:
                    yield current.get("id", ""), current["event"], json.loads(current["data"])
                current = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                current[name] = value.removeprefix(" ")


def watch(url: str, api_key: str, operation_id: str, *, console: Console | None = None,
          attempts: int = 5) -> Watched:
    console = console or Console()
    watched = Watched()
    last_id: str | None = None
    columns = (TextColumn("[bold]{task.description}"), BarColumn(),
               TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
               TextColumn("{task.fields[message]}"))
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {api_key}"}) as client, \
            Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(operation_id, total=100, message="waiting")
        for _ in range(attempts):
            try:
                for event_id, kind, data in stream_events(client, operation_id, last_id):
                    last_id = event_id
                    watched.events.append((event_id, kind, data))
                    watched.status = data.get("status", watched.status)
                    progress.update(task, completed=data.get("progress") or 0,
                                    message=data.get("message") or kind)
                    if kind == "operation_completed":
                        watched.result = data.get("result")
                    if kind in ("operation_error", "operation_cancelled"):
                        watched.error = data.get("error") or data.get("reason") or kind
                    if kind in TERMINAL:
                        return watched
                return watched
            except httpx.TransportError:
                time.sleep(0.5)  # dropped: reconnect after the last event seen
    return watched
