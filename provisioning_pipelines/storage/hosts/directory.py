"""From a host's registration to the ``GraphHost`` that reaches it.

A host registered without a ``url`` is a local one: this process opens its files under its
``data_root`` (``LocalHost``, the embedded default). One with a ``url`` is a host server, reached
by a ``HostClient`` with the shared ``GRAPH_HOST_TOKEN``; this process never opens its files.
Each is made once per process and kept by host id, so a client's connections and its circuit
breaker live as long as the process, and a flow's step asks for its graph's host without another
query once the host has been seen (a host's url does not change while it is registered).
"""

from __future__ import annotations

import threading
from pathlib import Path

from provisioning_pipelines.errors import HostUnavailable
from provisioning_pipelines.storage.backup_store import BackupStore
from provisioning_pipelines.storage.hosts.client import HostClient
from provisioning_pipelines.storage.hosts.contract import GraphHost, HostAddress
from provisioning_pipelines.storage.hosts.local import LocalHost
from provisioning_pipelines.storage.ladybug import LadybugEngine


class HostDirectory:
    """The graph hosts of one process, by id."""

    def __init__(self, engine: LadybugEngine, *, token: str | None, backup_dir: Path | None,
                 timeout: float = 10.0, work_timeout: float = 900.0,
                 store: BackupStore | None = None) -> None:
        self.engine = engine
        self.token = token
        self.backup_dir = backup_dir
        #: Where local hosts keep backups (``BACKUP_DIR``'s folder when None).
        self.store = store
        self.timeout = timeout
        self.work_timeout = work_timeout
        self._hosts: dict[str, GraphHost] = {}
        self._lock = threading.Lock()

    def known(self, host_id: str) -> GraphHost | None:
        """The host if this process has reached it before."""
        return self._hosts.get(host_id)

    def get(self, address: HostAddress) -> GraphHost:
        found = self._hosts.get(address.host_id)
        if found is not None:
            return found
        with self._lock:
            found = self._hosts.get(address.host_id)
            if found is None:
                found = self._hosts[address.host_id] = self._make(address)
        return found

    def _make(self, address: HostAddress) -> GraphHost:
        if address.url is None:
            return LocalHost(address.host_id, Path(address.data_root), tier="", capacity=0,
                             engine=self.engine, backup_dir=self.backup_dir, store=self.store,
                             peer_token=self.token)
        if not self.token:
            raise HostUnavailable(f"graph host {address.host_id} is unavailable: "
                                  "GRAPH_HOST_TOKEN is not set in this process",
                                  reached=False)
        return HostClient(address.host_id, address.url, self.token, timeout=self.timeout,
                          work_timeout=self.work_timeout)

    def is_remote(self, host_id: str) -> bool:
        return isinstance(self._hosts.get(host_id), HostClient)

    def close(self) -> None:
        with self._lock:
            for host in self._hosts.values():
                if isinstance(host, HostClient):
                    host.close()
            self._hosts.clear()
