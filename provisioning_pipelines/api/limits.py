"""How much work one user may have running at once through the API without paying for it.

Restores, on-demand backups and subgraph creations cost disk and a host's time but no payment,
so each has a per-user limit (a setting); one more is answered 429 naming the setting, and the
client tries again when one of its operations ends. What a payment starts (a provisioning from
the billing webhook) and what an operator or a schedule starts never passes through here.

"Running" is an operation of that kind that is not finished and was written to within
``STALE_AFTER``: an operation whose worker died stops counting then, instead of holding the
user's slot for the operation's whole TTL. The count and the opening of the new operation happen
under one lock per user in this process; two API workers could each admit one over the limit at
the same instant, so the bound with N workers is the limit plus N - 1.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from starlette.concurrency import run_in_threadpool

from provisioning_pipelines.errors import TooManyInFlight
from provisioning_pipelines.settings import Settings
from provisioning_pipelines.storage.events import OperationStore

#: An unfinished operation not written to for this long no longer counts as running.
STALE_AFTER = timedelta(hours=1)
#: How many of a user's newest operations are looked at (far above any limit).
LOOK_AT = 200


@dataclass(frozen=True)
class Limit:
    variable: str
    allowed: int
    what: str


def limits_of(settings: Settings) -> dict[str, Limit]:
    """The operation kinds that are limited, with the setting that says how far."""
    return {
        "graph_restore": Limit("MAX_RESTORES_IN_FLIGHT_PER_USER",
                               settings.max_restores_in_flight, "restores"),
        "graph_backup": Limit("MAX_BACKUPS_IN_FLIGHT_PER_USER",
                              settings.max_backups_in_flight, "backups"),
        "subgraph_creation": Limit("MAX_SUBGRAPH_CREATIONS_IN_FLIGHT_PER_USER",
                                   settings.max_subgraph_creations_in_flight,
                                   "subgraph creations"),
    }


@dataclass
class InFlightLimits:
    settings: Settings
    store: OperationStore
    #: Opens an operation: ``(kind, user_id) -> operation id`` (the executor's).
    open_operation: Callable[[str, str], str]
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    async def open(self, kind: str, user_id: str) -> str:
        """A new operation of ``kind`` for the user, or 429 if they have enough running."""
        limit = limits_of(self.settings).get(kind)
        if limit is None:
            return await run_in_threadpool(self.open_operation, kind, user_id)
        lock = self._locks.setdefault(user_id, asyncio.Lock())
        async with lock:
            running = await run_in_threadpool(self.running, kind, user_id)
            if running >= limit.allowed:
                raise TooManyInFlight(
                    f"{limit.variable}: {running} {limit.what} of yours are running already "
                    f"(the limit is {limit.allowed}); try again when one has finished",
                    field=limit.variable)
            operation_id = await run_in_threadpool(self.open_operation, kind, user_id)
        if not lock.locked():
            self._locks.pop(user_id, None)
        return operation_id

    def running(self, kind: str, user_id: str, *, now: datetime | None = None) -> int:
        since = (now or datetime.now(UTC)) - STALE_AFTER
        return sum(1 for operation in self.store.operations_of(user_id, limit=LOOK_AT)
                   if operation.kind == kind and not operation.is_terminal
                   and operation.updated_at >= since)
