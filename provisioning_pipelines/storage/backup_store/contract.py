"""Where backups are kept, whoever keeps them: one interface with a folder (the embedded default)
and an S3-compatible store, held to one contract test suite.

A backup is one object, its sha256 and a manifest beside it (``<key>.manifest.json``: the sha256,
the size, when it expires, and whatever the caller adds, such as the graph's schema). The object
is whole or absent: a folder publishes it with a rename; S3 makes an object visible only once
its (multipart) upload completes, and the manifest is written after the object, so a manifest
always names a whole object. A download is hashed on the way and published only when the hash is
the manifest's; a damaged object leaves nothing at the destination. ``sweep`` enforces retention
on the store itself, from each manifest's ``expires_at``, so an object outlives no row's rules
even when its row is gone.
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from provisioning_pipelines.errors import (
    BackupDamaged,
    InvalidRequest,
    NotFound,
)

#: A key: ``/``-separated parts of letters, digits, ``_``, ``-`` and ``.`` (never ``..``).
KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,127}){0,7}")
MANIFEST_SUFFIX = ".manifest.json"


@dataclass(frozen=True)
class StoredBackup:
    key: str
    size_bytes: int
    sha256: str
    expires_at: datetime | None
    #: What the caller kept beside the object (the graph's id, its schema, ...).
    details: dict[str, Any] = field(default_factory=dict)


def check_key(key: str) -> str:
    if not isinstance(key, str) or not KEY.fullmatch(key) or ".." in key or \
            key.endswith(MANIFEST_SUFFIX):
        raise InvalidRequest(f"backup key: {str(key)[:80]!r} is not a key of the backup store",
                             field="key")
    return key


class BackupStore(abc.ABC):
    """Objects with their checksums and manifests, under one root (a folder, a bucket prefix)."""

    #: What the store is, for messages and ``hosts list`` (never a secret).
    location: str

    @abc.abstractmethod
    def put(self, key: str, source: Path, *, sha256: str, expires_at: datetime | None,
            details: dict[str, Any] | None = None, move: bool = False) -> StoredBackup:
        """Keep ``source`` under ``key`` with its manifest; a key kept already with the same
        sha256 is returned as it is (a retry), another sha256 under it is refused. ``move``:
        the source is the caller's to give up (renamed into a folder, removed once uploaded)."""

    @abc.abstractmethod
    def get(self, key: str, destination: Path, *, sha256: str | None = None) -> StoredBackup:
        """Copy the object to ``destination`` (published whole with a rename), verified first
        against ``sha256`` (the caller's record) or else its manifest's: ``BackupDamaged`` and
        nothing at ``destination`` if not; ``NotFound`` for a key not kept."""

    @abc.abstractmethod
    def head(self, key: str) -> StoredBackup | None:
        """The manifest of a kept object, or None."""

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Remove the object and its manifest; True if they were there."""

    @abc.abstractmethod
    def list(self, prefix: str = "", *, kept_before: datetime | None = None
             ) -> list[StoredBackup]:
        """Every kept object under ``prefix`` (whole ones: those with a manifest), by key;
        with ``kept_before``, only those whose manifest was written before then (read from the
        listing, so a sweep reads only the manifests that can have expired)."""

    def sweep(self, now: datetime, *, shortest_retention: timedelta = timedelta(0)
              ) -> list[str]:
        """Remove every object whose manifest expired by ``now``; the keys removed. Nothing
        kept for less than ``shortest_retention`` can have expired, so it is not read."""
        removed = []
        for found in self.list(kept_before=now - shortest_retention):
            if found.expires_at is not None and found.expires_at <= now:
                self.delete(found.key)
                removed.append(found.key)
        return removed

    def close(self) -> None:  # noqa: B027 - most stores hold nothing to close
        """Let go of connections."""


def damaged(key: str, actual: str, expected: str) -> BackupDamaged:
    return BackupDamaged(f"backup_id: backup {key!r} is damaged: its sha256 is {actual[:12]}..., "
                         f"its record says {expected[:12]}...; nothing was restored",
                         field="backup_id")


def not_kept(key: str) -> NotFound:
    return NotFound(f"backup store: no backup {key!r}", field="backup_id")
