"""Several machines on one: a network namespace per machine, joined to this one by a veth pair,
whose link a test can cut and restore (``ip link set ... down/up`` on this side).

Each machine gets a /30 of ``NETWORK``: this side's end is the first address, the machine's the
second. Subnets are handed out under a file lock shared by every test process on the machine
(``ALLOCATIONS``), so parallel runs never take the same addresses; names carry the process id
(``pph<pid>-<i>``), so they never take the same names. While a link is down its connected route
is gone, and traffic to the machine would follow the default route off this machine; an
``unreachable`` route of a higher metric keeps it here: a new connection is refused at once
(EHOSTUNREACH, as a router's "host unreachable"), and segments of an open one are retransmitted
until the link is back or the caller's timeout ends the wait, as across a real partition.

``close`` always removes what was made (the processes in the namespaces first: a namespace with
a process in it keeps its veth); what a killed test process left is removed by the next one.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

NETWORK = ipaddress.ip_network("10.231.0.0/16")
ALLOCATIONS = Path("/tmp/pph-netns/allocations.json")
#: The metric of the route that keeps a cut machine's traffic on this machine.
FALLBACK_METRIC = 4000
_NAME = re.compile(r"pph(?P<pid>\d+)-(?P<index>\d+)")
#: The index of the namespace ``problem`` makes and removes at once.
PROBE_INDEX = 99


@functools.cache
def problem() -> str | None:
    """Why network namespaces cannot be made here, or None (tried once per process: root in
    a container without the network capability cannot make one)."""
    if os.geteuid() != 0:
        return "not root (network namespaces need root)"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    name = f"pph{os.getpid()}-{PROBE_INDEX}"
    made = ip("netns", "add", name, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    ip("netns", "del", name, check=False)
    return None


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


@dataclass(frozen=True)
class Machine:
    index: int
    #: The namespace's name, also the name of the veth end on this side.
    name: str
    #: The machine's address (its end of the veth) and this side's.
    address: str
    gateway: str
    subnet: str

    @property
    def exec_prefix(self) -> list[str]:
        """What runs a command inside the machine."""
        return ["ip", "netns", "exec", self.name]


@contextlib.contextmanager
def _locked() -> Iterator[dict[str, dict[str, object]]]:
    """The allocations (``{subnet: {"pid", "name"}}``), read and written under the lock."""
    ALLOCATIONS.parent.mkdir(parents=True, exist_ok=True)
    with (ALLOCATIONS.parent / "lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            taken = json.loads(ALLOCATIONS.read_text()) if ALLOCATIONS.exists() else {}
        except ValueError:
            taken = {}
        yield taken
        ALLOCATIONS.write_text(json.dumps(taken, indent=1))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(name: str, subnet: str | None) -> None:
    """A machine's processes, namespace, veth and fallback route; what is absent is skipped."""
    if name in _namespaces():
        for pid in ip("netns", "pids", name, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        ip("netns", "del", name, check=False)
    if ip("link", "show", name, check=False).returncode == 0:
        ip("link", "del", name, check=False)
    if subnet:
        ip("route", "del", "unreachable", subnet, "metric", str(FALLBACK_METRIC), check=False)


def _namespaces() -> set[str]:
    return {line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line.strip()}


def _reclaim(taken: dict[str, dict[str, object]]) -> None:
    """Remove what test processes that are gone left behind (their allocations, and any of
    their namespaces the allocations lost)."""
    for subnet, owner in list(taken.items()):
        if not _alive(int(str(owner["pid"]))):
            _remove(str(owner["name"]), subnet)
            del taken[subnet]
    for name in _namespaces():
        found = _NAME.fullmatch(name)
        if found and not _alive(int(found["pid"])):
            _remove(name, None)


class Machines:
    """``count`` machines, each in its own namespace; a context manager that always cleans up."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.pid = os.getpid()
        self.machines: list[Machine] = []

    def __enter__(self) -> Machines:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getitem__(self, index: int) -> Machine:
        return self.machines[index]

    def __iter__(self) -> Iterator[Machine]:
        return iter(self.machines)

    def __len__(self) -> int:
        return len(self.machines)

    def start(self) -> None:
        with _locked() as taken:
            _reclaim(taken)
            named = [_NAME.fullmatch(name) for name in _namespaces()]
            first = 1 + max((int(found["index"]) for found in named
                             if found and int(found["pid"]) == self.pid), default=-1)
            subnets = (s for s in NETWORK.subnets(new_prefix=30) if str(s) not in taken)
            for index in range(first, first + self.count):
                subnet = next(subnets)
                gateway, address = (str(host) for host in subnet.hosts())
                machine = Machine(index, f"pph{self.pid}-{index}", address, gateway,
                                  str(subnet))
                taken[machine.subnet] = {"pid": self.pid, "name": machine.name}
                self.machines.append(machine)
        for machine in self.machines:
            self._make(machine)

    @staticmethod
    def _make(machine: Machine) -> None:
        name = machine.name
        ip("netns", "add", name)
        ip("link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", name)
        ip("addr", "add", f"{machine.gateway}/30", "dev", name)
        ip("link", "set", name, "up")
        ip("-n", name, "addr", "add", f"{machine.address}/30", "dev", "eth0")
        ip("-n", name, "link", "set", "eth0", "up")
        ip("-n", name, "link", "set", "lo", "up")
        ip("route", "add", "unreachable", machine.subnet, "metric", str(FALLBACK_METRIC))

    def cut(self, index: int) -> None:
        """This side's end of the machine's link down: nothing passes either way."""
        ip("link", "set", self.machines[index].name, "down")

    def restore(self, index: int, *, timeout: float = 10) -> None:
        """The link up again, once its route is back (open connections resume)."""
        machine = self.machines[index]
        ip("link", "set", machine.name, "up")
        deadline = time.monotonic() + timeout
        while machine.name not in ip("route", "show", machine.subnet).stdout:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{machine.name}: no route after the link came up")
            time.sleep(0.02)  # polling for the kernel's route, not a timing

    def is_cut(self, index: int) -> bool:
        return "state DOWN" in ip("link", "show", self.machines[index].name).stdout

    def close(self) -> None:
        for machine in self.machines:
            _remove(machine.name, machine.subnet)
        with _locked() as taken:
            for machine in self.machines:
                if taken.get(machine.subnet, {}).get("pid") == self.pid:
                    del taken[machine.subnet]
        self.machines = []
