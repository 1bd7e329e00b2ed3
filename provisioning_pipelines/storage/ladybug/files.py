"""Database files on disk: sidecars, atomic publication, fsync, and the locks around writes.

A database file is only ever made in a temp file next to its final path and published with a
no-clobber hard link (or an atomic rename), so a crash never leaves a half-made file there.
LadybugDB does not stop a second writable handle on one file within a process (it would corrupt
the file), so writes to one path are serialised by a process-wide lock per path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from provisioning_pipelines.errors import Conflict

try:  # POSIX only; elsewhere the atomic rename alone keeps template builds safe.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

# Files LadybugDB 0.22 keeps beside a database "x.lbug" (names found in the library): the fixed
# ones are checked with a stat each; "x.lbug.pk_validator.<n>.tmp" needs a directory scan, done
# only when deleting or when a fixed one shows the file was not closed cleanly.
SIDECAR_PREFIXES = ("wal", "shadow", "checkpoint", "pinned", "pk_validator", "tmp", "lock")
#: Sidecars of a checkpoint that did not finish (what a full disk leaves; see
#: ``recovery_pending``). While one is there, every read-only open fails.
RECOVERY_SIDECARS = (".shadow", ".wal.checkpoint")
_FIXED_SIDECARS = (
    ".wal",
    *RECOVERY_SIDECARS,
    ".checkpoint",
    ".checkpoint.intent.lock",
    ".checkpoint.apply.lock",
    ".pinned.tmp",
)

#: The errnos of a full disk (or a user's quota): no other write to that disk can pass either.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class KeyedLocks:
    """One lock per key, created on demand and dropped when nobody holds or waits for it.

    Re-entrant: a thread that holds a file's lock (``ensure_database`` verifying it) may meet
    a read that needs the file recovered first, which takes the same lock."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, list[Any]] = {}

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            entry = self._locks.setdefault(key, [threading.RLock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[key]


# Process-wide, not per engine: two engines in one process must not both write one file.
WRITE_LOCKS = KeyedLocks()
TEMPLATE_LOCKS = KeyedLocks()


def lock_key(path: Path) -> str:
    return os.path.realpath(path)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive lock between processes (flock); a no-op where flock does not exist."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock



def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform/filesystem syncs directories
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def sidecars(path: Path) -> list[Path]:
    """Files LadybugDB keeps beside ``path`` (``.wal``, ``.shadow``, checkpoint locks ...)."""
    prefix = path.name + "."
    try:
        entries = os.listdir(path.parent)
    except FileNotFoundError:
        return []
    return [
        path.parent / name
        for name in entries
        if name.startswith(prefix) and name[len(prefix) :].startswith(SIDECAR_PREFIXES)
    ]


def _remove(path: Path) -> bool:
    try:
        os.remove(path)
    except FileNotFoundError:
        return False
    return True


def has_sidecars(path: Path) -> bool:
    """Cheap check (a few stats, no directory scan) for the sidecars that matter."""
    return any(os.path.lexists(f"{path}{suffix}") for suffix in _FIXED_SIDECARS)


def recovery_pending(path: Path) -> bool:
    """A checkpoint of ``path`` began and did not finish: LadybugDB refuses every read-only
    open until a read-write open completes it (``LadybugEngine.recover``)."""
    return any(os.path.lexists(f"{path}{suffix}") for suffix in RECOVERY_SIDECARS)


def empty_shadow(path: Path) -> bool:
    """Only an empty ``.shadow`` is pending: a checkpoint that could not write its first page.
    It holds nothing, and the file itself was never touched (a checkpoint writes the whole
    shadow before it changes the file), so removing it loses nothing."""
    try:
        size = os.stat(f"{path}.shadow").st_size
    except FileNotFoundError:
        return False
    return size == 0 and not os.path.lexists(f"{path}.wal.checkpoint")


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[bool]:
    """Whether no other process has ``path`` open read-write (LadybugDB holds a POSIX write
    lock on the whole file while it does), holding that lock meanwhile so none can start.

    Only under this process's ``WRITE_LOCKS`` for the path: POSIX locks belong to the process,
    and closing this descriptor would drop a lock a handle of this process held.
    """
    if fcntl is None:  # pragma: no cover
        yield False
        return
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        yield False
        return
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def remove_with_sidecars(path: Path, *, thorough: bool = False) -> bool:
    """Remove ``path`` and its sidecars; scans the folder only if ``thorough`` or needed."""
    removed = _remove(path)
    if thorough or has_sidecars(path):
        for extra in sidecars(path):
            removed = _remove(extra) or removed
    return removed



def temp_path(path: Path) -> Path:
    """A hidden, unique name beside ``path`` that never matches a database's sidecar pattern."""
    return path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"


#: The name of a ``temp_path``.
TEMP_NAME = re.compile(r"\..+\.lbug\.[0-9a-f]{12}\.tmp")


def publish(temp: Path, path: Path) -> None:
    """Put a finished file at ``path`` without ever overwriting one that appeared."""
    try:
        os.link(temp, path)
    except FileExistsError as exc:
        raise Conflict(f"graph database already exists: {path.name}") from exc
    except OSError:  # no hard links on this filesystem: check, then rename
        if path.exists():
            raise Conflict(f"graph database already exists: {path.name}") from None
        os.replace(temp, path)
    fsync_dir(path.parent)
