"""The errors services raise, and the one settings raise.

One small hierarchy, mapped once at the HTTP edge (``status_code``) and once in the CLI. A message
names the field and what is wrong with its value, because it is shown to the user as it is.
``SettingsError`` lives here rather than beside the settings so that the CLI can answer it
without importing pydantic for commands that read no setting.
"""

from __future__ import annotations

import re

# Where things are, as drivers and the engine write it: URLs, addresses with their ports, a
# quoted host, "port N", and absolute paths (whose last part is kept: it names a graph file).
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s)'\"]+")
_ADDRESS = re.compile(r"\[[0-9a-fA-F:.]+\](?::[0-9]+)?|\b(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?::[0-9]+)?"
                      r"|\b[a-zA-Z0-9][a-zA-Z0-9.-]*:[0-9]{2,5}\b")
_QUOTED_HOST = re.compile(r'((?:server at|host name|on socket|host)\s+)"[^"]*"', re.IGNORECASE)
_PORT = re.compile(r"\bport\s+[0-9]+", re.IGNORECASE)
_PATH = re.compile(r"(?<![\w.~])(?:/[^\s/'\"():,]+)+/([^\s/'\"():,]*)")


def redacted(message: str) -> str:
    """``message`` without where anything is (hosts, ports, URLs, folders): what a client reads
    says what failed, the log keeps where."""
    message = _URL.sub("<url>", message)
    message = _QUOTED_HOST.sub(r'\1"<host>"', message)
    message = _ADDRESS.sub("<host>", message)
    message = _PORT.sub("port <port>", message)
    return _PATH.sub(r"\1", message)


class ProvisioningError(Exception):
    """Base of every error a user can cause or see."""

    status_code = 500
    code = "provisioning_error"
    #: Whether another attempt could succeed (a bad request never will; a full host may).
    retryable = True

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, str | None]:
        return {"error": self.code, "message": self.message, "field": self.field}


class InvalidRequest(ProvisioningError):
    status_code = 422
    code = "invalid_request"
    retryable = False


class Unauthorized(ProvisioningError):
    status_code = 401
    code = "unauthorized"
    retryable = False


class Forbidden(ProvisioningError):
    """The caller sees the thing but may not do this to it (a viewer deleting a graph)."""

    status_code = 403
    code = "forbidden"
    retryable = False


class NotFound(ProvisioningError):
    status_code = 404
    code = "not_found"
    retryable = False


class Conflict(ProvisioningError):
    status_code = 409
    code = "conflict"
    retryable = False


class LimitReached(Conflict):
    code = "limit_reached"


class Suspended(Conflict):
    """The graph (or its parent) is suspended: its data is kept, nothing may be done with it
    until it is reactivated."""

    code = "suspended"


class PaymentRequired(ProvisioningError):
    status_code = 402
    code = "payment_required"
    retryable = False


class TooManyInFlight(ProvisioningError):
    """A user already has as much of one kind of work running as a limit allows."""

    status_code = 429
    code = "too_many_in_flight"


class CapacityExhausted(ProvisioningError):
    """No host of the tier has a free slot: retryable once capacity is added."""

    status_code = 503
    code = "capacity_exhausted"


class EngineError(ProvisioningError):
    """The graph engine refused or failed an operation on a database file. Its message (shown
    to clients) names the file but not its folder; ``str()`` (logged) keeps the whole text."""

    status_code = 500
    code = "engine_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.message = redacted(message)


class StorageFull(EngineError):
    """A host's disk has no room for what was asked; retryable once space is freed."""

    status_code = 503
    code = "storage_full"


class PayloadTooLarge(InvalidRequest):
    status_code = 413
    code = "payload_too_large"


class RequestTimeout(InvalidRequest):
    """A request body that did not arrive whole in time (answered 408, the connection closed)."""

    status_code = 408
    code = "request_timeout"


class QueryTimeout(InvalidRequest):
    """A customer's query ran past its tier's time limit and was interrupted by the engine."""

    status_code = 408
    code = "query_timeout"


class QueryTooLong(InvalidRequest):
    """A customer's query text is longer than its tier allows."""

    status_code = 413
    code = "query_too_long"


class AnswerTooLarge(InvalidRequest):
    """A query's answer would be larger than its tier allows (ask for fewer rows or columns)."""

    status_code = 422
    code = "answer_too_large"


class UnsupportedMediaType(InvalidRequest):
    """A body in a form the endpoint does not read (a browser's write must be JSON)."""

    status_code = 415
    code = "unsupported_media_type"


class ServiceUnavailable(ProvisioningError):
    """A store this request needs is down; the same request may succeed later (answered 503)."""

    status_code = 503
    code = "unavailable"


class Busy(ServiceUnavailable):
    """This process is reading as many request bodies as it may; the same request may succeed
    in a moment (answered 503 with ``Retry-After``)."""

    code = "busy"


class DatabaseNotMigrated(ServiceUnavailable):
    """The app database's schema is not the one this code was written for: every request
    would fail, so the CLI and ``serve`` stop with this line and ``/healthz`` answers 503."""

    code = "database_not_migrated"
    retryable = False


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot start with."""


class HostUnavailable(ServiceUnavailable):
    """A graph host did not answer (or its circuit breaker is open after it failed several
    times in a row); named by its id, never its address."""

    code = "host_unavailable"

    def __init__(self, message: str, *, field: str | None = None,
                 reached: bool = True) -> None:
        super().__init__(message, field=field)
        #: Whether the request may have reached the host (False only when it surely did not:
        #: no connection was made, or the breaker kept it back), which decides whether a
        #: create may be placed on another host.
        self.reached = reached


class GraphMoving(ServiceUnavailable):
    """The graph is being moved to another host: reads are served, a write or a lifecycle
    change is refused for the few seconds of the move's last copy (503 with ``Retry-After``)."""

    code = "graph_moving"


class BackupStoreUnavailable(ServiceUnavailable):
    """The backup store did not answer, or failed, within its timeouts (answered 503)."""

    code = "backup_store_unavailable"


class BackupDamaged(Conflict):
    """A backup whose bytes are not the ones its record names: never restored, nothing made."""

    code = "backup_damaged"


class HostTokenRefused(HostUnavailable):
    """A graph host answered 401 to this process's ``GRAPH_HOST_TOKEN``: its gate refused the
    request before any path was looked at, so nothing was done there (``reached`` is False),
    and the same request succeeds once an operator sets the token the hosts serve with."""
