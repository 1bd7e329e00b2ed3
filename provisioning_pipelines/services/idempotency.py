"""``Idempotency-Key``: a retried POST gets the first answer again, and nothing is done twice.

A key is a user's (two users' equal keys never meet) and lives ``IDEMPOTENCY_KEY_HOURS``. The
first request with it inserts the key's row (``running``, held by the request's token, with a
lease); the primary key makes two concurrent first requests one winner, and the other is told
the key is in use. When the first is answered, its answer (status and body) is kept and every
retry with the same request gets it back; a retry with another request (another path or body)
is refused, since the client has mixed up its keys. Which answers are kept is the API's choice
(``api/idempotency.py``); one that is not is released, and the next retry runs afresh. A
request whose worker died never finishes its row: once the lease lapses, a retry takes it over.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from provisioning_pipelines.errors import Conflict
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import IdempotencyKey, utcnow

#: Seconds a running request holds its key before a retry may take it over (the requests
#: behind keys only check and start work: they answer within a second or two).
LEASE_SECONDS = 60.0


class KeyReused(Conflict):
    code = "idempotency_key_reused"


class KeyInUse(Conflict):
    code = "idempotency_key_in_use"

    def __init__(self, message: str, *, retry_after: int, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Answer:
    """The first answer to the key's request, to be given again."""

    status: int
    body: str


@dataclass(frozen=True)
class Held:
    """The key is this request's to run: ``finish`` or ``release`` it with the token."""

    token: str


def begin(database: Database, *, user_id: str, key: str, fingerprint: str, hours: float,
          now: datetime | None = None) -> Answer | Held:
    """Hold the key for this request, or the first answer to give again; 409 ``reused`` for
    another request under the key, 409 ``in_use`` while the first still runs."""
    for _ in range(3):
        at = now or utcnow()
        try:
            with database.session() as session:
                row = session.scalar(select(IdempotencyKey).where(
                    IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
                    .with_for_update())
                if row is None or row.expires_at <= at:
                    if row is not None:
                        session.delete(row)
                        session.flush()
                    token = uuid.uuid4().hex
                    session.add(IdempotencyKey(
                        user_id=user_id, key=key, fingerprint=fingerprint, status="running",
                        token=token, locked_until=at + timedelta(seconds=LEASE_SECONDS),
                        created_at=at, expires_at=at + timedelta(hours=hours)))
                    return Held(token)
                if row.fingerprint != fingerprint:
                    raise KeyReused("Idempotency-Key: used before with another request; use a "
                                    "new key for a new request", field="Idempotency-Key")
                if row.status == "done" and row.response_status is not None:
                    return Answer(row.response_status, row.response_body or "")
                if row.locked_until is not None and row.locked_until > at:
                    wait = (row.locked_until - at).total_seconds()
                    raise _in_use(min(5, max(1, math.ceil(wait))))
                token = uuid.uuid4().hex  # its first request died: this one takes over
                row.token = token
                row.locked_until = at + timedelta(seconds=LEASE_SECONDS)
                return Held(token)
        except IntegrityError:
            continue  # a concurrent first request inserted it: look again
    raise _in_use(1)


def _in_use(retry_after: int) -> KeyInUse:
    return KeyInUse("Idempotency-Key: the first request with this key is still running; "
                    "try again shortly", retry_after=retry_after, field="Idempotency-Key")


def finish(database: Database, *, user_id: str, key: str, token: str, status: int,
           body: str) -> None:
    """Keep the answer of the request holding the key."""
    with database.session() as session:
        session.execute(update(IdempotencyKey).where(
            IdempotencyKey.user_id == user_id, IdempotencyKey.key == key,
            IdempotencyKey.token == token)
            .values(status="done", response_status=status, response_body=body, token=None,
                    locked_until=None).execution_options(synchronize_session=False))


def release(database: Database, *, user_id: str, key: str, token: str) -> None:
    """Forget the key (its answer is not kept): the next request with it runs afresh."""
    with database.session() as session:
        session.execute(delete(IdempotencyKey).where(
            IdempotencyKey.user_id == user_id, IdempotencyKey.key == key,
            IdempotencyKey.token == token).execution_options(synchronize_session=False))


def remove_expired(session: Session, *, now: datetime | None = None) -> int:
    """Keys past their hours go (housekeeping); the number removed."""
    return int(session.execute(delete(IdempotencyKey).where(
        IdempotencyKey.expires_at <= (now or utcnow()))
        .execution_options(synchronize_session=False)).rowcount or 0)
