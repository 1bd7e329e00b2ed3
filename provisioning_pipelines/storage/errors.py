"""Telling "a store is down" apart from everything else, for every caller above storage.

A caller that can degrade (provisioning without events) or answer 503 (the API) needs one
question answered: is this error the store being unreachable, which may pass, rather than a
mistake in what we asked it?
"""

from __future__ import annotations

from sqlalchemy import exc as sql

from provisioning_pipelines.storage.events import EventStoreUnavailable


def is_outage(error: BaseException) -> bool:
    """The database or the event store cannot be reached right now."""
    if isinstance(error, EventStoreUnavailable):
        return True
    if isinstance(error, sql.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, sql.OperationalError | sql.InterfaceError | sql.DisconnectionError
                      | sql.TimeoutError)


def what_is_down(error: BaseException) -> str:
    """The store an outage is about, for a message a client reads."""
    return "operation events (Redis)" if isinstance(error, EventStoreUnavailable) else "database"


def is_refused_data(error: BaseException) -> bool:
    """The store refused the data itself (a value out of range, text it cannot hold): the same
    write fails again however often it is tried."""
    if isinstance(error, sql.DataError):
        return True
    # psycopg2 refuses NUL in text before sending it, with a plain ValueError.
    return isinstance(error, ValueError) and "NUL (0x00)" in str(error)
