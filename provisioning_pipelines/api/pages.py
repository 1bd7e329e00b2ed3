"""``limit`` and ``cursor`` of every list: read from the query, and the next page's cursor.

A cursor is the key of the last item a page showed (``services/pages.py``: its time and id),
with the list's name, as URL-safe base64 of a short JSON array. It is opaque to clients but not
secret: a cursor edited by hand can only move a walk along the caller's own list, since every
list is filtered by who asks. It is checked strictly, so anything that is not a cursor of this
list (garbage, another list's, a time without a zone) is a 422 naming ``cursor``, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request

from provisioning_pipelines.errors import InvalidRequest
from provisioning_pipelines.services.pages import DEFAULT_LIMIT, MAX_LIMIT

#: The longest cursor read (ours are under 150 characters).
MAX_CURSOR_LENGTH = 512
MAX_ID_LENGTH = 200
#: Operations are placed by their creation in ms since the epoch (the event store's key).
MAX_MS = 2**53


@dataclass(frozen=True)
class PageRequest:
    limit: int
    #: The key to start after: (datetime, id) for SQL lists, (ms, id) for operations.
    after: tuple[Any, str] | None


def page_request(request: Request, list_name: str, *, timed: bool = True) -> PageRequest:
    """``?limit=`` (1..100, default 50) and ``?cursor=`` of a list named ``list_name``; a
    ``timed`` list's keys start with a datetime, the others' (operations) with ms."""
    return PageRequest(limit=_limit(request.query_params.get("limit")),
                       after=decode(request.query_params.get("cursor"), list_name,
                                    timed=timed))


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidRequest(f"limit: expected a whole number from 1 to {MAX_LIMIT}, got "
                             f"{raw[:20]!r}", field="limit")
    return int(raw)


def encode(list_name: str, key: tuple[Any, str] | None) -> str | None:
    """The cursor of the page after ``key`` (None: there is none)."""
    if key is None:
        return None
    first, ident = key
    first = first.isoformat() if isinstance(first, datetime) else first
    raw = json.dumps([list_name, first, ident], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str | None, list_name: str, *, timed: bool = True) -> tuple[Any, str] | None:
    if cursor is None:
        return None
    bad = InvalidRequest(f"cursor: not a cursor of this list ({cursor[:40]!r}); use the "
                         "next_cursor of the page before, or none for the first page",
                         field="cursor")
    if not cursor or len(cursor) > MAX_CURSOR_LENGTH or not cursor.isascii():
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = json.loads(raw)
    except (binascii.Error, ValueError):
        raise bad from None
    if not (isinstance(parts, list) and len(parts) == 3 and parts[0] == list_name
            and isinstance(parts[2], str) and 0 < len(parts[2]) <= MAX_ID_LENGTH):
        raise bad
    first, ident = parts[1], parts[2]
    if not timed:
        if type(first) is not int or not 0 <= first <= MAX_MS:
            raise bad
        return first, ident
    if not isinstance(first, str) or len(first) > 40:
        raise bad
    try:
        at = datetime.fromisoformat(first)
        if at.tzinfo is None:
            raise bad
        return at.astimezone(UTC), ident
    except (ValueError, OverflowError):  # not a time; a zone that moves it out of range
        raise bad from None


def page_answer(key: str, items: list[Any], list_name: str,
                next_key: tuple[Any, str] | None) -> dict[str, Any]:
    """A list's answer: its items under the list's own key, and ``next_cursor``."""
    return {key: items, "next_cursor": encode(list_name, next_key)}
