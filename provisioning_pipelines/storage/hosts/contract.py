"""What a graph host does, whoever runs it: one interface, keyed by graph id under the host's
data root, with an in-process implementation (``local``) and an HTTP client of the host server
(``client``), held to one contract test suite.

Which calls may be repeated is part of the contract, since the client retries exactly those:
``create`` (on the graph id: a retry returns what exists; another schema under the id is a
``Conflict``), ``delete`` (a missing graph is fine), ``back_up`` (on the backup's name),
``checkpoint``, ``freeze``, ``thaw``, ``copy_from`` and every read. ``fork`` and a writing
``query`` or ``run_query`` are not: a repeated fork would copy its rows twice.

``query`` is the control plane's (rows as dicts, for the flows); ``run_query`` is a customer's:
bounded by the tier's ``QueryLimits``, its values JSON, a write refused by the engine's read-only
mode (``Forbidden``) when ``read_only``.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from provisioning_pipelines.errors import NotFound
from provisioning_pipelines.storage.graph_ids import ANY_GRAPH_ID
from provisioning_pipelines.storage.ladybug.queries import QueryLimits, QueryResult

#: A backup's name under its graph (becomes a file name: letters, digits, ``_``, ``-``).
BACKUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
#: The host's own folder under its data root (schema records, backups, templates).
HOST_FOLDER = ".host"
#: Where graph files nobody placed on the host are moved, under its data root.
QUARANTINE = ".quarantine"
SUFFIX = ".lbug"


@dataclass(frozen=True)
class HostAddress:
    """What a host's row says about reaching it: a host server's ``url``, or (None) a folder
    this process opens itself."""

    host_id: str
    url: str | None
    data_root: str


@dataclass(frozen=True)
class GraphInfo:
    graph_id: str
    #: The sha256 fingerprint of the schema's DDL (``ladybug.ddl_fingerprint``).
    schema: str
    size_bytes: int
    #: Whether this call made the file (False: it was there, a retry).
    created: bool


@dataclass(frozen=True)
class BackupInfo:
    graph_id: str
    name: str
    size_bytes: int
    sha256: str
    #: Where the backup is kept: its backup store's location and key (a folder's path, or
    #: ``s3://bucket/prefix/<graph id>/<name>.lbug``).
    location: str = ""


@dataclass(frozen=True)
class Holding:
    """What the data root really holds: graph files by id, and every other entry by name (a
    file put there by hand, a half-made temp file), which nobody placed and a caller reports."""

    graphs: tuple[str, ...]
    unknown: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class HostHealth:
    tier: str
    capacity: int
    #: Slots taken: the top-level graphs held (a subgraph lives beside its parent, in its slot).
    used: int


def check_graph_id(graph_id: object, *, field_name: str = "graph_id") -> str:
    """The id if it is one; else ``NotFound`` naming the field (no file has such a name)."""
    if not isinstance(graph_id, str) or not ANY_GRAPH_ID.fullmatch(graph_id):
        shown = repr(graph_id)[:80]
        raise NotFound(f"{field_name}: {shown} is not a graph id (kg and 16 to 64 hex digits, "
                       "optionally _ and a subgraph name)", field=field_name)
    return graph_id


def backup_key(graph_id: str, name: str) -> str:
    """A backup's key in its store: ``<graph id>/<name>.lbug``."""
    return f"{check_graph_id(graph_id)}/{check_backup_name(name)}{SUFFIX}"


def check_backup_name(name: object) -> str:
    if not isinstance(name, str) or not BACKUP_NAME.fullmatch(name):
        raise NotFound(f"name: {repr(name)[:80]} is not a backup name (1 to 64 letters, digits, "
                       "_ or -, starting with a letter or digit)", field="name")
    return name


class GraphHost(abc.ABC):
    """One machine's graphs. Every method names the graph by id; none takes a path."""

    host_id: str

    @abc.abstractmethod
    def create(self, graph_id: str, ddl: Sequence[str]) -> GraphInfo:
        """Make the graph with ``ddl``'s schema, or return it if it exists with that schema."""

    @abc.abstractmethod
    def fork(self, child_id: str, parent_id: str, *, tables: Sequence[str] | None = None,
             exclude: Sequence[str] = ()) -> dict[str, int]:
        """Copy the parent's rows into the (created) child; rows added per table."""

    @abc.abstractmethod
    def checkpoint(self, graph_id: str) -> None:
        """Fold the graph's WAL into its file (before any copy of it)."""

    @abc.abstractmethod
    def back_up(self, graph_id: str, name: str, *,
                expires_at: datetime | None = None) -> BackupInfo:
        """A consistent copy (checkpointed first) kept in the host's backup store, with its
        sha256 and a manifest saying when it expires; an existing one is returned."""

    @abc.abstractmethod
    def restore(self, graph_id: str, source_graph_id: str, name: str, sha256: str) -> None:
        """Replace the graph's data with backup ``name`` of ``source_graph_id`` from the backup
        store: fetched beside the graph's file and checked against ``sha256`` before anything
        is touched (``BackupDamaged``: the graph is as it was), then swapped in whole."""

    @abc.abstractmethod
    def freeze(self, graph_id: str) -> str:
        """Refuse writes to the graph from now on (``GraphMoving``), once the writes under way
        are done; kept on the host's disk, so a restart keeps it. Then checkpoint it and return
        its file's sha256: the bytes a move's last copy takes. A frozen graph still answers
        reads; ``thaw`` or ``delete`` ends it."""

    @abc.abstractmethod
    def thaw(self, graph_id: str) -> bool:
        """Take writes again (a move given up); True if the graph was frozen."""

    @abc.abstractmethod
    def copy_from(self, graph_id: str, source: HostAddress, sha256: str) -> None:
        """Replace the graph's data (made here with its schema) with ``source``'s file of the
        same graph, fetched from that host directly and checked against ``sha256`` before
        anything is touched (``BackupDamaged``: the graph is as it was, the source changed
        while it was copied), then swapped in whole."""

    @abc.abstractmethod
    def checksum(self, graph_id: str) -> str:
        """The sha256 of the graph's (checkpointed) file: whether a restore swapped it in."""

    @abc.abstractmethod
    def delete_backup(self, graph_id: str, name: str) -> bool:
        """Remove a backup the host keeps, past its retention (the graph may be gone); True if
        it was there."""

    @abc.abstractmethod
    def delete(self, graph_id: str) -> bool:
        """Remove the graph and its sidecars; True if anything was there."""

    @abc.abstractmethod
    def list(self) -> Holding:
        """What the data root holds now, read from the disk."""

    @abc.abstractmethod
    def query(self, graph_id: str, cypher: str, params: Mapping[str, Any] | None = None, *,
              read_only: bool = True) -> list[dict[str, Any]]:
        """Rows as dicts; a read-only query that writes is refused (``InvalidRequest``)."""

    @abc.abstractmethod
    def run_query(self, graph_id: str, cypher: str, params: Mapping[str, Any] | None = None, *,
                  read_only: bool = True, limits: QueryLimits | None = None) -> QueryResult:
        """A customer's query: columns and rows as JSON, at most ``limits.max_rows`` of them
        (``truncated`` says whether there were more). 403 for a write when ``read_only``
        (refused by the engine), 408 past the timeout (the query interrupted), 413 past the
        query's length, 422 past the answer's size or for an error of the query (the
        engine's message, no path)."""

    @abc.abstractmethod
    def tables(self, graph_id: str) -> list[tuple[str, str]]:
        """The graph's tables as ``(name, kind)`` in creation order (kind NODE or REL)."""

    @abc.abstractmethod
    def quarantine(self, graph_id: str) -> bool:
        """Move a graph nobody placed here aside (``.quarantine/``), for an operator to look
        at; True if it was there."""

    @abc.abstractmethod
    def size(self, graph_id: str, *, wait: float | None = None) -> int:
        """Bytes the graph takes on disk (its file and sidecars). ``wait``: for a caller that
        must not wait long (a page that shows sizes), one try answered within that many
        seconds, or ``HostUnavailable``."""

    @abc.abstractmethod
    def health(self) -> HostHealth:
        """The host's tier, how many graphs it may hold and how many it holds (top-level ones:
        subgraphs take no slot)."""
