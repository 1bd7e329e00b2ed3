"""Following an operation from a terminal: an SSE client with a live progress bar.

Reconnects with ``Last-Event-ID`` if the connection drops or the server ends the stream early
(``stream_error``), so no event is shown twice or missed.
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

from provisioning_pipelines.errors import NotFound, ProvisioningError, Unauthorized

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
            raise _refusal(response, operation_id)
        for line in response.iter_lines():
            if not line:
                if "event" in current:
                    yield current.get("id", ""), current["event"], json.loads(current["data"])
                current = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                current[name] = value.removeprefix(" ")


def _refusal(response: httpx.Response, operation_id: str) -> ProvisioningError:
    """The API's answer as the error a user reads (one line)."""
    try:
        message = str(response.json().get("message", response.text))
    except ValueError:
        message = response.text.strip()[:200]
    if response.status_code == 401:
        return Unauthorized(f"api key refused: {message}", field="api_key")
    if response.status_code == 404:
        return NotFound(f"no operation {operation_id!r} for this api key", field="operation_id")
    return ProvisioningError(f"the API answered {response.status_code}: {message}")


def watch(url: str, api_key: str, operation_id: str, *, console: Console | None = None,
          attempts: int = 5) -> Watched:
    console = console or Console(soft_wrap=True)
    watched = Watched()
    last_id: str | None = None
    columns = (TextColumn("[bold]{task.description}"), BarColumn(),
               TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
               TextColumn("{task.fields[message]}"))
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {api_key}"}) as client, \
            Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(operation_id, total=100, message="waiting")
        for attempt in range(attempts):
            try:
                for event_id, kind, data in stream_events(client, operation_id, last_id):
                    if kind == "stream_error":  # the server asks us to come back shortly
                        raise httpx.ReadError(data.get("message", "stream ended early"))
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
                if attempt == attempts - 1:
                    raise  # the API is not there (any more)
                time.sleep(0.5 * (attempt + 1))  # dropped: reconnect after the last event seen
    return watched
