"""Holding claims alive: one heartbeat per process renews every claim this process works on.

A claim's lease is short (``PROVISIONING_CLAIM_LEASE_SECONDS``, 15 s), so a worker that dies is
noticed within seconds; a worker that lives renews its leases every third of that. One thread per
process and database renews all of its claims in one ``UPDATE ... WHERE claim_token IN (...)``,
so a burst of provisionings costs one statement per beat, not one thread each. A renewal that
finds a claim gone (another worker took it over) marks it lost; the worker's next fenced write
raises ``ClaimLost`` as before. ``release_all`` gives every claim of the process back at once,
for a shutdown that cannot wait for its work to finish.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from datetime import timedelta

from sqlalchemy import update

from provisioning_pipelines.services.claims import Claim
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import Subscription, utcnow

logger = logging.getLogger("provisioning_pipelines.leases")


class LeaseKeeper:
    """Renews the leases of the claims held in this process, while they are held."""

    def __init__(self, database: Database, lease_seconds: float) -> None:
        self.database = database
        self.lease_seconds = lease_seconds
        self.interval = max(lease_seconds / 3, 0.05)
        self._held: dict[str, int] = {}  # claim token -> how many holders
        self._lost: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self.beats = 0

    @contextlib.contextmanager
    def holding(self, claim: Claim) -> Iterator[None]:
        """Keep ``claim``'s lease alive for the duration of the block."""
        if claim.token is None:  # already active: nothing is held
            yield
            return
        with self._lock:
            self._held[claim.token] = self._held.get(claim.token, 0) + 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="claim-heartbeat",
                                                daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                left = self._held.get(claim.token, 1) - 1
                if left:
                    self._held[claim.token] = left
                else:
                    self._held.pop(claim.token, None)
                    self._lost.discard(claim.token)

    def lost(self, claim: Claim) -> bool:
        with self._lock:
            return claim.token in self._lost

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._held:
                    self._thread = None
                    return
                self._wake.wait(self.interval)
                tokens = list(self._held)
            if tokens:
                self._renew(tokens)

    def _renew(self, tokens: list[str]) -> None:
        now = utcnow()
        try:
            with self.database.session() as session:
                renewed = session.execute(
                    update(Subscription)
                    .where(Subscription.claim_token.in_(tokens),
                           Subscription.status == "provisioning")
                    .values(lease_expires_at=now + timedelta(seconds=self.lease_seconds))
                    .returning(Subscription.claim_token)
                    .execution_options(synchronize_session=False)
                ).scalars().all()
        except Exception as exc:  # the database is down: the next beat tries again
            logger.warning("could not renew %d claim(s): %s: %s", len(tokens),
                           type(exc).__name__, exc)
            return
        self.beats += 1
        gone = set(tokens) - set(renewed)
        if gone:
            with self._lock:
                self._lost |= gone & set(self._held)

    def release_all(self) -> int:
        """Let every claim held here lapse now (a shutdown that cannot wait); returns how many."""
        with self._lock:
            tokens = list(self._held)
        if not tokens:
            return 0
        with self.database.session() as session:
            session.execute(
                update(Subscription).where(Subscription.claim_token.in_(tokens))
                .values(lease_expires_at=utcnow() - timedelta(seconds=1))
                .execution_options(synchronize_session=False))
        return len(tokens)


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
