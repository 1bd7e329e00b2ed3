"""``dev --hosts N``: N graph host servers on this machine, registered with the control plane.

Each host is a ``host serve`` process in a session of its own, so a terminal's Ctrl-C reaches
``dev`` alone, which stops the hosts last (after Dagster and the API, whose work in flight
needs them). Host ``k`` takes the ``k``-th of the given tiers, round robin, and is named
``dev-<tier>-<n>`` (the ``n``-th of its tier); its files are under ``DATA_DIR/hosts/<id>``, its
port is kept in ``DATA_DIR/hosts/ports.json`` and every host and the control plane share one
token, made once, in ``DATA_DIR/hosts/token`` (mode 0600). A restart therefore starts the same
hosts on the same folders and ports: the urls they were registered with stay true, and the
graphs made before are served again.

Registration is ``hosts add``'s: a new host is added with what its disk holds (and its real data
root, shown by ``hosts list`` and the graphs' paths); one registered before is confirmed at the
url it was registered with and marked healthy, as it has just answered.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from provisioning_pipelines.errors import Conflict, InvalidRequest, ServiceUnavailable
from provisioning_pipelines.services.catalog import CUSTOMER_TIERS, TIERS

if TYPE_CHECKING:
    from provisioning_pipelines.settings import Settings

PORTS_FILE = "ports.json"
TOKEN_FILE = "token"
#: ``dev``'s own hosts, beside any an operator added by hand.
PREFIX = "dev-"
#: What a host's SIGTERM is given beyond its own grace before it is killed.
_STOP_MARGIN = 5.0


@dataclass(frozen=True)
class DevHost:
    host_id: str
    tier: str
    capacity: int
    data_root: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Started:
    """The hosts running, their processes by id, and what the control plane's processes need
    in their environment to use them (and only them)."""

    hosts: list[DevHost]
    processes: dict[str, subprocess.Popen[bytes]]
    folder: Path
    env: dict[str, str]

    def exited(self) -> dict[str, int]:
        """Hosts whose process has ended, with its exit status."""
        return {host_id: code for host_id, process in self.processes.items()
                if (code := process.poll()) is not None}


def plan(folder: Path, count: int, tiers: Sequence[str] = (),
         capacity: int | None = None) -> list[DevHost]:
    """The ``count`` hosts, round robin over ``tiers`` (default: every graph tier), each with
    the port it had before or a free one, kept in ``folder/ports.json``."""
    if count < 1:
        raise InvalidRequest("--hosts: at least 1", field="hosts")
    tiers = list(tiers) or list(CUSTOMER_TIERS)
    for tier in tiers:
        if tier not in CUSTOMER_TIERS:
            raise InvalidRequest(f"--host-tier: {tier!r} is not a graph tier; one of "
                                 f"{', '.join(CUSTOMER_TIERS)}", field="host_tier")
    ports = _read_ports(folder / PORTS_FILE)
    taken = set(ports.values())
    per_tier: dict[str, int] = {}
    planned = []
    for index in range(count):
        tier = tiers[index % len(tiers)]
        per_tier[tier] = per_tier.get(tier, 0) + 1
        host_id = f"{PREFIX}{tier}-{per_tier[tier]}"
        if host_id not in ports:
            ports[host_id] = _free_port(taken)
            taken.add(ports[host_id])
        planned.append(DevHost(host_id, tier, capacity or TIERS[tier].host_capacity,
                               folder / host_id, ports[host_id]))
    _write_atomically(folder / PORTS_FILE, json.dumps(ports, indent=2, sort_keys=True) + "\n")
    return planned


def _read_ports(path: Path) -> dict[str, int]:
    try:
        found = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        raise InvalidRequest(f"{path}: not the JSON dev writes ({{host id: port}}); fix or "
                             "remove it (hosts then get new ports, and their registered urls "
                             "no longer hold)") from None
    if not isinstance(found, dict) or not all(
            isinstance(port, int) and 0 < port < 65536 for port in found.values()):
        raise InvalidRequest(f"{path}: expected {{host id: port}}")
    return {str(host_id): port for host_id, port in found.items()}


def _free_port(taken: set[int]) -> int:
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in taken:
            return port


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.replace(path)


def token(folder: Path) -> str:
    """The hosts' shared token: made once (readable by this user only), then read."""
    path = folder / TOKEN_FILE
    with contextlib.suppress(FileExistsError):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
    os.chmod(path, 0o600)  # a copy put there by hand
    value = path.read_text().strip()
    if len(value) < 16:
        raise InvalidRequest(f"{path}: the hosts' token is shorter than 16 characters; remove "
                             "the file and dev makes a new one")
    return value


@contextmanager
def dev_hosts(settings: Settings, count: int, tiers: Sequence[str] = (), *,
              ready_timeout: float = 90) -> Iterator[Started]:
    """Start the hosts, wait until each answers, register them; stop them all at the end."""
    folder = settings.data_dir.resolve() / "hosts"
    folder.mkdir(parents=True, exist_ok=True)
    planned = plan(folder, count, tiers, settings.local_host_capacity)
    secret = token(folder)
    environment = {**os.environ, "GRAPH_HOST_TOKEN": secret}
    environment.pop("GRAPH_HOST_TOKEN_PREVIOUS", None)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for host in planned:
            host.data_root.mkdir(exist_ok=True)
            with (folder / f"{host.host_id}.log").open("ab") as log:
                processes[host.host_id] = subprocess.Popen(
                    [sys.executable, "-m", "provisioning_pipelines.cli", "host", "serve",
                     "--id", host.host_id, "--tier", host.tier, "--capacity", str(host.capacity),
                     "--data-root", str(host.data_root), "--port", str(host.port)],
                    env=environment, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True)
        _wait_ready(planned, processes, folder, ready_timeout)
        register(settings, planned, secret)
        yield Started(planned, processes, folder,
                      {"GRAPH_HOST_TOKEN": secret, "LOCAL_GRAPH_HOSTS": "false"})
    finally:
        stop_all(list(processes.values()), grace=_host_grace() + _STOP_MARGIN)


def _host_grace() -> float:
    from provisioning_pipelines.hosts_server.serve import GRACE

    try:
        return max(1.0, float(os.environ.get(GRACE, 30)))
    except ValueError:
        return 30.0


def _wait_ready(planned: list[DevHost], processes: dict[str, subprocess.Popen[bytes]],
                folder: Path, timeout: float) -> None:
    import httpx

    waiting = {host.host_id: host for host in planned}
    deadline = time.monotonic() + timeout
    while waiting:
        for host_id, host in list(waiting.items()):
            code = processes[host_id].poll()
            if code is not None:
                raise ServiceUnavailable(f"graph host {host_id} (port {host.port}) exited with "
                                         f"{code}: {_last_line(folder / f'{host_id}.log')}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{host.url}/healthz", timeout=2).status_code == 200:
                    del waiting[host_id]
        if waiting and time.monotonic() > deadline:
            raise ServiceUnavailable(f"graph host(s) {', '.join(waiting)} did not answer within "
                                     f"{timeout:g} s; their logs are in {folder}")
        if waiting:
            time.sleep(0.2)  # polling for start-up


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return f"{lines[-1].strip()[:300]} (log: {log})" if lines else f"see {log}"


def register(settings: Settings, planned: list[DevHost], secret: str) -> None:
    """Each host as ``hosts add --url`` adds it, or, registered before, confirmed at its url.
    Warns of what else would take or hold graphs meanwhile."""
    import logging

    from provisioning_pipelines.cli.commands import database_of
    from provisioning_pipelines.services.capacity import hosts, remote
    from provisioning_pipelines.storage.hosts.client import HostClient

    logging.getLogger(HostClient.__module__).setLevel(logging.ERROR)  # refusals: one line
    wanted = {host.host_id for host in planned}
    with database_of(settings).session() as session:
        known = {row.id: row for row in hosts.list_hosts(session)}
        for host in planned:
            row = known.get(host.host_id)
            if row is None:
                remote.add_remote_host(
                    session, host_id=host.host_id, url=host.url, token=secret,
                    graph_data_dir=settings.resolved_graph_data_dir, tier=host.tier,
                    data_root=host.data_root)
            elif row.url != host.url:
                raise Conflict(f"--hosts: host {host.host_id} is registered at "
                               f"{row.url or 'no url (an in-process host)'}, not at {host.url} "
                               f"where dev starts it ({PORTS_FILE} in {host.data_root.parent} "
                               "no longer says its port); use another DATA_DIR", field="hosts")
            else:
                remote.record_probe(session, host.host_id, True,
                                    misses=settings.graph_host_probe_misses)
        local = [row.id for row in known.values() if row.url is None and row.status == "available"]
        idle = [row.id for row in known.values()
                if row.id.startswith(PREFIX) and row.url and row.id not in wanted]
    if local:
        print(f"warning: in-process hosts registered in this database earlier still take new "
              f"graphs: {', '.join(sorted(local))} (hosts drain ID, or another DATA_DIR)",
              file=sys.stderr, flush=True)
    if idle:
        print(f"warning: hosts of an earlier dev --hosts not started now: {', '.join(sorted(idle))}"
              " (their graphs are unavailable until they run again)", file=sys.stderr, flush=True)


def stop_all(processes: Sequence[subprocess.Popen[bytes]], *, grace: float) -> None:
    """SIGTERM every process's group at once, wait up to ``grace``, then SIGKILL what is left."""
    import signal

    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
