"""The errors services raise, and the one settings raise.

One small hierarchy, mapped once at the HTTP edge (``status_code``) and once in the CLI. A message
names the field and what is wrong with its value, because it is shown to the user as it is.
``SettingsError`` lives here rather than beside the settings so that the CLI can answer it
without importing pydantic for commands that read no setting.
"""

from __future__ import annotations


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


class PaymentRequired(ProvisioningError):
    status_code = 402
    code = "payment_required"
    retryable = False


class CapacityExhausted(ProvisioningError):
    """No host of the tier has a free slot: retryable once capacity is added."""

    status_code = 503
    code = "capacity_exhausted"


class EngineError(ProvisioningError):
    """The graph engine refused or failed an operation on a database file."""

    status_code = 500
    code = "engine_error"


class PayloadTooLarge(InvalidRequest):
    status_code = 413
    code = "payload_too_large"


class ServiceUnavailable(ProvisioningError):
    """A store this request needs is down; the same request may succeed later (answered 503)."""

    status_code = 503
    code = "unavailable"


class DatabaseNotMigrated(ServiceUnavailable):
    """The app database's schema is not the one this code was written for: every request
    would fail, so the CLI and ``serve`` stop with this line and ``/healthz`` answers 503."""

    code = "database_not_migrated"
    retryable = False


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot start with."""
