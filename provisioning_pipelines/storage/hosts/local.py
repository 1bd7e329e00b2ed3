"""The graph host in-process: the ``LadybugEngine`` over files under one data root.

This is the embedded default, and what the host server runs behind its HTTP edge. Graph files
are ``<data root>/<graph id>.lbug`` (with LadybugDB's sidecars beside them), as the services
place them today. A host server keeps its own things under ``<data root>/.host/``: backups
(``backups/<graph id>/<name>.lbug``) and the schema templates that make a create a file copy;
in the embedded default those are the control plane's ``BACKUP_DIR`` and template folder. A
retried create tells "the same graph" from "another schema under that id" by the tables the
file holds, as ``LadybugEngine.ensure_database`` does.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from provisioning_pipelines.errors import (
    BackupDamaged,
    Conflict,
    EngineError,
    GraphMoving,
    HostUnavailable,
    InvalidRequest,
    NotFound,
    StorageFull,
)
from provisioning_pipelines.storage.backup_store import BackupStore, FolderStore
from provisioning_pipelines.storage.graph_ids import ANY_GRAPH_ID, GRAPH_ID
from provisioning_pipelines.storage.hosts.contract import (
    HOST_FOLDER,
    QUARANTINE,
    SUFFIX,
    BackupInfo,
    GraphHost,
    GraphInfo,
    Holding,
    HostAddress,
    HostHealth,
    backup_key,
    check_graph_id,
)
from provisioning_pipelines.storage.ladybug import (
    LadybugEngine,
    ddl_fingerprint,
    expected_tables,
    files,
)
from provisioning_pipelines.storage.ladybug import backups as ladybug_backups
from provisioning_pipelines.storage.ladybug.cypher import rows
from provisioning_pipelines.storage.ladybug.fork import FORK_WORKSPACE
from provisioning_pipelines.storage.ladybug.queries import QueryLimits, QueryResult
from provisioning_pipelines.storage.ladybug.query_text import check_query
from provisioning_pipelines.storage.ladybug.readers import evict_everywhere
from provisioning_pipelines.storage.ladybug.schema import table_keys

#: What LadybugDB says when a read-only open is asked to write.
_READ_ONLY_WRITE = "read-only database"
#: How ``LadybugEngine.query`` names a query that opened its file and then failed.
_QUERY_FAILED = "query failed on"
#: How the engine names a DDL statement that failed (``cypher.run_in_transaction``'s label).
_DDL_FAILED = "schema statement"
#: A move's copy arrives in pieces of this size (and is hashed on its way to the disk).
_CHUNK_BYTES = 4 * 1024 * 1024


class LocalHost(GraphHost):
    """A host whose files this process opens itself (it must be their only writer)."""

    def __init__(self, host_id: str, data_root: Path, *, tier: str, capacity: int,
                 engine: LadybugEngine | None = None, backup_dir: Path | None = None,
                 store: BackupStore | None = None, peer_token: str | None = None) -> None:
        self.host_id = host_id
        #: The bearer token this host sends to another host server it copies a graph from
        #: (hosts share ``GRAPH_HOST_TOKEN``).
        self.peer_token = peer_token
        self.data_root = Path(data_root)
        self.tier = tier
        self.capacity = capacity
        self.own = self.data_root / HOST_FOLDER
        self.engine = engine or LadybugEngine(template_dir=self.own / "templates")
        #: ``<backup_dir>/<graph id>/<name>.lbug``; the embedded default shares the control
        #: plane's ``BACKUP_DIR`` here, a host server keeps them under its own folder.
        self.backup_dir = backup_dir or self.own / "backups"
        #: Where backups are kept: that folder by default, or an S3 store every host shares.
        self.store = store or FolderStore(self.backup_dir)
        #: Consistent copies on their way into the store (a death's leftovers go at start).
        self.outgoing = self.own / "outgoing"
        #: One empty file per frozen graph: a move's last copy is under way.
        self.frozen = self.own / "frozen"
        self.data_root.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ paths

    def _path(self, graph_id: str, *, field_name: str = "graph_id") -> Path:
        return self.data_root / f"{check_graph_id(graph_id, field_name=field_name)}{SUFFIX}"

    def _held(self, graph_id: str, *, field_name: str = "graph_id") -> Path:
        path = self._path(graph_id, field_name=field_name)
        if not path.is_file():
            raise NotFound(f"{field_name}: graph {graph_id} is not on host {self.host_id}",
                           field=field_name)
        return path

    def file_of(self, graph_id: str) -> Path:
        """The graph's file, which a move copies (a host server streams it to its peer)."""
        return self._held(graph_id)

    def _writable(self, graph_id: str) -> Callable[[], None]:
        """The check every write runs under the file's write lock: refused while frozen."""
        marker = self.frozen / graph_id

        def check() -> None:
            if marker.exists():
                raise GraphMoving(f"graph_id: graph {graph_id} is moving to another host; "
                                  "it takes writes again in a few seconds", field="graph_id")
        return check

    # ------------------------------------------------------------------ the contract

    def create(self, graph_id: str, ddl: Sequence[str]) -> GraphInfo:
        path = self._path(graph_id)
        ddl = [str(statement) for statement in ddl]
        if not any(statement.strip() for statement in ddl):
            raise InvalidRequest("ddl: no statement given", field="ddl")
        fingerprint = ddl_fingerprint(ddl)
        with files.WRITE_LOCKS.hold(files.lock_key(path)):
            if path.exists() and self._same_schema(graph_id, path, ddl):
                return GraphInfo(graph_id, fingerprint, self._size(path), created=False)
            try:
                self.engine.ensure_database(path, ddl)
            except EngineError as exc:
                if _DDL_FAILED not in str(exc) or isinstance(exc, StorageFull):
                    raise
                raise InvalidRequest(f"ddl: {exc.message}", field="ddl") from exc
            self.thaw(graph_id)  # a graph made anew is nobody's move
            return GraphInfo(graph_id, fingerprint, self._size(path), created=True)

    def _same_schema(self, graph_id: str, path: Path, ddl: list[str]) -> bool:
        """A graph already there is this create's (a retry: the same tables) or a
        ``Conflict``; False for a file that does not open (a truncated or foreign one), which
        the engine replaces, as it does on a retry in this process."""
        try:
            held = table_keys(self.engine.list_tables(path))
        except EngineError:
            return False
        if held != table_keys(expected_tables(ddl)):
            raise Conflict(f"graph_id: graph {graph_id} exists on host {self.host_id} with "
                           "another schema (its tables: "
                           f"{', '.join(sorted(name for name, _ in held))})",
                           field="graph_id")
        return True

    def fork(self, child_id: str, parent_id: str, *, tables: Sequence[str] | None = None,
             exclude: Sequence[str] = ()) -> dict[str, int]:
        check_graph_id(child_id)
        parent = self._held(parent_id, field_name="parent_id")
        child = self._held(child_id)
        if parent == child:
            raise InvalidRequest("parent_id: a graph cannot be forked into itself",
                                 field="parent_id")
        return self.engine.copy_tables(parent, child, tables=tables, exclude=exclude)

    def checkpoint(self, graph_id: str) -> None:
        with self.engine.writing(self._held(graph_id)) as conn:
            conn.execute("CHECKPOINT")

    def back_up(self, graph_id: str, name: str, *,
                expires_at: datetime | None = None) -> BackupInfo:
        path = self._held(graph_id)
        key = backup_key(graph_id, name)
        kept = self.store.head(key)
        if kept is None:
            # Into a folder store the copy is made where it is kept (one copy, as before there
            # were stores); for S3 in the host's outgoing folder, removed once uploaded.
            in_place = isinstance(self.store, FolderStore)
            outgoing = (self.store.path_of(key) if in_place
                        else self.outgoing / graph_id / f"{name}{SUFFIX}")
            made = ladybug_backups.back_up(self.engine, path, outgoing)
            try:
                kept = self.store.put(key, outgoing, sha256=made.checksum,
                                      expires_at=expires_at, move=True,
                                      details={"graph_id": graph_id, "name": name,
                                               "host_id": self.host_id})
            finally:
                if not in_place:
                    outgoing.unlink(missing_ok=True)
                    for folder in (outgoing.parent, self.outgoing):
                        with contextlib.suppress(OSError):
                            folder.rmdir()
        return BackupInfo(graph_id, name, kept.size_bytes, kept.sha256,
                          location=f"{self.store.location.rstrip('/')}/{key}")

    def restore(self, graph_id: str, source_graph_id: str, name: str, sha256: str) -> None:
        path = self._held(graph_id)
        key = backup_key(source_graph_id, name)
        kept = self.store.head(key)
        if kept is not None:
            ladybug_backups.ensure_room_bytes(kept.size_bytes, path.parent, key)
        staged = files.temp_path(path)
        try:
            self.store.get(key, staged, sha256=sha256)
            files.fsync_file(staged)
            ladybug_backups.swap_in(self.engine, staged, path)
        finally:
            files.remove_with_sidecars(staged)

    def freeze(self, graph_id: str) -> str:
        path = self._held(graph_id)
        # Under the write lock: a write under way finishes first, and every later one finds
        # the marker (``_writable``) before it opens the file.
        with files.WRITE_LOCKS.hold(files.lock_key(path)):
            self.frozen.mkdir(parents=True, exist_ok=True)
            marker = self.frozen / graph_id
            marker.touch()
            files.fsync_dir(self.frozen)
            with self.engine.writing(path) as conn:
                conn.execute("CHECKPOINT")
        return ladybug_backups.checksum_of(path)

    def thaw(self, graph_id: str) -> bool:
        marker = self.frozen / check_graph_id(graph_id)
        if not marker.exists():
            return False
        marker.unlink(missing_ok=True)
        return True

    def copy_from(self, graph_id: str, source: HostAddress, sha256: str) -> None:
        path = self._held(graph_id)
        if source.host_id == self.host_id:
            raise InvalidRequest("source: a graph is not copied from its own host",
                                 field="source")
        staged = files.temp_path(path)
        try:
            if source.url is None:
                origin = Path(source.data_root) / path.name
                if not origin.is_file():
                    raise NotFound(f"graph_id: graph {graph_id} is not on host "
                                   f"{source.host_id}", field="graph_id")
                ladybug_backups.ensure_room(origin, path.parent)
                actual = ladybug_backups.copy_hashed(origin, staged)
            else:
                actual = self._fetch(graph_id, source, staged)
            if actual != sha256:
                raise BackupDamaged(f"graph_id: the copy of graph {graph_id} from host "
                                    f"{source.host_id} has sha256 {actual[:12]}…, not "
                                    f"{sha256[:12]}… (it changed while it was copied)",
                                    field="graph_id")
            files.fsync_file(staged)
            ladybug_backups.swap_in(self.engine, staged, path)
        finally:
            files.remove_with_sidecars(staged)

    def _fetch(self, graph_id: str, source: HostAddress, staged: Path) -> str:
        """Stream the source host server's file of the graph into ``staged``; its sha256."""
        if not self.peer_token:
            raise HostUnavailable(f"graph host {source.host_id} is unavailable: this host has "
                                  "no GRAPH_HOST_TOKEN to reach it with", reached=False)
        url = f"{str(source.url).rstrip('/')}/v1/graphs/{graph_id}/file"
        digest = hashlib.sha256()
        try:
            with httpx.stream("GET", url, headers={"Authorization": f"Bearer {self.peer_token}"},
                              timeout=httpx.Timeout(60.0, connect=5.0)) as answer:
                if answer.status_code == 404:
                    raise NotFound(f"graph_id: graph {graph_id} is not on host "
                                   f"{source.host_id}", field="graph_id")
                if answer.status_code != 200:
                    raise HostUnavailable(f"graph host {source.host_id} is unavailable: it "
                                          f"answered {answer.status_code} to the copy")
                size = answer.headers.get("content-length", "")
                if size.isdigit():
                    ladybug_backups.ensure_room_bytes(int(size), staged.parent,
                                                      f"{graph_id}{SUFFIX}")
                with staged.open("wb") as out:
                    for chunk in answer.iter_bytes(_CHUNK_BYTES):
                        digest.update(chunk)
                        out.write(chunk)
        except httpx.HTTPError as exc:
            raise HostUnavailable(f"graph host {source.host_id} is unavailable: the copy "
                                  f"broke off ({type(exc).__name__})") from None
        except OSError as exc:
            if exc.errno in files.DISK_FULL:
                raise StorageFull(f"the disk ran out of space while copying graph {graph_id}"
                                  f" from host {source.host_id}") from exc
            raise
        return digest.hexdigest()

    def checksum(self, graph_id: str) -> str:
        return ladybug_backups.checksum_of(self._held(graph_id))

    def delete_backup(self, graph_id: str, name: str) -> bool:
        removed = self.store.delete(backup_key(graph_id, name))
        folder = self.backup_dir / graph_id
        with contextlib.suppress(OSError):  # the graph's last backup: its folder goes too
            folder.rmdir()
        return removed

    def delete(self, graph_id: str) -> bool:
        removed = self.engine.delete_database(self._path(graph_id))
        self.thaw(graph_id)  # a moved graph's old copy: its freeze goes with it
        return removed

    def list(self) -> Holding:
        graphs, unknown = [], []
        names = set(os.listdir(self.data_root))
        for name in sorted(names):
            stem = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else None
            if name in (HOST_FOLDER, QUARANTINE):
                continue
            if stem is not None and ANY_GRAPH_ID.fullmatch(stem) and \
                    (self.data_root / name).is_file():
                graphs.append(stem)
            elif not self._is_sidecar(name, names):
                unknown.append(name)
        return Holding(tuple(graphs), tuple(unknown))

    @staticmethod
    def _is_sidecar(name: str, names: set[str]) -> bool:
        """A file LadybugDB keeps beside a graph that is there (``x.lbug.wal`` ...)."""
        head, dot, tail = name.partition(f"{SUFFIX}.")
        return bool(dot) and f"{head}{SUFFIX}" in names and \
            tail.startswith(files.SIDECAR_PREFIXES)

    def query(self, graph_id: str, cypher: str, params: Mapping[str, Any] | None = None, *,
              read_only: bool = True) -> list[dict[str, Any]]:
        path = self._held(graph_id)
        if not isinstance(cypher, str) or not cypher.strip():
            raise InvalidRequest("cypher: no query given", field="cypher")
        try:
            if read_only:
                return self.engine.query(path, cypher, dict(params or {}))
            with self.engine.writing(path, pool=self.engine.data_buffer_pool_bytes,
                                     check=self._writable(graph_id)) as conn:
                try:
                    return rows(conn.execute(cypher, dict(params or {})))
                except Exception as exc:
                    raise EngineError(f"{_QUERY_FAILED} {path.name}: {exc}") from exc
        except EngineError as exc:
            if _READ_ONLY_WRITE in str(exc):
                raise InvalidRequest("cypher: a read-only query cannot write (ask with "
                                     "read_only false)", field="cypher") from exc
            if _QUERY_FAILED in str(exc):  # opened, then the text failed: the query's fault
                raise InvalidRequest(f"cypher: {exc.message}", field="cypher") from exc
            raise

    def run_query(self, graph_id: str, cypher: str, params: Mapping[str, Any] | None = None, *,
                  read_only: bool = True, limits: QueryLimits | None = None) -> QueryResult:
        """On the file's kept read-only handle (``LadybugEngine.run_query``), so a query costs
        no open; see ``storage/ladybug/readers.py`` for why read-only and how it stays fresh."""
        limits = limits or QueryLimits()
        path = self._held(graph_id)
        check_query(cypher, limits)
        if params is not None and not isinstance(params, Mapping):
            raise InvalidRequest("parameters: must be an object", field="parameters")
        return self.engine.run_query(path, cypher, dict(params or {}), read_only=read_only,
                                     limits=limits, check_write=self._writable(graph_id))

    def tables(self, graph_id: str) -> list[tuple[str, str]]:
        return [(table.name, table.kind) for table in
                self.engine.list_tables(self._held(graph_id))]

    def quarantine(self, graph_id: str) -> bool:
        path = self._path(graph_id)
        folder = self.data_root / QUARANTINE
        stamp = time.strftime("%Y%m%dT%H%M%S")
        moved = False
        with files.WRITE_LOCKS.hold(files.lock_key(path)):
            evict_everywhere(path)
            self.thaw(graph_id)
            for part in (path, *files.sidecars(path)):
                if part.exists():
                    folder.mkdir(exist_ok=True)
                    os.replace(part, folder / f"{part.name}.{stamp}")
                    moved = True
        return moved

    def size(self, graph_id: str, *, wait: float | None = None) -> int:
        return self._size(self._held(graph_id))  # a stat or two: never waits

    @staticmethod
    def _size(path: Path) -> int:
        total = 0
        for part in (path, *files.sidecars(path)):
            with contextlib.suppress(FileNotFoundError):
                total += part.stat().st_size
        return total

    def remove_leftovers(self) -> list[str]:
        """Remove what calls cut short by this process's death left on its disk: half-made temp
        files (a graph's, a template's, a backup's, with their sidecars) and fork workspaces;
        their names, relative to the data root. Only while no call runs (a host server at its
        start, before it serves): a live call's temp file looks the same."""
        removed = []
        if self.outgoing.is_dir():  # copies no backup call lived to keep: it is retried whole
            shutil.rmtree(self.outgoing, ignore_errors=True)
            removed.append(str(self.outgoing.relative_to(self.data_root)))
        backups = sorted(self.backup_dir.iterdir()) if self.backup_dir.is_dir() else []
        for folder in (self.data_root, self.own / "templates", *backups):
            if not folder.is_dir():
                continue
            for entry in sorted(folder.iterdir()):
                if entry.is_file() and files.TEMP_NAME.fullmatch(entry.name):
                    files.remove_with_sidecars(entry)
                elif folder == self.data_root and entry.is_dir() and \
                        entry.name.startswith(FORK_WORKSPACE):
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    continue
                removed.append(str(entry.relative_to(self.data_root)))
        return removed

    def health(self) -> HostHealth:
        return HostHealth(self.tier, self.capacity,
                          sum(1 for graph_id in self.list().graphs if GRAPH_ID.fullmatch(graph_id)))
