"""Browser sessions: one row per sign-in, named by a signed token in the browser's cookie.

The token is ``<session id>.<expires>.<HMAC-SHA256 of both>``. The signature lets any worker
refuse a made-up token before a query; the row is what makes signing out real: a signed token
alone stays good until it expires, wherever it was copied to, while a deleted row ends the session
on every worker at once. A token counts only while its row exists and neither its own expiry nor
the row's has passed, and never with an expiry beyond now + ``SESSION_SECONDS`` (which only a
leaked signing key could mint). Housekeeping removes expired rows.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import delete
from sqlalchemy.orm import Session

from provisioning_pipelines.services.access.accounts import Identity
from provisioning_pipelines.storage.models import BrowserSession, User, new_id

#: How long a browser session lasts before the key must be given again.
SESSION_SECONDS = 12 * 3600
#: How far apart two workers' clocks may be before a fresh token looks too long-lived.
CLOCK_LEEWAY_SECONDS = 60


def sign_in(session: Session, identity: Identity, secret: str, *,
            now: float | None = None) -> str:
    """A new session for the user: its row, and the token the cookie holds (never the key)."""
    now = time.time() if now is None else now
    expires = int(now + SESSION_SECONDS)
    row = BrowserSession(id=new_id("ses"), user_id=identity.user_id,
                         created_at=datetime.fromtimestamp(now, UTC),
                         expires_at=datetime.fromtimestamp(expires, UTC))
    session.add(row)
    session.flush()
    body = f"{row.id}.{expires}"
    return f"{body}.{_signature(body, secret)}"


def session_user(session: Session, token: str | None, secrets: Sequence[str], *,
                 now: float | None = None) -> Identity | None:
    """The user a token's session belongs to, if the token is genuine, unexpired, not signed
    out, and the user still exists."""
    now = time.time() if now is None else now
    session_id = _genuine(token, secrets, now=now)
    if session_id is None:
        return None
    row = session.get(BrowserSession, session_id)
    if row is None or row.expires_at.timestamp() < now:
        return None
    user = session.get(User, row.user_id)
    return Identity(user_id=user.id, email=user.email) if user is not None else None


def sign_out(session: Session, token: str | None, secrets: Sequence[str]) -> bool:
    """End the token's session everywhere (its row goes); False if it named none."""
    session_id = _genuine(token, secrets, now=None)
    if session_id is None:
        return False
    return bool(session.execute(
        delete(BrowserSession).where(BrowserSession.id == session_id)).rowcount)


def remove_expired(session: Session, *, now: float | None = None) -> int:
    """Delete the rows of sessions that have expired; how many went."""
    cutoff = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return session.execute(
        delete(BrowserSession).where(BrowserSession.expires_at < cutoff)).rowcount or 0


def _genuine(token: str | None, secrets: Sequence[str], *, now: float | None) -> str | None:
    """The session id of a token we signed (with any of ``secrets``), or None. With ``now``,
    also None unless its expiry lies between now and now + the session's lifetime."""
    if not token or len(token) > 200 or token.count(".") != 2:
        return None
    session_id, expires, signature = token.split(".")
    body = f"{session_id}.{expires}"
    if not any(hmac.compare_digest(signature.encode(), _signature(body, secret).encode())
               for secret in secrets):
        return None
    if not expires.isdigit() or len(session_id) > 64:
        return None
    if now is not None:
        latest = now + SESSION_SECONDS + CLOCK_LEEWAY_SECONDS
        if not now <= int(expires) <= latest:
            return None
    return session_id


def _signature(body: str, secret: str) -> str:
    return hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
