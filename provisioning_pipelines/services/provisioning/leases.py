"""Holding claims alive: one heartbeat per process renews every claim this process works on.

A claim's lease is short (``PROVISIONING_CLAIM_LEASE_SECONDS``, 15 s), so a worker that dies is
noticed within seconds; a worker that lives renews its leases every third of that. One thread per
process and database renews all of its claims, a subscription's (provisioning) and a graph's
(backup, deletion, restore), in one ``UPDATE ... WHERE token IN (...)`` per table and beat, so a
burst of work costs a statement per beat, not a thread each. A renewal that finds a claim gone
(another worker took it over) marks it lost; the worker's next fenced write raises as before.
``release_all`` gives every claim of the process back at once, for a shutdown that cannot wait.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import Graph, Subscription, utcnow

logger = logging.getLogger("provisioning_pipelines.leases")

#: (the table's model, its token column, its lease column, a condition for a live claim)
_TABLES: dict[str, tuple[Any, Any, str, Any]] = {
    "subscription": (Subscription, Subscription.claim_token, "lease_expires_at",
                     Subscription.status == "provisioning"),
    "graph": (Graph, Graph.lifecycle_token, "lifecycle_lease_expires_at", None),
}


class LeaseKeeper:
    """Renews the leases of the claims held in this process, while they are held."""

    def __init__(self, database: Database, lease_seconds: float) -> None:
        self.database = database
        self.lease_seconds = lease_seconds
        self.interval = max(lease_seconds / 3, 0.05)
        self._held: dict[tuple[str, str], int] = {}  # (table, token) -> how many holders
        self._lost: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self.beats = 0

    @contextlib.contextmanager
    def holding(self, token: str | None, table: str = "subscription") -> Iterator[None]:
        """Keep the claim's lease alive for the duration of the block (None: nothing held)."""
        if token is None:
            yield
            return
        key = (table, token)
        with self._lock:
            self._held[key] = self._held.get(key, 0) + 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="claim-heartbeat",
                                                daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                left = self._held.get(key, 1) - 1
                if left:
                    self._held[key] = left
                else:
                    self._held.pop(key, None)
                    self._lost.discard(key)

    def lost(self, token: str, table: str = "subscription") -> bool:
        with self._lock:
            return (table, token) in self._lost

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._held:
                    self._thread = None
                    return
                self._wake.wait(self.interval)
                held = list(self._held)
            if held:
                self._renew(held)

    def _renew(self, held: list[tuple[str, str]]) -> None:
        expires = utcnow() + timedelta(seconds=self.lease_seconds)
        gone: set[tuple[str, str]] = set()
        try:
            with self.database.session() as session:
                for table, (model, token_column, lease, live) in _TABLES.items():
                    tokens = [token for kind, token in held if kind == table]
                    if not tokens:
                        continue
                    statement = update(model).where(token_column.in_(tokens))
                    if live is not None:
                        statement = statement.where(live)
                    renewed = session.execute(
                        statement.values({lease: expires}).returning(token_column)
                        .execution_options(synchronize_session=False)).scalars().all()
                    gone |= {(table, token) for token in set(tokens) - set(renewed)}
        except Exception as exc:  # the database is down: the next beat tries again
            logger.warning("could not renew %d claim(s): %s: %s", len(held),
                           type(exc).__name__, exc)
            return
        self.beats += 1
        if gone:
            with self._lock:
                self._lost |= gone & set(self._held)

    def release_all(self) -> int:
        """Let every claim held here lapse now (a shutdown that cannot wait); returns how many."""
        with self._lock:
            held = list(self._held)
        if not held:
            return 0
        past = utcnow() - timedelta(seconds=1)
        with self.database.session() as session:
            for table, (model, token_column, lease, _live) in _TABLES.items():
                tokens = [token for kind, token in held if kind == table]
                if tokens:
                    session.execute(update(model).where(token_column.in_(tokens))
                                    .values({lease: past})
                                    .execution_options(synchronize_session=False))
        return len(held)


_keepers: dict[tuple[str, float], LeaseKeeper] = {}
_keepers_lock = threading.Lock()


def keeper(database: Database, lease_seconds: float) -> LeaseKeeper:
    """The process-wide keeper for one database and lease."""
    key = (database.url, lease_seconds)
    with _keepers_lock:
        found = _keepers.get(key)
        if found is None:
            found = _keepers[key] = LeaseKeeper(database, lease_seconds)
        return found


def all_keepers() -> list[LeaseKeeper]:
    with _keepers_lock:
        return list(_keepers.values())
