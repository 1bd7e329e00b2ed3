"""The graph engine: LadybugDB database files, created, queried, forked and deleted.

Why it looks the way it does (LadybugDB 0.22, measured on 2 cores):

* Only one *process* may hold a writable handle on a file (see ``files``). So every call opens,
  works and closes, and an open that meets another process's lock is retried until
  ``lock_timeout``.
* Opening costs ~10-20 ms whatever the buffer pool size up to a few GiB (the default pool, 80 %
  of RAM, adds ~20 ms), and the pool is only reserved, not touched, until used. So each open
  picks its pool: ``buffer_pool_bytes`` (16 MiB) for schema work, ``data_buffer_pool_bytes``
  for queries and writes (16 MiB fails "buffer pool is full" on a GROUP BY over 300k nodes) and
  more for bulk ``COPY``, which pins ~1-2 MiB per column of the table being loaded.
* Every open ``Database`` reserves ``max_db_size`` of address space (8 TiB by default), which
  caps a process at ~15 open databases; we pass a smaller power of two.
* Running the schema DDL costs ~30-40 ms; copying a file that already holds the schema ~1 ms. So
  ``create_database`` copies a verified per-schema *template* when ``template_dir`` is set.

What a failure leaves beside a file (found by filling a small tmpfs, LadybugDB 0.22):

* Closing a read-write handle checkpoints, even with nothing to write, and the close never
  raises. On a full disk it leaves ``x.lbug.shadow`` (empty when not one page could be
  written; with the pages, and a torn ``x.lbug``, when the disk filled half-way, then beside
  ``x.lbug.wal.checkpoint``). From then on *every read-only open fails* ("checkpoint
  recovery is pending") until a read-write open completes the checkpoint; it does so without
  loss once there is room. So ``recover`` does exactly that, every read that meets it calls
  ``recover`` first, and housekeeping recovers what is left. Deleting a shadow that holds
  pages would lose the data the torn file is missing; only an empty one is removed, and only
  while no process has the file open for writing (``files.exclusive``).
* A plain ``x.lbug.wal`` (a write whose checkpoint never began, or a kill -9) is harmless:
  read-only opens replay it in memory, and the next read-write close folds it in.
* A *write* whose WAL cannot grow raises, and the close after it then aborts the whole
  process (``std::terminate`` on an ``IOException`` in LadybugDB's own clean-up); no Python
  code can catch that.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import ladybug

from provisioning_pipelines.errors import (
    Conflict,
    EngineError,
    Forbidden,
    NotFound,
    ProvisioningError,
    StorageFull,
)
from provisioning_pipelines.storage.ladybug import files, fork, queries
from provisioning_pipelines.storage.ladybug.cypher import (
    Statement,
    count,
    read_tables,
    rows,
    run_in_transaction,
)
from provisioning_pipelines.storage.ladybug.queries import QueryLimits, QueryResult
from provisioning_pipelines.storage.ladybug.readers import ReaderCache, evict_everywhere
from provisioning_pipelines.storage.ladybug.schema import (
    TableInfo,
    expected_tables,
    schema_key,
    schema_pool_bytes,
    table_keys,
)

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
#: Buffer pool of an open for schema work (the setting LADYBUG_BUFFER_POOL_MB).
DEFAULT_BUFFER_POOL_MB = 16
# Another process holds the write lock: worth waiting up to ``lock_timeout``.
_LOCKED = "Could not set lock"
# A reader met a checkpoint in progress, or the file is truncated (same message): a short wait
# tells the two apart without stalling ensure_database on a damaged file.
_CHECKPOINTING = "please retry later"
_CHECKPOINT_WAIT = 0.25
# A checkpoint began and did not finish (see the module docstring): a read-write open ends it.
_RECOVERY_PENDING = "recovery is pending"


def _unfinished(path: Path, cause: Exception | None) -> StorageFull:
    detail = f" ({cause})" if cause is not None else ""
    return StorageFull(f"graph database {path.name} cannot be opened until a checkpoint "
                       "that ran out of disk space is finished; free space on its host"
                       f"{detail}")


class LadybugEngine:
    """Creates, reads, forks and deletes LadybugDB files. The one handle kept between calls is
    a read-only one for customers' queries (``readers``), closed before any write here."""

    def __init__(
        self,
        *,
        buffer_pool_bytes: int = DEFAULT_BUFFER_POOL_MB * MiB,
        template_dir: Path | None = None,
        use_templates: bool = True,
        data_buffer_pool_bytes: int = 256 * MiB,
        max_db_bytes: int = 1 << 40,
        lock_timeout: float = 10.0,
        reader_idle_seconds: float = 30.0,
        max_readers: int = 32,
    ) -> None:
        if max_db_bytes <= 0 or max_db_bytes & (max_db_bytes - 1):
            raise ValueError("max_db_bytes must be a power of two (a LadybugDB requirement)")
        self.buffer_pool_bytes = buffer_pool_bytes
        self.template_dir = Path(template_dir) if template_dir is not None else None
        self.use_templates = use_templates
        self.data_buffer_pool_bytes = data_buffer_pool_bytes
        self.max_db_bytes = max_db_bytes
        self.lock_timeout = lock_timeout
        self._verified: dict[str, tuple[int, int, int]] = {}
        self._verified_lock = threading.Lock()
        #: Read-only handles kept between customers' queries (``readers``).
        self.readers = ReaderCache(self._open_reader, idle_seconds=reader_idle_seconds,
                                   max_open=max_readers)

    # ------------------------------------------------------------------ handles

    def _open(self, path: Path, *, read_only: bool, pool: int | None) -> ladybug.Database:
        """Open a database, retrying while another process holds the write lock; a read that
        meets an unfinished checkpoint has it finished first (``recover``)."""
        try:
            return self._open_once(path, read_only=read_only, pool=pool)
        except EngineError as exc:
            if not (read_only and _RECOVERY_PENDING in str(exc)):
                raise
        self.recover(path)
        return self._open_once(path, read_only=True, pool=pool)

    def _open_once(self, path: Path, *, read_only: bool, pool: int | None) -> ladybug.Database:
        started = time.monotonic()
        delay = 0.005
        while True:
            try:
                return ladybug.Database(
                    str(path),
                    buffer_pool_size=pool or self.buffer_pool_bytes,
                    read_only=read_only,
                    max_db_size=self.max_db_bytes,
                )
            except Exception as exc:
                message = str(exc)
                if read_only and not path.exists():
                    raise NotFound(f"graph database not found: {path.name}") from exc
                waited = time.monotonic() - started
                if (_LOCKED in message and waited < self.lock_timeout) or (
                    _CHECKPOINTING in message and waited < _CHECKPOINT_WAIT
                ):
                    time.sleep(delay)
                    delay = min(delay * 2, 0.2)
                    continue
                raise EngineError(f"cannot open graph database {path.name}: {message}") from exc

    @contextlib.contextmanager
    def session(
        self, path: Path, *, read_only: bool, pool: int | None = None
    ) -> Iterator[ladybug.Connection]:
        """One open-work-close cycle; the handle is closed whatever happens."""
        if read_only and not path.is_file():
            raise NotFound(f"graph database not found: {path.name}")
        if not read_only:  # no reader of this process stays open beside a writer
            evict_everywhere(path)
        db = self._open(path, read_only=read_only, pool=pool)
        try:
            conn = ladybug.Connection(db)
            try:
                yield conn
            finally:
                conn.close()
        except ProvisioningError:
            raise
        except Exception as exc:  # engine errors surface as RuntimeError; give them our type
            raise EngineError(f"graph database {path.name}: {exc}") from exc
        finally:
            db.close()
            if not read_only and files.recovery_pending(path):
                self._after_failed_checkpoint(path)

    def _after_failed_checkpoint(self, path: Path) -> None:
        """The close's checkpoint failed (the close says nothing): finish it now if there is
        room, or leave it to the next read or housekeeping, saying so."""
        try:
            self.recover(path)
        except EngineError as exc:
            logger.warning("%s", exc)

    def recover(self, path: Path) -> bool:
        """Finish a checkpoint of ``path`` that did not finish, so that read-only opens work
        again; True if one was pending. A read-write open does it (LadybugDB's own recovery);
        an empty ``.shadow`` is removed instead, which works on a disk that is still full.

        Raises ``StorageFull`` when the checkpoint cannot be finished for lack of room.
        """
        path = Path(path)
        with files.WRITE_LOCKS.hold(files.lock_key(path)):
            if not path.is_file() or not files.recovery_pending(path):
                return False
            if files.empty_shadow(path):
                with files.exclusive(path) as alone:
                    if alone and files.empty_shadow(path):
                        os.remove(f"{path}.shadow")
                        logger.warning("graph database %s: removed the empty shadow file of "
                                       "a checkpoint that could not start", path.name)
                        return True
            try:
                db = self._open_once(path, read_only=False, pool=self.buffer_pool_bytes)
                db.close()
            except EngineError as exc:
                raise _unfinished(path, exc) from exc
            if files.recovery_pending(path):
                raise _unfinished(path, None)
            logger.warning("graph database %s: finished a checkpoint that had not finished",
                           path.name)
            return True

    @contextlib.contextmanager
    def writing(self, path: Path, *, pool: int | None = None,
                check: Callable[[], None] | None = None) -> Iterator[ladybug.Connection]:
        """A writable session on an existing file, serialised with other writers in-process;
        ``check`` runs under the lock first and may refuse the write (a frozen graph's)."""
        with files.WRITE_LOCKS.hold(files.lock_key(path)):
            # Checked under the lock: opening a missing path read-write would create it.
            if not path.is_file():
                raise NotFound(f"graph database not found: {path.name}")
            if check is not None:
                check()
            with self.session(path, read_only=False, pool=pool) as conn:
                yield conn

    # ------------------------------------------------------------------ building files

    def _schema_pool(self, ddl: Sequence[str]) -> int:
        return schema_pool_bytes(ddl, self.buffer_pool_bytes)

    def _build(self, target: Path, ddl: Sequence[str]) -> None:
        """Run the DDL into a fresh file (one transaction) and leave it checkpointed."""
        with self.session(target, read_only=False, pool=self._schema_pool(ddl)) as conn:
            run_in_transaction(conn, ddl, label="schema statement")
        self._ensure_checkpointed(target, ddl)

    def _ensure_checkpointed(self, target: Path, ddl: Sequence[str]) -> None:
        """A clean close checkpoints; make sure, since a copied file must stand alone."""
        if not Path(f"{target}.wal").exists():
            return
        with self.session(target, read_only=False, pool=self._schema_pool(ddl)) as conn:
            conn.execute("CHECKPOINT")
        if Path(f"{target}.wal").exists():
            raise EngineError(f"graph database {target.name} kept a WAL after checkpoint")

    def _verify(self, path: Path, ddl: Sequence[str], *, exact: bool) -> bool:
        """Open read-only and compare tables with the DDL's (exact, or at least those)."""
        expected = expected_tables(ddl)
        try:
            with self.session(path, read_only=True, pool=self._schema_pool(ddl)) as conn:
                actual = table_keys(read_tables(conn))
        except NotFound:
            return False
        except EngineError as exc:  # corrupt files fail in open or in the first query
            logger.info("graph database %s failed verification: %s", path.name, exc)
            return False
        wanted = table_keys(expected)
        return actual == wanted if exact else wanted <= actual

    # ------------------------------------------------------------------ templates

    def template_path(self, ddl: Sequence[str]) -> Path | None:
        """Where the template for this DDL lives (None when templates are off)."""
        if not self.use_templates or self.template_dir is None:
            return None
        return self.template_dir / f"{schema_key(tuple(ddl))[0]}.lbug"

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int, int] | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _template_ok(self, template: Path, ddl: Sequence[str]) -> bool:
        """Verified once per process and file version (inode, size, mtime), then trusted."""
        stamp = self._stamp(template)
        if stamp is None:
            return False
        if files.has_sidecars(template):  # someone opened it for writing: not a clean copy source
            return False
        with self._verified_lock:
            if self._verified.get(str(template)) == stamp:
                return True
        if not self._verify(template, ddl, exact=True):
            return False
        with self._verified_lock:
            self._verified[str(template)] = stamp
        return True

    def _template(self, ddl: Sequence[str]) -> Path:
        """The verified template for ``ddl``, built once under a thread and a file lock."""
        template = self.template_path(ddl)
        assert template is not None
        if self._template_ok(template, ddl):
            return template
        template.parent.mkdir(parents=True, exist_ok=True)
        lock_file = template.with_suffix(".lock")
        with files.TEMPLATE_LOCKS.hold(str(template)), files.file_lock(lock_file):
            if self._template_ok(template, ddl):
                return template
            temp = files.temp_path(template)
            try:
                self._build(temp, ddl)
                if not self._verify(temp, ddl, exact=True):
                    raise EngineError(
                        "schema template does not hold the tables its DDL declares; "
                        f"expected {sorted(t.name for t in expected_tables(ddl))}"
                    )
                files.fsync_file(temp)
                files.remove_with_sidecars(template)  # a stale or broken one, if any
                os.replace(temp, template)
                files.fsync_dir(template.parent)
                logger.info("built schema template %s", template.name)
            finally:
                files.remove_with_sidecars(temp)
            # The rename kept the inode and mtime we just verified; trust the new stamp.
            stamp = self._stamp(template)
            if stamp is not None:
                with self._verified_lock:
                    self._verified[str(template)] = stamp
            return template

    # ------------------------------------------------------------------ public API

    def create_database(self, path: Path, ddl: Sequence[str]) -> None:
        """Make a database holding ``ddl``'s schema at ``path``, all or nothing.

        Raises Conflict if ``path`` exists, EngineError (naming the failing statement) otherwise.
        """
        path = Path(path)
        ddl = list(ddl)
        path.parent.mkdir(parents=True, exist_ok=True)
        with files.WRITE_LOCKS.hold(files.lock_key(path)):
            if path.exists():
                raise Conflict(f"graph database already exists: {path.name}")
            self._create_locked(path, ddl)

    def _create_locked(self, path: Path, ddl: list[str]) -> None:
        files.remove_with_sidecars(path)  # orphaned sidecars would be replayed into the new file
        temp = files.temp_path(path)
        try:
            made = False
            if self.template_path(ddl) is not None:
                try:
                    self._copy(self._template(ddl), temp)
                    made = True
                except OSError as exc:  # template folder unusable: still serve the request
                    files.remove_with_sidecars(temp)
                    if exc.errno in files.DISK_FULL:  # the DDL would fill the same disk
                        raise
                    logger.warning("schema template unavailable (%s); running the DDL", exc)
            if not made:
                self._build(temp, ddl)
            files.publish(temp, path)
        except ProvisioningError:
            raise
        except Exception as exc:
            raise EngineError(f"cannot create graph database {path.name}: {exc}") from exc
        finally:
            files.remove_with_sidecars(temp)

    @staticmethod
    def _copy(template: Path, temp: Path) -> None:
        """A new database's bytes: the template copied into the temp file, and synced."""
        shutil.copyfile(template, temp)
        files.fsync_file(temp)

    def ensure_database(self, path: Path, ddl: Sequence[str]) -> bool:
        """Create ``path`` unless a complete one is there; True if this call made the file.

        For retries after a crash: a file holding (at least) the DDL's tables is kept as it
        is; a missing, empty, truncated or foreign file is replaced.
        """
        path = Path(path)
        ddl = list(ddl)
        path.parent.mkdir(parents=True, exist_ok=True)
        with files.WRITE_LOCKS.hold(files.lock_key(path)):
            if path.exists():
                if self._verify(path, ddl, exact=False):
                    return False
                logger.warning("replacing incomplete graph database %s", path.name)
            self._create_locked(path, ddl)
            return True

    def delete_database(self, path: Path) -> bool:
        """Remove the file and its sidecars; True if anything was removed."""
        path = Path(path)
        with files.WRITE_LOCKS.hold(files.lock_key(path)):
            evict_everywhere(path)
            try:
                return files.remove_with_sidecars(path, thorough=True)
            except OSError as exc:
                raise EngineError(f"cannot delete graph database {path.name}: {exc}") from exc

    def exists(self, path: Path) -> bool:
        return Path(path).is_file()

    def list_tables(self, path: Path) -> list[TableInfo]:
        """Tables in creation order (read-only open)."""
        with self.session(Path(path), read_only=True, pool=self.data_buffer_pool_bytes) as conn:
            return read_tables(conn)

    def execute(self, path: Path, statements: Sequence[Statement]) -> None:
        """Run the statements in one write transaction: all of them apply or none."""
        path = Path(path)
        with self.writing(path, pool=self.data_buffer_pool_bytes) as conn:
            run_in_transaction(conn, statements, label=f"{path.name}: statement")

    def query(
        self, path: Path, cypher: str, parameters: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Rows as dicts keyed by column name (read-only open, so it never blocks a writer)."""
        path = Path(path)
        with self.session(path, read_only=True, pool=self.data_buffer_pool_bytes) as conn:
            try:
                return rows(conn.execute(cypher, parameters or {}))
            except Exception as exc:
                raise EngineError(f"query failed on {path.name}: {exc}") from exc

    def _open_reader(self, path: Path) -> ladybug.Database:
        return self._open(path, read_only=True, pool=self.data_buffer_pool_bytes)

    def run_query(self, path: Path, cypher: str, parameters: dict[str, Any] | None, *,
                  read_only: bool, limits: QueryLimits,
                  check_write: Callable[[], None] | None = None) -> QueryResult:
        """A customer's query within ``limits``. It runs on the file's kept read-only handle
        (``readers``), where the engine refuses any write; a caller who may write and whose
        query the engine refused there gets it again on a writable open (the refusal comes
        before anything runs, so nothing is done twice)."""
        path = Path(path)
        try:
            with self.readers.connection(path) as conn:
                return queries.run(conn, cypher, parameters, limits)
        except Forbidden:
            if read_only:
                raise
        with self.writing(path, pool=self.data_buffer_pool_bytes, check=check_write) as conn:
            return queries.run(conn, cypher, parameters, limits)

    def count_rows(self, path: Path) -> dict[str, int]:
        """Rows per table (nodes or relationships)."""
        with self.session(Path(path), read_only=True, pool=self.data_buffer_pool_bytes) as conn:
            return {t.name: count(conn, t) for t in read_tables(conn)}


    def copy_tables(
        self,
        parent: Path,
        child: Path,
        *,
        tables: Sequence[str] | None = None,
        exclude: Sequence[str] | None = (),
    ) -> dict[str, int]:
        """Fork: copy rows of the chosen tables from ``parent`` into ``child`` (see ``fork``)."""
        return fork.copy_tables(self, parent, child, tables=tables, exclude=exclude)
