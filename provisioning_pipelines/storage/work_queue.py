"""Work handed from the API processes to the provisioning processes, through Redis.

A list of work items (a flow's name, its config, the operation it reports to). A provisioner
takes an item by moving it, in one command, onto a list of its own (``taken``), and removes it
from there when the flow has ended; a provisioner that starts again under the same name (the
supervisor restarts a dead one with its name) first puts back whatever its predecessor had
taken, so an item outlives the process that took it. Nothing here decides that work is done
once: the flow's claim does (a second run of an item finds its work done, or held).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

#: How long a provisioner's wait for work blocks before it looks whether it should stop.
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class WorkItem:
    flow: str
    config: dict[str, Any]
    operation_id: str | None

    def encode(self) -> str:
        return json.dumps({"flow": self.flow, "config": self.config,
                           "operation_id": self.operation_id}, sort_keys=True)

    @classmethod
    def decode(cls, raw: str) -> WorkItem:
        data = json.loads(raw)
        return cls(flow=data["flow"], config=data["config"], operation_id=data["operation_id"])


class WorkQueue:
    """The queue under ``prefix`` on one Redis."""

    def __init__(self, url: str, *, prefix: str) -> None:
        self._redis = redis.Redis.from_url(url, decode_responses=True)
        self.key = f"{prefix}provisioning:work"
        self._prefix = prefix

    def taken_key(self, name: str) -> str:
        return f"{self._prefix}provisioning:taken:{name}"

    def push(self, item: WorkItem) -> None:
        self._redis.rpush(self.key, item.encode())

    def take(self, name: str, timeout: float = POLL_SECONDS) -> tuple[str, WorkItem] | None:
        """The oldest item, now on ``name``'s taken list (its raw text, to ``done`` it), or None
        after ``timeout`` seconds with nothing to do."""
        raw = self._redis.blmove(self.key, self.taken_key(name), timeout, "LEFT", "RIGHT")
        return None if raw is None else (raw, WorkItem.decode(raw))

    def done(self, name: str, raw: str) -> None:
        self._redis.lrem(self.taken_key(name), 1, raw)

    def give_back(self, name: str) -> int:
        """Put every item ``name`` took and did not finish back at the head of the queue; how
        many."""
        moved = 0
        while self._redis.lmove(self.taken_key(name), self.key, "RIGHT", "LEFT") is not None:
            moved += 1
        return moved

    def waiting(self) -> int:
        return int(self._redis.llen(self.key))

    def close(self) -> None:
        self._redis.close()
