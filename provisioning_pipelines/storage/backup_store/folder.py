"""Backups kept in a folder (the embedded default, and a host's own disk when no store is set)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from provisioning_pipelines.errors import Conflict, StorageFull
from provisioning_pipelines.storage.backup_store import manifests
from provisioning_pipelines.storage.backup_store.contract import (
    MANIFEST_SUFFIX,
    BackupDamaged,
    BackupStore,
    StoredBackup,
    check_key,
    damaged,
    not_kept,
)


class FolderStore(BackupStore):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.location = str(self.root)

    def put(self, key: str, source: Path, *, sha256: str, expires_at: datetime | None,
            details: dict[str, Any] | None = None, move: bool = False) -> StoredBackup:
        kept = self.head(key)
        if kept is not None:
            return _same(kept, sha256)
        target = self._path(key)
        if Path(source) == target and target.is_file():
            # Made in place by the caller (a host copying into this folder), hashed as it was
            # written: only its manifest is missing.
            found = StoredBackup(key, target.stat().st_size, sha256, expires_at, details or {})
            _write(self._manifest(key), manifests.dump(found))
            return found
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = _temp(target)
        try:
            copied = _moved(Path(source), temp) if move else _copy_hashed(Path(source), temp)
            if copied != sha256:
                raise BackupDamaged(f"backup {key!r}: the file changed while it was kept "
                                    f"(sha256 {copied[:12]}..., expected {sha256[:12]}...)",
                                    field="backup_id")
            found = StoredBackup(key, temp.stat().st_size, sha256, expires_at, details or {})
            os.replace(temp, target)
            _write(self._manifest(key), manifests.dump(found))
            return found
        finally:
            temp.unlink(missing_ok=True)

    def get(self, key: str, destination: Path, *, sha256: str | None = None) -> StoredBackup:
        found = self.head(key)
        if found is None and sha256 is not None and self._path(key).is_file():
            # Kept before backups had manifests: the caller's record names its checksum.
            size = self._path(key).stat().st_size
            found = StoredBackup(key, size, sha256, None, {})
        if found is None or not self._path(key).is_file():
            raise not_kept(key)
        expected = sha256 or found.sha256
        destination = Path(destination)
        destination.parent.mkdir(parents=True, exist_ok=True)
        temp = _temp(destination)
        try:
            actual = _copy_hashed(self._path(key), temp)
            if actual != expected:
                raise damaged(key, actual, expected)
            os.replace(temp, destination)
            return found
        finally:
            temp.unlink(missing_ok=True)

    def head(self, key: str) -> StoredBackup | None:
        path = self._manifest(key)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        return manifests.load(raw)

    def delete(self, key: str) -> bool:
        existed = False
        for path in (self._manifest(key), self._path(key)):  # the manifest first: never a
            with contextlib.suppress(FileNotFoundError):     # manifest without its object
                path.unlink()
                existed = True
        return existed

    def list(self, prefix: str = "", *, kept_before: datetime | None = None
             ) -> list[StoredBackup]:
        if not self.root.is_dir():
            return []
        found = []
        for path in sorted(self.root.rglob(f"*{MANIFEST_SUFFIX}")):
            key = path.relative_to(self.root).as_posix().removesuffix(MANIFEST_SUFFIX)
            if not key.startswith(prefix) or (
                    kept_before is not None and path.stat().st_mtime > kept_before.timestamp()):
                continue
            if kept := manifests.load(path.read_bytes()):
                found.append(kept)
        return found

    def path_of(self, key: str) -> Path:
        """Where the object of ``key`` lives (a caller may make it there, then ``put`` it)."""
        return self._path(key)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _manifest(self, key: str) -> Path:
        return self.root / f"{check_key(key)}{MANIFEST_SUFFIX}"


def _same(kept: StoredBackup, sha256: str) -> StoredBackup:
    if kept.sha256 != sha256:
        raise Conflict(f"backup {kept.key!r} is kept already with other contents",
                       field="backup_id")
    return kept


def _temp(path: Path) -> Path:
    """A hidden name beside ``path``, the graph engine's pattern of a temp file (so what a
    death leaves is removed by the host's and housekeeping's sweeps of temp files)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


def _write(path: Path, data: bytes) -> None:
    temp = _temp(path)
    try:
        temp.write_bytes(data)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _moved(source: Path, destination: Path) -> str:
    """Rename (a copy across file systems), then hash what is there."""
    try:
        os.replace(source, destination)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        return _copy_hashed(source, destination)
    with destination.open("rb") as moved:
        return hashlib.file_digest(moved, "sha256").hexdigest()


def _copy_hashed(source: Path, destination: Path) -> str:
    """Copy by the kernel, then hash what was written."""
    try:
        shutil.copyfile(source, destination)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise StorageFull(f"the disk ran out of space while copying {source.name}") from exc
    with destination.open("rb") as copied:
        return hashlib.file_digest(copied, "sha256").hexdigest()
