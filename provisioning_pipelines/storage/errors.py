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
