"""Read-only handles kept open between customers' queries, closed when idle or stale.

Opening a LadybugDB database costs ~5-40 ms, a one-row MATCH on an open connection ~0.2 ms, so
a host that opened the file for every query would spend nearly all its time opening. This cache
keeps one **read-only** ``Database`` and its ``Connection`` per file. Why read-only, and not the
writable handle a host server could hold as the files' only opener:

* On the embedded default the API process and a Dagster run process both write the same file
  (``DESIGN.md``: never hold a writable handle across requests). A read-only handle takes no
  write lock, so another process opens the file read-write beside it without waiting.
* A read-only handle does not see what is written after it opened. So every use first compares
  the file's stamp (inode, size and mtime of ``x.lbug`` and of its ``.wal``: one write, a
  checkpoint or a file swapped in by a restore changes one of them) with the one it was opened
  at, and reopens on a change; a stat or two, ~10 us. A write by another process *during* a
  query is what any read-only open beside a writer risks (the engine's per-call reads did so
  before); the cache adds no window of its own.
* In this process, anything that opens the file read-write, deletes, replaces or moves it first
  closes its reader here (``evict_everywhere``; the engine's ``session`` and ``delete_database``
  and the host's quarantine call it), so no reader is ever open beside this process's writer.
  ``evict`` waits for a query running on the reader (it is bounded by its timeout).

A reader serves one query at a time (its lock); readers idle for ``idle_seconds`` are closed by a
background thread, and at most ``max_open`` are kept (least recently used first out), since
each reserves the engine's ``max_db_size`` of address space.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import ladybug

from provisioning_pipelines.errors import NotFound
from provisioning_pipelines.storage.ladybug import files

Stamp = tuple[tuple[int, int, int], tuple[int, int, int] | None]

#: Every cache of this process, so that a write through any engine closes every reader.
_CACHES: weakref.WeakSet[ReaderCache] = weakref.WeakSet()


def stamp_of(path: Path) -> Stamp | None:
    """What changes when the file does: the database file's and its WAL's (inode, size,
    mtime); None when the database file is not there."""
    try:
        main = os.stat(path)
    except FileNotFoundError:
        return None
    try:
        wal = os.stat(f"{path}.wal")
        wal_stamp: tuple[int, int, int] | None = (wal.st_ino, wal.st_size, wal.st_mtime_ns)
    except FileNotFoundError:
        wal_stamp = None
    return (main.st_ino, main.st_size, main.st_mtime_ns), wal_stamp


class _Reader:
    __slots__ = ("closed", "conn", "db", "last_used", "lock", "stamp")

    def __init__(self, db: ladybug.Database, stamp: Stamp) -> None:
        self.db = db
        self.conn = ladybug.Connection(db)
        self.stamp = stamp
        self.lock = threading.Lock()
        self.closed = False
        self.last_used = time.monotonic()

    def close(self) -> None:
        """Close once the query using it (if any) is done."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            with contextlib.suppress(Exception):
                self.conn.close()
            with contextlib.suppress(Exception):
                self.db.close()


class ReaderCache:
    """Open read-only handles by file, reused while the file is unchanged."""

    def __init__(self, open_database: Callable[[Path], ladybug.Database], *,
                 idle_seconds: float = 30.0, max_open: int = 32) -> None:
        self._open_database = open_database
        self.idle_seconds = idle_seconds
        self.max_open = max(1, max_open)
        self._readers: dict[str, _Reader] = {}
        self._keys: dict[str, str] = {}
        self._guard = threading.Lock()
        self._sweeper: threading.Thread | None = None
        self._stop = threading.Event()
        _CACHES.add(self)

    def __len__(self) -> int:
        return len(self._readers)

    @contextlib.contextmanager
    def connection(self, path: Path) -> Iterator[ladybug.Connection]:
        """A read-only connection on ``path`` as it is now, held for this caller alone."""
        reader = self._acquire(path)
        try:
            yield reader.conn
        finally:
            reader.last_used = time.monotonic()
            reader.lock.release()

    def _key(self, path: Path) -> str:
        """The file's real path (remembered: resolving it costs a few stats)."""
        name = str(path)
        key = self._keys.get(name)
        if key is None:
            key = self._keys[name] = files.lock_key(path)
            if len(self._keys) > 4 * self.max_open:
                self._keys.clear()
        return key

    def _acquire(self, path: Path) -> _Reader:
        key = self._key(path)
        while True:
            stamp = stamp_of(path)  # before the open: a change during it is seen next time
            if stamp is None:
                self.evict(path)
                raise NotFound(f"graph database not found: {path.name}")
            reader = self._readers.get(key)
            if reader is not None and reader.stamp == stamp:
                reader.lock.acquire()
                if not reader.closed:
                    return reader
                reader.lock.release()
                continue
            if reader is not None:
                self._forget(key, reader)
            fresh = _Reader(self._open_database(path), stamp)
            surplus: list[_Reader] = []
            with self._guard:
                if key in self._readers:  # another thread opened it meanwhile: use that one
                    surplus.append(fresh)
                else:
                    self._readers[key] = fresh
                    surplus.extend(self._over_limit())
                    self._start_sweeper()
            for extra in surplus:
                extra.close()

    def _over_limit(self) -> list[_Reader]:
        """Under the guard: the least recently used readers past ``max_open``, forgotten."""
        if len(self._readers) <= self.max_open:
            return []
        ordered = sorted(self._readers.items(), key=lambda item: item[1].last_used)
        dropped = ordered[: len(self._readers) - self.max_open]
        for key, _reader in dropped:
            del self._readers[key]
        return [reader for _key, reader in dropped]

    def _forget(self, key: str, reader: _Reader) -> None:
        with self._guard:
            if self._readers.get(key) is reader:
                del self._readers[key]
        reader.close()

    def evict(self, path: Path) -> bool:
        """Close the reader of ``path`` (after the query using it, if one is); True if open."""
        with self._guard:
            reader = self._readers.pop(self._key(path), None)
        if reader is None:
            return False
        reader.close()
        return True

    def close_all(self) -> None:
        with self._guard:
            readers, self._readers = list(self._readers.values()), {}
        self._stop.set()
        for reader in readers:
            reader.close()

    # ------------------------------------------------------------------ idle close

    def _start_sweeper(self) -> None:
        """Under the guard: a daemon thread that closes idle readers, while there are any."""
        if self._sweeper is not None and self._sweeper.is_alive():
            return
        self._stop.clear()
        self._sweeper = threading.Thread(target=self._sweep, name="ladybug-readers",
                                         daemon=True)
        self._sweeper.start()

    def _sweep(self) -> None:
        interval = max(0.05, min(self.idle_seconds / 2, 5.0))
        while not self._stop.wait(interval):
            self.close_idle()
            with self._guard:
                if not self._readers:
                    self._sweeper = None
                    return

    def close_idle(self, now: float | None = None) -> int:
        """Close the readers unused for ``idle_seconds`` (and not in use now); how many."""
        now = time.monotonic() if now is None else now
        with self._guard:
            idle = [(key, reader) for key, reader in self._readers.items()
                    if now - reader.last_used >= self.idle_seconds]
        closed = 0
        for key, reader in idle:
            if not reader.lock.acquire(blocking=False):
                continue  # in use: not idle after all
            reader.lock.release()
            self._forget(key, reader)
            closed += 1
        return closed


def evict_everywhere(path: Path) -> None:
    """Close every reader of ``path`` in this process (before it is written another way)."""
    for cache in list(_CACHES):
        cache.evict(path)
