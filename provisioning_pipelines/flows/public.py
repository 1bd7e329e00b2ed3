"""What a customer reads of the work: an error as one sentence and a code, a result without
server paths. The one rule, for every path that writes an operation or answers an error.

A ``ProvisioningError``'s message is written for users and passes through, except the graph
engine's (``EngineError``), which carries the engine's own text. Anything else (a driver's
message naming the database's host and port, an ``OSError`` naming a file) becomes a sentence
by category, with a machine-readable code; the log keeps the raw text (``detail``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from provisioning_pipelines.errors import EngineError, ProvisioningError, StorageFull
from provisioning_pipelines.storage.errors import is_outage, is_refused_data
from provisioning_pipelines.storage.events import EventStoreUnavailable
from provisioning_pipelines.storage.ladybug.files import DISK_FULL

# How a full disk reads in an engine's message (LadybugDB raises RuntimeError, not OSError).
_DISK_FULL_TEXT = ("no space left on device", "disk quota exceeded")
#: Keys of a result that hold server detail (where a file lives), never shown to a customer.
_SERVER_KEYS = frozenset({"database_path"})


@dataclass(frozen=True)
class CustomerError:
    """An error as a customer reads it: a machine-readable code and one sentence."""

    code: str
    message: str


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The error and what caused it, each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in DISK_FULL:
        return True
    text = str(error).lower()
    return any(marker in text for marker in _DISK_FULL_TEXT)


def customer_error(exc: BaseException) -> CustomerError:
    """The code and sentence a customer is shown for ``exc``."""
    if isinstance(exc, ProvisioningError) and not isinstance(exc, EngineError):
        return CustomerError(exc.code, exc.message)
    chain = list(_chain(exc))
    if any(isinstance(error, StorageFull) for error in chain):
        return CustomerError("storage_full", "the graph host's disk is full; try again once "
                             "space is freed")
    if any(_disk_full(error) for error in chain):
        return CustomerError("disk_full", "the disk was full")
    if any(isinstance(error, EventStoreUnavailable) for error in chain):
        return CustomerError("events_unavailable", "the operation event store was unavailable")
    if any(is_outage(error) for error in chain):
        return CustomerError("database_unavailable", "the database was unavailable")
    if any(is_refused_data(error) for error in chain):
        return CustomerError("data_refused", "the database refused a value of the request")
    if isinstance(exc, EngineError):
        return CustomerError(exc.code, "the graph engine could not complete the work")
    if any(isinstance(error, TimeoutError) for error in chain):
        return CustomerError("timeout", "an internal step took too long")
    return CustomerError("internal_error", "an internal error")


def describe(exc: BaseException) -> str:
    """The sentence a customer reads for ``exc`` (``customer_error``'s message)."""
    return customer_error(exc).message


def detail(exc: BaseException) -> str:
    """The raw one line, for the log and the operator's tools only."""
    if isinstance(exc, ProvisioningError):
        return str(exc)  # an engine error's whole text (its ``message`` is redacted)
    return f"{type(exc).__name__}: {exc}"


def public_result(result: Mapping[str, Any]) -> dict[str, Any]:
    """A result as the operation shows it: without where files live on the server."""
    return {key: value for key, value in result.items() if key not in _SERVER_KEYS}
