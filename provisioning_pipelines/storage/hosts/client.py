"""The HTTP client of a graph host server: the production ``GraphHost``.

One ``HostClient`` per host, holding one ``httpx.Client`` (its connections are reused). Every
call has a timeout; only calls the contract calls repeatable are retried, with backoff, and only
when the host did not answer or answered that it is briefly unavailable (502, 503, 504). A
circuit breaker per client counts calls in a row that found the host unreachable: after
``failure_threshold`` of them the host is not called for ``cool_down`` seconds, every call
failing at once with ``HostUnavailable``; then one call is let through (half-open), and its
outcome closes the breaker or opens it again. Errors name the host by id; its address stays in
the log. The host's own errors (``{"error", "message", "field"}``) come back as the same
``ProvisioningError`` subclass the host raised, except its token gate's 401, which is
``HostTokenRefused`` (a ``HostUnavailable`` that surely did nothing there): to a caller, a host
that refuses this process's token is one it cannot use until an operator fixes the token.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx

from provisioning_pipelines.errors import HostTokenRefused, HostUnavailable, ProvisioningError
from provisioning_pipelines.storage.hosts.contract import (
    BackupInfo,
    GraphHost,
    GraphInfo,
    Holding,
    HostAddress,
    HostHealth,
    check_backup_name,
    check_graph_id,
)
from provisioning_pipelines.storage.ladybug.queries import QueryLimits, QueryResult

logger = logging.getLogger(__name__)

#: Answers after which a repeatable call is tried again: the host is briefly unavailable.
_RETRY_STATUSES = frozenset({502, 503, 504})


def _error_classes() -> dict[str, type[ProvisioningError]]:
    found: dict[str, type[ProvisioningError]] = {}
    pending: list[type[ProvisioningError]] = [ProvisioningError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return found


class CircuitBreaker:
    """Closed, open for ``cool_down`` seconds after ``threshold`` failures in a row, then
    half-open: one trial call at a time decides."""

    def __init__(self, *, threshold: int = 5, cool_down: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.cool_down = cool_down
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self._trial = False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        with self._lock:
            if self.opened_at is None:
                return "closed"
            return "half-open" if self.clock() - self.opened_at >= self.cool_down else "open"

    def allow(self) -> bool:
        """Whether a call may go to the host now (in half-open, one trial at a time)."""
        with self._lock:
            if self.opened_at is None:
                return True
            if self.clock() - self.opened_at < self.cool_down or self._trial:
                return False
            self._trial = True
            return True

    def succeeded(self) -> None:
        with self._lock:
            self.failures, self.opened_at, self._trial = 0, None, False

    def failed(self) -> None:
        with self._lock:
            self.failures += 1
            self._trial = False
            if self.failures >= self.threshold or self.opened_at is not None:
                self.opened_at = self.clock()


class HostClient(GraphHost):
    """A graph host server, reached over HTTP with its bearer token."""

    def __init__(self, host_id: str, base_url: str, token: str, *, timeout: float = 10.0,
                 connect_timeout: float = 2.0, work_timeout: float = 900.0,
                 attempts: int = 3, backoff: float = 0.05,
                 breaker: CircuitBreaker | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.host_id = host_id
        #: Calls whose work grows with the graph (a fork, a backup, a restore: a copy of the
        #: file, and an upload or a download for a backup store) wait this long for the answer.
        self.work_timeout = httpx.Timeout(work_timeout, connect=connect_timeout)
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.breaker = breaker or CircuitBreaker()
        self._errors = _error_classes()
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), transport=transport,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout, connect=connect_timeout))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HostClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transport

    def _unavailable(self, why: str, *, reached: bool = True) -> HostUnavailable:
        return HostUnavailable(f"graph host {self.host_id} is unavailable: {why}",
                               reached=reached)

    def _call(self, method: str, path: str, *, body: Any = None, repeatable: bool,
              wait: float | None = None, long: bool = False, longer: float = 0.0) -> Any:
        """One call, retried if ``repeatable``; with ``wait``, one try that waits at most that
        many seconds for the answer; ``long``: work that grows with the graph; ``longer``:
        seconds the host may take beyond the client's timeout (a query's own time limit)."""
        tries = self.attempts if repeatable and wait is None else 1
        timeout: Any = httpx.USE_CLIENT_DEFAULT if wait is None else httpx.Timeout(wait)
        if long:
            timeout = self.work_timeout
        elif longer and wait is None:
            base = self._http.timeout
            timeout = httpx.Timeout(base.read + longer if base.read else None,
                                    connect=base.connect)
        reached = False  # whether any try may have reached the host
        for attempt in range(1, tries + 1):
            if not self.breaker.allow():
                raise self._unavailable(
                    f"{self.breaker.failures} calls in a row failed; not called again for "
                    f"{self.breaker.cool_down:g} s", reached=reached)
            try:
                response = self._http.request(method, path, json=body, timeout=timeout)
            except httpx.TransportError as exc:
                self.breaker.failed()
                # No connection made: the request surely never left this process.
                reached |= not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout
                                             | httpx.PoolTimeout)
                logger.warning("graph host %s (%s) %s %s: %s", self.host_id,
                               self._http.base_url, method, path, exc)
                if attempt == tries:
                    raise self._unavailable(f"no answer ({type(exc).__name__})",
                                            reached=reached) from None
            else:
                reached = True
                if response.status_code in _RETRY_STATUSES and attempt < tries:
                    self.breaker.succeeded()  # it answered: not down, only busy
                    response.close()
                else:
                    self.breaker.succeeded()
                    return self._answer(response)
            time.sleep(self.backoff * 2 ** (attempt - 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def _answer(self, response: httpx.Response) -> Any:
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.is_success:
            return payload
        if response.status_code == 401:  # the token gate: nothing was done on the host
            raise HostTokenRefused(
                f"graph host {self.host_id} is unavailable: it refused this process's token "
                "(GRAPH_HOST_TOKEN is not the one it serves with)", reached=False)
        if not isinstance(payload, dict) or "error" not in payload:
            raise self._unavailable(f"answered {response.status_code} without an error body")
        cls = self._errors.get(str(payload["error"]), ProvisioningError)
        error = cls(str(payload.get("message", "")), field=payload.get("field"))
        error.message = str(payload.get("message", ""))  # already redacted by the host
        raise error

    # ------------------------------------------------------------------ the contract

    def _graph(self, graph_id: str, *, field_name: str = "graph_id") -> str:
        return f"/v1/graphs/{check_graph_id(graph_id, field_name=field_name)}"

    def create(self, graph_id: str, ddl: Sequence[str]) -> GraphInfo:
        found = self._call("PUT", self._graph(graph_id), body={"ddl": list(ddl)},
                           repeatable=True)
        return GraphInfo(**found)

    def fork(self, child_id: str, parent_id: str, *, tables: Sequence[str] | None = None,
             exclude: Sequence[str] = ()) -> dict[str, int]:
        path = f"{self._graph(child_id)}/fork"
        check_graph_id(parent_id, field_name="parent_id")
        body = {"parent_id": parent_id, "tables": None if tables is None else list(tables),
                "exclude": list(exclude)}
        found = self._call("POST", path, body=body, repeatable=False, long=True)
        return {str(name): int(count) for name, count in found["copied"].items()}

    def checkpoint(self, graph_id: str) -> None:
        self._call("POST", f"{self._graph(graph_id)}/checkpoint", repeatable=True)

    def back_up(self, graph_id: str, name: str, *,
                expires_at: datetime | None = None) -> BackupInfo:
        found = self._call("PUT", f"{self._graph(graph_id)}/backups/{check_backup_name(name)}",
                           body={"expires_at": expires_at.isoformat() if expires_at else None},
                           repeatable=True, long=True)
        return BackupInfo(**found)

    def restore(self, graph_id: str, source_graph_id: str, name: str, sha256: str) -> None:
        # Repeatable: the same backup swapped in again is the same data.
        self._call("POST", f"{self._graph(graph_id)}/restore",
                   body={"source_graph_id": check_graph_id(source_graph_id,
                                                           field_name="source_graph_id"),
                         "name": check_backup_name(name), "sha256": sha256},
                   repeatable=True, long=True)

    def checksum(self, graph_id: str) -> str:
        return str(self._call("GET", f"{self._graph(graph_id)}/checksum",
                              repeatable=True, long=True)["sha256"])

    def freeze(self, graph_id: str) -> str:
        return str(self._call("POST", f"{self._graph(graph_id)}/freeze", repeatable=True,
                              long=True)["sha256"])

    def thaw(self, graph_id: str) -> bool:
        return bool(self._call("POST", f"{self._graph(graph_id)}/thaw",
                               repeatable=True)["thawed"])

    def copy_from(self, graph_id: str, source: HostAddress, sha256: str) -> None:
        self._call("POST", f"{self._graph(graph_id)}/copy",
                   body={"source": {"host_id": source.host_id, "url": source.url,
                                    "data_root": source.data_root}, "sha256": sha256},
                   repeatable=True, long=True)

    def delete_backup(self, graph_id: str, name: str) -> bool:
        found = self._call("DELETE", f"{self._graph(graph_id)}/backups/{check_backup_name(name)}",
                           repeatable=True)
        return bool(found["deleted"])

    def delete(self, graph_id: str) -> bool:
        return bool(self._call("DELETE", self._graph(graph_id), repeatable=True)["deleted"])

    def list(self) -> Holding:
        found = self._call("GET", "/v1/databases", repeatable=True)
        return Holding(tuple(found["graphs"]), tuple(found["unknown"]))

    def query(self, graph_id: str, cypher: str, params: Mapping[str, Any] | None = None, *,
              read_only: bool = True) -> list[dict[str, Any]]:
        body = {"cypher": cypher, "params": dict(params or {}), "read_only": read_only}
        found = self._call("POST", f"{self._graph(graph_id)}/query", body=body,
                           repeatable=read_only)
        return list(found["rows"])

    def run_query(self, graph_id: str, cypher: str, params: Mapping[str, Any] | None = None, *,
                  read_only: bool = True, limits: QueryLimits | None = None) -> QueryResult:
        limits = limits or QueryLimits()
        body = {"query": cypher, "parameters": dict(params or {}), "read_only": read_only,
                "limits": limits.to_dict()}
        found = self._call("POST", f"{self._graph(graph_id)}/run", body=body,
                           repeatable=read_only, longer=limits.timeout_seconds)
        return QueryResult.from_dict(found)

    def tables(self, graph_id: str) -> list[tuple[str, str]]:
        found = self._call("GET", f"{self._graph(graph_id)}/tables", repeatable=True)
        return [(str(name), str(kind)) for name, kind in found["tables"]]

    def quarantine(self, graph_id: str) -> bool:
        return bool(self._call("POST", f"{self._graph(graph_id)}/quarantine",
                               repeatable=True)["quarantined"])

    def size(self, graph_id: str, *, wait: float | None = None) -> int:
        return int(self._call("GET", f"{self._graph(graph_id)}/size", repeatable=True,
                              wait=wait)["size_bytes"])

    def health(self) -> HostHealth:
        found = self._call("GET", "/healthz", repeatable=True)
        return HostHealth(str(found["tier"]), int(found["capacity"]), int(found["used"]))
