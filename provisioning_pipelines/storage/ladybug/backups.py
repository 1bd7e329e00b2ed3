"""Backups of database files: a consistent copy out, a checked copy back in.

A backup is a copy of the checkpointed file taken while this process holds the file's write
handle: LadybugDB lets one process at a time open a file read-write, so nobody writes during the
copy, and the checkpoint first moves the write-ahead log into the file, so the copy stands alone
(no WAL needed). The copy is hashed (sha256) once written, and published with a rename, so a
backup file is whole or absent.

A restore replaces a live database: the backup is copied into a temp file beside it and hashed
(a copy whose sha256 is not the manifest's is thrown away, nothing touched); only then is the
live file checkpointed (so nothing of it waits in a WAL that would replay onto the new file) and
the copy renamed over it, its sidecars removed. The old data is whole until the rename, the new
data whole after it.

A copy that cannot fit leaves nothing behind. It is refused before anything is opened when the
destination's disk plainly lacks the room, and a backup's copy that runs out of room half-way
has its temp file removed *before* the write handle closes: that close checkpoints, and a
checkpoint on a full disk leaves a ``.shadow`` beside the live file that makes every read-only
open fail (``engine``'s docstring). Whatever still goes wrong there, the engine finishes on the
close.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from provisioning_pipelines.errors import InvalidRequest, NotFound, StorageFull
from provisioning_pipelines.storage.ladybug import files

if TYPE_CHECKING:
    from provisioning_pipelines.storage.ladybug.engine import LadybugEngine

@dataclass(frozen=True)
class BackupFile:
    path: Path
    size_bytes: int
    checksum: str  # sha256, hex


def back_up(engine: LadybugEngine, database: Path, destination: Path) -> BackupFile:
    """Copy ``database`` to ``destination`` consistently; an existing backup is kept as is."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if destination.is_file():  # made before (a retry): the same backup
        return BackupFile(destination, destination.stat().st_size, checksum_of(destination))
    ensure_room(database, destination.parent)
    temp = files.temp_path(destination)
    try:
        with engine.writing(database) as conn:
            conn.execute("CHECKPOINT")
            try:
                checksum = copy_hashed(database, temp)
            except BaseException:
                files.remove_with_sidecars(temp)  # room for the checkpoint of the close
                raise
        files.fsync_file(temp)
        os.replace(temp, destination)
        files.fsync_dir(destination.parent)
    finally:
        files.remove_with_sidecars(temp)
    return BackupFile(destination, destination.stat().st_size, checksum)


#: Room kept free beyond a copy's own size (the checkpoint's shadow pages, the manifest).
ROOM_MARGIN = 4 * 1024 * 1024


def ensure_room(source: Path, folder: Path) -> None:
    """Refuse (``StorageFull``, nothing opened or written) a copy of ``source`` and its WAL
    into ``folder`` that its disk has no room for."""
    ensure_room_bytes(sum(_size(Path(f"{source}{suffix}")) for suffix in ("", ".wal")),
                      folder, source.name)


def ensure_room_bytes(size: int, folder: Path, name: str) -> None:
    """Refuse (``StorageFull``) ``size`` bytes of ``name`` that ``folder``'s disk cannot hold."""
    needed = size + ROOM_MARGIN
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise StorageFull(f"not enough disk space for a copy of {name} in {folder}: "
                          f"{free:,} bytes free, {needed:,} needed")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def verify(backup: Path, checksum: str) -> None:
    """Refuse a backup whose file is missing or whose sha256 is not ``checksum``."""
    if not backup.is_file():
        raise NotFound(f"backup_id: the backup's file is missing ({backup.name})",
                       field="backup_id")
    actual = checksum_of(backup)
    if actual != checksum:
        raise _damaged(backup, actual, checksum)


def stage(backup: Path, checksum: str, destination: Path) -> Path:
    """A checked copy of the backup in a temp file beside ``destination`` (which is untouched):
    a copy whose sha256 is not ``checksum`` is thrown away. The caller swaps it in or removes
    it; a crash leaves only a temp file, which housekeeping removes."""
    if not backup.is_file():
        raise NotFound(f"backup_id: the backup's file is missing ({backup.name})",
                       field="backup_id")
    ensure_room(backup, destination.parent)
    temp = files.temp_path(destination)
    try:
        actual = copy_hashed(backup, temp)
        if actual != checksum:
            raise _damaged(backup, actual, checksum)
        files.fsync_file(temp)
    except BaseException:
        files.remove_with_sidecars(temp)
        raise
    return temp


def swap_in(engine: LadybugEngine, staged: Path, destination: Path) -> None:
    """Put a staged copy in place of the live database ``destination``: checkpoint the live
    file, rename the copy over it and remove its sidecars, all under the path's write lock."""
    with engine.writing(destination) as conn:
        conn.execute("CHECKPOINT")
    with files.WRITE_LOCKS.hold(files.lock_key(destination)):
        os.replace(staged, destination)
        for extra in files.sidecars(destination):
            extra.unlink(missing_ok=True)
        files.fsync_dir(destination.parent)


def _damaged(backup: Path, actual: str, expected: str) -> InvalidRequest:
    return InvalidRequest(f"backup_id: backup {backup.stem} is damaged: its sha256 is "
                          f"{actual[:12]}…, the manifest says {expected[:12]}…",
                          field="backup_id")


def checksum_of(path: Path) -> str:
    with path.open("rb") as source:
        return hashlib.file_digest(source, "sha256").hexdigest()


def copy_hashed(source: Path, destination: Path) -> str:
    """Copy (by the kernel) and hash the copy: what is hashed is what was written. Measured on
    a 0.75 GiB file, four times faster than hashing chunks on their way through Python."""
    try:
        shutil.copyfile(source, destination)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise StorageFull(f"the disk ran out of space while copying {source.name} to "
                          f"{destination.parent}") from exc
    return checksum_of(destination)
