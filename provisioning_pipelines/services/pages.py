"""Keyset pages of a list, newest first: the one way every list of the API is cut into pages.

A page is cut after a key, ``(created_at, id)`` of the last item seen, not at an offset: an
item added (or removed) while a client walks the pages moves no other item from one page to
the next, so none is lost or repeated. Ties of ``created_at`` (one millisecond, one clock tick)
are broken by the id. Only the key is kept in a cursor; what it looks like to a client is the
API's business (``api/pages.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute, Session

T = TypeVar("T")
U = TypeVar("U")

#: Items on a page when the client does not say, and the most it may ask for.
DEFAULT_LIMIT = 50
MAX_LIMIT = 100

#: Where a page starts after: the last item's time and id.
Key = tuple[datetime, str]


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    #: The last item's key when more items follow, None on the last page.
    next_key: tuple[Any, str] | None

    def map(self, change: Callable[[T], U]) -> Page[U]:
        return Page([change(item) for item in self.items], self.next_key)


def keyset(session: Session, query: Select[tuple[T]], created: InstrumentedAttribute[datetime],
           ident: InstrumentedAttribute[str], *, after: Key | None, limit: int) -> Page[T]:
    """One page of ``query``'s rows, newest first, after ``after``: one more row than asked
    is read, to know whether another page follows."""
    if after is not None:
        at, last_id = after
        query = query.where(or_(created < at, and_(created == at, ident < last_id)))
    rows = session.scalars(query.order_by(created.desc(), ident.desc()).limit(limit + 1)).all()
    return cut(rows, limit, lambda row: (getattr(row, created.key), getattr(row, ident.key)))


def cut(rows: Sequence[T], limit: int, key_of: Callable[[T], tuple[Any, str]]) -> Page[T]:
    """``rows`` (up to ``limit`` + 1, in page order) as a page."""
    items = list(rows[:limit])
    more = len(rows) > limit
    return Page(items, key_of(items[-1]) if more and items else None)
