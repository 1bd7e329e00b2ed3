"""The graph engine: LadybugDB database files, created, queried, forked and deleted.

Why it looks the way it does (LadybugDB 0.22, measured on 2 cores):

* Only one *process* may hold a writable handle on a file, and within one process LadybugDB does
  not stop a second writable handle at all (it would corrupt the file). So every call opens,
  works and closes; writes to one path are serialised by a process-wide lock, and an open that
  meets another process's lock is retried until ``lock_timeout``.
* Opening costs ~10-20 ms whatever the buffer pool size up to a few GiB (the default pool, 80 %
  of RAM, adds ~20 ms), and the pool is only reserved, not touched, until used. So each open
  picks its pool: ``buffer_pool_bytes`` (16 MiB) for schema work, ``data_buffer_pool_bytes``
  for queries and writes (16 MiB fails "buffer pool is full" on a GROUP BY over 300k nodes) and
  more for bulk ``COPY``, which pins ~1-2 MiB per column of the table being loaded.
* Every open ``Database`` reserves ``max_db_size`` of address space (8 TiB by default), which
  caps a process at ~15 open databases; we pass a smaller power of two.
* Running the schema DDL costs ~30-40 ms; copying a file that already holds the schema ~1 ms. So
  ``create_database`` copies a verified per-schema *template* when ``template_dir`` is set.
* A database file is only ever made in a temp file next to its final path and published with a
  no-clobber hard link (or an atomic rename), so a crash never leaves a half-made file there.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ladybug

from provisioning_pipelines.errors import Conflict, EngineError, NotFound, ProvisioningError

try:  # POSIX only; elsewhere the atomic rename alone keeps template builds safe.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
# Files LadybugDB 0.22 keeps beside a database "x.lbug" (names found in the library): the fixed
# ones are checked with a stat each; "x.lbug.pk_validator.<n>.tmp" needs a directory scan, done
# only when deleting or when a fixed one shows the file was not closed cleanly.
SIDECAR_PREFIXES = ("wal", "shadow", "checkpoint", "pinned", "pk_validator", "tmp", "lock")
_FIXED_SIDECARS = (
    ".wal",
    ".shadow",
    ".checkpoint",
    ".checkpoint.intent.lock",
    ".checkpoint.apply.lock",
    ".pinned.tmp",
)

Statement = str | tuple[str, Mapping[str, Any]]

_CREATE_TABLE_RE = re.compile(
    r"^\s*CREATE\s+(NODE|REL)\s+TABLE\s+(?:GROUP\s+)?(?:IF\s+NOT\s+EXISTS\s+)?"
    r"(`[^`]+`|[A-Za-z_][A-Za-z0-9_]*)",
    re.IGNORECASE,
)
# Another process holds the write lock: worth waiting up to ``lock_timeout``.
_LOCKED = "Could not set lock"
# A reader met a checkpoint in progress, or the file is truncated (same message): a short wait
# tells the two apart without stalling ensure_database on a damaged file.
_CHECKPOINTING = "please retry later"
_CHECKPOINT_WAIT = 0.25


@dataclass(frozen=True)
class TableInfo:
    name: str
    kind: str  # "NODE" | "REL"


def ddl_fingerprint(ddl: Sequence[str]) -> str:
    """sha256 of the normalised statements: the template file name for a schema.

    Same algorithm as ``services.schemas.ddl_fingerprint`` (a test keeps them equal); repeated
    here because storage must not import from the services layer above it.
    """
    digest = hashlib.sha256()
    for statement in ddl:
        normalised = " ".join(statement.split()).rstrip(";").rstrip()
        if normalised:
            digest.update(normalised.encode("utf-8"))
            digest.update(b"\x00")
    return digest.hexdigest()


def expected_tables(ddl: Sequence[str]) -> list[TableInfo]:
    """The tables a DDL list creates, read from its ``CREATE ... TABLE`` statements."""
    return list(_schema_key(tuple(ddl))[1])


@functools.lru_cache(maxsize=256)
def _schema_key(ddl: tuple[str, ...]) -> tuple[str, tuple[TableInfo, ...]]:
    """Fingerprint and expected tables, cached: the same few schemas are created all day."""
    tables: list[TableInfo] = []
    for statement in ddl:
        match = _CREATE_TABLE_RE.match(statement)
        if match:
            tables.append(TableInfo(match.group(2).strip("`"), match.group(1).upper()))
    return ddl_fingerprint(ddl), tuple(tables)


def _table_keys(tables: Sequence[TableInfo]) -> set[tuple[str, str]]:
    # LadybugDB table names are case-insensitive.
    return {(t.name.lower(), t.kind) for t in tables}


class _KeyedLocks:
    """One lock per key, created on demand and dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, list[Any]] = {}

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            entry = self._locks.setdefault(key, [threading.Lock(), 0])
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
_WRITE_LOCKS = _KeyedLocks()
_TEMPLATE_LOCKS = _KeyedLocks()


def _lock_key(path: Path) -> str:
    return os.path.realpath(path)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
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


def _quote(name: str) -> str:
    if "`" in name:
        raise EngineError(f"table or column name {name!r} cannot be quoted")
    return f"`{name}`"


def _name_literal(name: str) -> str:
    """A table name as a Cypher string literal (``table_info('T')``, ``from='T'``)."""
    if "'" in name or "\\" in name:
        raise EngineError(f"table name {name!r} cannot be used in a procedure call")
    return f"'{name}'"


def _path_literal(path: Path) -> str:
    """A Cypher string literal for a file path (COPY takes no parameters for it)."""
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _short(statement: str, limit: int = 120) -> str:
    flat = " ".join(statement.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
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


def _remove_with_sidecars(path: Path, *, thorough: bool = False) -> bool:
    """Remove ``path`` and its sidecars; scans the folder only if ``thorough`` or needed."""
    removed = _remove(path)
    if thorough or has_sidecars(path):
        for extra in sidecars(path):
            removed = _remove(extra) or removed
    return removed


@dataclass
class _Table:
    """What a fork needs to know about one table of a database."""

    name: str
    kind: str
    columns: list[tuple[str, str]] = field(default_factory=list)  # (name, type)
    primary_key: str | None = None
    # REL only: (from table, to table, from primary key, to primary key) per connection.
    pairs: list[tuple[str, str, str, str]] = field(default_factory=list)

    def column_names(self) -> set[str]:
        return {name.lower() for name, _ in self.columns}


_FILE = "\x00file\x00"  # replaced by the parquet path; cannot occur in a checked name


@dataclass
class _CopyStep:
    table: str
    export: str  # the MATCH ... RETURN query run on the parent
    load: str  # the COPY ... FROM statement run on the child; _FILE marks the file


def _rows(result: Any) -> list[dict[str, Any]]:
    if isinstance(result, list):  # several statements: LadybugDB returns one result each
        result = result[-1]
    columns = result.get_column_names()
    rows = [dict(zip(columns, row, strict=True)) for row in result.get_all()]
    result.close()
    return rows


def _read_tables(conn: ladybug.Connection) -> list[TableInfo]:
    rows = _rows(conn.execute("CALL show_tables() RETURN *"))
    rows.sort(key=lambda row: row["id"])
    return [TableInfo(str(row["name"]), str(row["type"])) for row in rows]


def _read_schema(conn: ladybug.Connection) -> dict[str, _Table]:
    """Tables with their columns, keys and rel connections, keyed by lower-case name."""
    schema: dict[str, _Table] = {}
    for info in _read_tables(conn):
        table = _Table(info.name, info.kind)
        for row in _rows(conn.execute(f"CALL table_info({_name_literal(info.name)}) RETURN *")):
            table.columns.append((str(row["name"]), str(row["type"])))
            if row.get("primary key"):
                table.primary_key = str(row["name"])
        if info.kind == "REL":
            for row in _rows(
                conn.execute(f"CALL show_connection({_name_literal(info.name)}) RETURN *")
            ):
                table.pairs.append(
                    (
                        str(row["source table name"]),
                        str(row["destination table name"]),
                        str(row["source table primary key"]),
                        str(row["destination table primary key"]),
                    )
                )
        schema[info.name.lower()] = table
    return schema


def _count(conn: ladybug.Connection, table: TableInfo | _Table) -> int:
    if table.kind == "NODE":
        query = f"MATCH (n:{_quote(table.name)}) RETURN count(n) AS c"
    else:
        query = f"MATCH ()-[r:{_quote(table.name)}]->() RETURN count(r) AS c"
    return int(_rows(conn.execute(query))[0]["c"])


class LadybugEngine:
    """Creates, reads, forks and deletes LadybugDB files; never keeps a handle between calls."""

    def __init__(
        self,
        *,
        buffer_pool_bytes: int = 16 * MiB,
        template_dir: Path | None = None,
        use_templates: bool = True,
        data_buffer_pool_bytes: int = 256 * MiB,
        max_db_bytes: int = 1 << 40,
        lock_timeout: float = 10.0,
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

    # ------------------------------------------------------------------ handles

    def _open(self, path: Path, *, read_only: bool, pool: int | None) -> ladybug.Database:
        """Open a database, retrying while another process holds the write lock."""
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
    def _session(
        self, path: Path, *, read_only: bool, pool: int | None = None
    ) -> Iterator[ladybug.Connection]:
        """One open-work-close cycle; the handle is closed whatever happens."""
        if read_only and not path.is_file():
            raise NotFound(f"graph database not found: {path.name}")
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

    @contextlib.contextmanager
    def _writing(self, path: Path, *, pool: int | None = None) -> Iterator[ladybug.Connection]:
        """A writable session on an existing file, serialised with other writers in-process."""
        with _WRITE_LOCKS.hold(_lock_key(path)):
            # Checked under the lock: opening a missing path read-write would create it.
            if not path.is_file():
                raise NotFound(f"graph database not found: {path.name}")
            with self._session(path, read_only=False, pool=pool) as conn:
                yield conn

    # ------------------------------------------------------------------ building files

    @staticmethod
    def _temp_path(path: Path) -> Path:
        # Hidden and unique; never matches another database's sidecar pattern.
        return path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"

    def _build(self, target: Path, ddl: Sequence[str]) -> None:
        """Run the DDL into a fresh file (one transaction) and leave it checkpointed."""
        with self._session(target, read_only=False) as conn:
            conn.execute("BEGIN TRANSACTION")
            for index, statement in enumerate(ddl, start=1):
                try:
                    conn.execute(statement)
                except Exception as exc:
                    with contextlib.suppress(Exception):  # a failed statement ends the txn
                        conn.execute("ROLLBACK")
                    raise EngineError(
                        f"schema statement {index} failed: {_short(statement)}: {exc}"
                    ) from exc
            conn.execute("COMMIT")
        self._ensure_checkpointed(target)

    def _ensure_checkpointed(self, target: Path) -> None:
        """A clean close checkpoints; make sure, since a copied file must stand alone."""
        if not Path(f"{target}.wal").exists():
            return
        with self._session(target, read_only=False) as conn:
            conn.execute("CHECKPOINT")
        if Path(f"{target}.wal").exists():
            raise EngineError(f"graph database {target.name} kept a WAL after checkpoint")

    def _verify(self, path: Path, expected: Sequence[TableInfo], *, exact: bool) -> bool:
        """Open read-only and compare tables (exact, or at least the expected ones)."""
        try:
            with self._session(path, read_only=True) as conn:
                actual = _table_keys(_read_tables(conn))
        except NotFound:
            return False
        except EngineError as exc:  # corrupt files fail in open or in the first query
            logger.info("graph database %s failed verification: %s", path.name, exc)
            return False
        wanted = _table_keys(expected)
        return actual == wanted if exact else wanted <= actual

    @staticmethod
    def _publish(temp: Path, path: Path) -> None:
        """Put a finished file at ``path`` without ever overwriting one that appeared."""
        try:
            os.link(temp, path)
        except FileExistsError as exc:
            raise Conflict(f"graph database already exists: {path.name}") from exc
        except OSError:  # no hard links on this filesystem: check, then rename
            if path.exists():
                raise Conflict(f"graph database already exists: {path.name}") from None
            os.replace(temp, path)
        _fsync_dir(path.parent)

    # ------------------------------------------------------------------ templates

    def template_path(self, ddl: Sequence[str]) -> Path | None:
        """Where the template for this DDL lives (None when templates are off)."""
        if not self.use_templates or self.template_dir is None:
            return None
        return self.template_dir / f"{_schema_key(tuple(ddl))[0]}.lbug"

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int, int] | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _template_ok(self, template: Path, expected: Sequence[TableInfo]) -> bool:
        """Verified once per process and file version (inode, size, mtime), then trusted."""
        stamp = self._stamp(template)
        if stamp is None:
            return False
        if has_sidecars(template):  # someone opened it for writing: not a clean copy source
            return False
        with self._verified_lock:
            if self._verified.get(str(template)) == stamp:
                return True
        if not self._verify(template, expected, exact=True):
            return False
        with self._verified_lock:
            self._verified[str(template)] = stamp
        return True

    def _template(self, ddl: Sequence[str], expected: Sequence[TableInfo]) -> Path:
        """The verified template for ``ddl``, built once under a thread and a file lock."""
        template = self.template_path(ddl)
        assert template is not None
        if self._template_ok(template, expected):
            return template
        template.parent.mkdir(parents=True, exist_ok=True)
        lock_file = template.with_suffix(".lock")
        with _TEMPLATE_LOCKS.hold(str(template)), _file_lock(lock_file):
            if self._template_ok(template, expected):
                return template
            temp = self._temp_path(template)
            try:
                self._build(temp, ddl)
                if not self._verify(temp, expected, exact=True):
                    raise EngineError(
                        "schema template does not hold the tables its DDL declares; "
                        f"expected {sorted(t.name for t in expected)}"
                    )
                _fsync_file(temp)
                _remove_with_sidecars(template)  # a stale or broken one, if any
                os.replace(temp, template)
                _fsync_dir(template.parent)
                logger.info("built schema template %s", template.name)
            finally:
                _remove_with_sidecars(temp)
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
        with _WRITE_LOCKS.hold(_lock_key(path)):
            if path.exists():
                raise Conflict(f"graph database already exists: {path.name}")
            self._create_locked(path, ddl)

    def _create_locked(self, path: Path, ddl: list[str]) -> None:
        _remove_with_sidecars(path)  # orphaned sidecars would be replayed into the new file
        temp = self._temp_path(path)
        try:
            made = False
            if self.template_path(ddl) is not None:
                try:
                    template = self._template(ddl, expected_tables(ddl))
                    shutil.copyfile(template, temp)
                    _fsync_file(temp)
                    made = True
                except OSError as exc:  # template folder unusable: still serve the request
                    logger.warning("schema template unavailable (%s); running the DDL", exc)
                    _remove_with_sidecars(temp)
            if not made:
                self._build(temp, ddl)
            self._publish(temp, path)
        except ProvisioningError:
            raise
        except Exception as exc:
            raise EngineError(f"cannot create graph database {path.name}: {exc}") from exc
        finally:
            _remove_with_sidecars(temp)

    def ensure_database(self, path: Path, ddl: Sequence[str]) -> bool:
        """Create ``path`` unless a complete one is there; True if this call made the file.

        For retries after a crash: a file holding (at least) the DDL's tables is kept as it
        is; a missing, empty, truncated or foreign file is replaced.
        """
        path = Path(path)
        ddl = list(ddl)
        path.parent.mkdir(parents=True, exist_ok=True)
        with _WRITE_LOCKS.hold(_lock_key(path)):
            if path.exists():
                if self._verify(path, expected_tables(ddl), exact=False):
                    return False
                logger.warning("replacing incomplete graph database %s", path.name)
            self._create_locked(path, ddl)
            return True

    def delete_database(self, path: Path) -> bool:
        """Remove the file and its sidecars; True if anything was removed."""
        path = Path(path)
        with _WRITE_LOCKS.hold(_lock_key(path)):
            try:
                return _remove_with_sidecars(path, thorough=True)
            except OSError as exc:
                raise EngineError(f"cannot delete graph database {path.name}: {exc}") from exc

    def exists(self, path: Path) -> bool:
        return Path(path).is_file()

    def list_tables(self, path: Path) -> list[TableInfo]:
        """Tables in creation order (read-only open)."""
        with self._session(Path(path), read_only=True) as conn:
            return _read_tables(conn)

    def execute(self, path: Path, statements: Sequence[Statement]) -> None:
        """Run the statements in one write transaction: all of them apply or none."""
        path = Path(path)
        with self._writing(path, pool=self.data_buffer_pool_bytes) as conn:
            conn.execute("BEGIN TRANSACTION")
            for index, item in enumerate(statements, start=1):
                cypher, parameters = (item, {}) if isinstance(item, str) else item
                try:
                    conn.execute(cypher, dict(parameters))
                except Exception as exc:
                    with contextlib.suppress(Exception):
                        conn.execute("ROLLBACK")
                    raise EngineError(
                        f"statement {index} failed on {path.name}: {_short(cypher)}: {exc}"
                    ) from exc
            try:
                conn.execute("COMMIT")
            except Exception as exc:
                raise EngineError(f"commit failed on {path.name}: {exc}") from exc

    def query(
        self, path: Path, cypher: str, parameters: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Rows as dicts keyed by column name (read-only open, so it never blocks a writer)."""
        path = Path(path)
        with self._session(path, read_only=True, pool=self.data_buffer_pool_bytes) as conn:
            try:
                return _rows(conn.execute(cypher, parameters or {}))
            except Exception as exc:
                raise EngineError(f"query failed on {path.name}: {exc}") from exc

    def count_rows(self, path: Path) -> dict[str, int]:
        """Rows per table (nodes or relationships)."""
        with self._session(Path(path), read_only=True, pool=self.data_buffer_pool_bytes) as conn:
            return {t.name: _count(conn, t) for t in _read_tables(conn)}

    def copy_tables(
        self,
        parent: Path,
        child: Path,
        *,
        tables: Sequence[str] | None = None,
        exclude: Sequence[str] | None = (),
    ) -> dict[str, int]:
        """Fork: copy rows of the chosen tables from ``parent`` into ``child``.

        Chosen = ``tables`` (all when None) minus names matching an fnmatch ``exclude`` pattern,
        present in both files (names compare case-insensitively). A rel table is copied only
        for connections whose two node tables are copied. Columns are matched by name, so a
        child with extra columns gets NULLs. All loads run in one transaction on the child, so
        a failed fork adds no rows. Returns rows added per copied table.
        """
        parent, child = Path(parent), Path(child)
        exclude = exclude or ()
        if isinstance(tables, str) or isinstance(exclude, str):
            raise TypeError("tables and exclude must be sequences of names, not a string")
        if not parent.is_file():
            raise NotFound(f"parent graph database not found: {parent.name}")
        if not child.is_file():
            raise NotFound(f"graph database not found: {child.name}")
        if os.path.samefile(parent, child):
            raise EngineError("cannot fork a graph database into itself")
        workdir = Path(tempfile.mkdtemp(prefix=f".fork-{child.name}-", dir=child.parent))
        try:
            return self._copy(parent, child, tables, exclude, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _copy_pool(self, *schemas: dict[str, _Table]) -> int:
        """Bulk COPY pins ~1-2 MiB per column of the target table (lists count twice)."""
        widest = 0
        for schema in schemas:
            for table in schema.values():
                width = sum(2 if type_.endswith("]") else 1 for _, type_ in table.columns)
                widest = max(widest, width)
        return max(self.buffer_pool_bytes, self.data_buffer_pool_bytes, 64 * MiB + widest * 4 * MiB)

    def _copy(
        self,
        parent: Path,
        child: Path,
        tables: Sequence[str] | None,
        exclude: Sequence[str],
        workdir: Path,
    ) -> dict[str, int]:
        with self._session(parent, read_only=True, pool=self.data_buffer_pool_bytes) as source:
            try:
                parent_schema = _read_schema(source)
            except Exception as exc:
                raise EngineError(f"cannot read the schema of {parent.name}: {exc}") from exc
            with self._writing(child, pool=self._copy_pool(parent_schema)) as target:
                child_schema = _read_schema(target)
                steps = _plan_copy(parent_schema, child_schema, tables, exclude)
                if not steps:
                    return {}
                copied = {child_schema[s.table.lower()].name for s in steps}
                # Empty tables are "copied" without a file: each COPY pair costs ~10 ms.
                empty = {
                    name for name in copied if _count(source, parent_schema[name.lower()]) == 0
                }
                steps = [step for step in steps if step.table not in empty]
                files: list[Path] = []
                for index, step in enumerate(steps):
                    file = workdir / f"{index:03d}.parquet"
                    try:
                        source.execute(f"COPY ({step.export}) TO {_path_literal(file)}")
                    except Exception as exc:
                        raise EngineError(
                            f"fork export of {step.table} from {parent.name} failed: {exc}"
                        ) from exc
                    files.append(file)
                loaded = {step.table for step in steps}
                before = {name: _count(target, child_schema[name.lower()]) for name in loaded}
                target.execute("BEGIN TRANSACTION")
                for step, file in zip(steps, files, strict=True):
                    statement = step.load.replace(_FILE, _path_literal(file))
                    try:
                        target.execute(statement)
                    except Exception as exc:
                        with contextlib.suppress(Exception):
                            target.execute("ROLLBACK")
                        raise EngineError(
                            f"fork load failed on {child.name}: {_short(statement)}: {exc}"
                        ) from exc
                try:
                    target.execute("COMMIT")
                except Exception as exc:
                    raise EngineError(f"fork commit failed on {child.name}: {exc}") from exc
                return {
                    name: (
                        _count(target, child_schema[name.lower()]) - before[name]
                        if name in loaded
                        else 0
                    )
                    for name in sorted(copied)
                }


def _plan_copy(
    parent: dict[str, _Table],
    child: dict[str, _Table],
    tables: Sequence[str] | None,
    exclude: Sequence[str],
) -> list[_CopyStep]:
    """Which tables, columns and rel connections to copy: node tables first, then rels."""
    wanted = set(parent) if tables is None else {str(t).lower() for t in tables}
    patterns = [str(p).lower() for p in exclude]

    def chosen(key: str, kind: str) -> bool:
        return (
            key in wanted
            and key in parent
            and key in child
            and parent[key].kind == kind
            and child[key].kind == kind
            and not any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)
        )

    steps: list[_CopyStep] = []
    nodes: set[str] = set()
    for key in parent:
        if not chosen(key, "NODE"):
            continue
        source, target = parent[key], child[key]
        columns = [name for name, _ in target.columns if name.lower() in source.column_names()]
        if target.primary_key is None or target.primary_key.lower() not in {
            c.lower() for c in columns
        }:
            raise EngineError(
                f"cannot fork table {target.name}: the parent has no column "
                f"{target.primary_key!r} for its primary key"
            )
        returned = ", ".join(f"n.{_quote(c)}" for c in columns)
        steps.append(
            _CopyStep(
                target.name,
                f"MATCH (n:{_quote(source.name)}) RETURN {returned}",
                f"COPY {_quote(target.name)}({', '.join(map(_quote, columns))}) FROM {_FILE}",
            )
        )
        nodes.add(key)
    for key in parent:
        if not chosen(key, "REL"):
            continue
        source, target = parent[key], child[key]
        columns = [name for name, _ in target.columns if name.lower() in source.column_names()]
        target_pairs = {(f.lower(), t.lower()) for f, t, _, _ in target.pairs}
        for from_table, to_table, from_pk, to_pk in source.pairs:
            ends = (from_table.lower(), to_table.lower())
            if ends not in target_pairs or not set(ends) <= nodes:
                continue
            returned = ", ".join(
                [f"a.{_quote(from_pk)}", f"b.{_quote(to_pk)}"] + [f"r.{_quote(c)}" for c in columns]
            )
            steps.append(
                _CopyStep(
                    target.name,
                    f"MATCH (a:{_quote(from_table)})-[r:{_quote(source.name)}]->"
                    f"(b:{_quote(to_table)}) RETURN {returned}",
                    f"COPY {_quote(target.name)}({', '.join(map(_quote, columns))}) FROM {_FILE}"
                    f" (from={_name_literal(child[ends[0]].name)},"
                    f" to={_name_literal(child[ends[1]].name)})",
                )
            )
    return steps
