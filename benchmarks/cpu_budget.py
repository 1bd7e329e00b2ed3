"""Machine CPU spent by every process a burst touches, and where the server's share goes.

A figure per unit of work (milliseconds of CPU per graph) does not depend on how busy the
machine is, as a rate does. ``Meter`` reads the CPU time of each process from the kernel
(``psutil``) before and after: the ``serve`` process with its children, the host servers, the
PostgreSQL backends of each database (by ``pg_stat_activity``; the benchmark's own connections,
named ``bench``, left out), the rest of PostgreSQL (WAL writer, checkpointer, ...) and Redis (its
``INFO`` gives its pid). ``Sampler`` runs py-spy on the server during the burst and sorts the
samples (py-spy records only threads on the CPU) by the part of the code they are in, so the
server's CPU is split into webhook, flow, events, the report to Dagster and the HTTP server.
``statements`` reads ``pg_stat_statements`` when the server preloads it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import psutil
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

#: The parts of the server's own CPU, the first rule that matches a sample's stack wins: the
#: report runs on its own threads, events are written from inside the flow and the webhook.
PARTS = (
    ("report to Dagster", ("runtime/reporting.py",)),
    ("events", ("storage/events/", "runtime/progress.py")),
    ("flow", ("flows/runner.py", "direct/executor.py")),
    ("webhook", ("api/webhooks.py", "services/webhooks.py", "services/billing/")),
)
OTHER = "HTTP server and the rest"
#: PostgreSQL connections that closed between the snapshots (which database's is not known).
CLOSED = "PostgreSQL (closed connections)"
#: Every CPU of the machine busy, whoever it was (a check on the sum of the parts).
MACHINE = "the machine"
#: The benchmark itself (the sending client and its checks): left out of the budget.
CLIENT = "the client"


def _seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


#: CPU seconds so far of each (group, pid) a snapshot found.
Snapshot = dict[tuple[str, int], float]


class Meter:
    """CPU seconds by process group between two snapshots.

    Kept per process: one that starts between the snapshots counts from zero, and one that
    ends before the second is lost (pools keep the servers' connections, so there are few).
    """

    def __init__(self, server_url: str, databases: dict[str, str], redis_url: str,
                 processes: dict[str, list[int]]) -> None:
        """``databases``: a label for each database name (e.g. ``{"pp_x": "PostgreSQL (app)"}``);
        ``processes``: a label for each group of root pids (their children count too)."""
        self._admin = create_engine(server_url, isolation_level="AUTOCOMMIT",
                                    connect_args={"application_name": "bench"})
        self.databases = databases
        self.processes = processes
        #: What measures but is not measured (py-spy): counted with the client.
        self.client_pids: list[int] = []
        self._backends: set[int] = set()
        client = redis.Redis.from_url(redis_url)
        self._redis = psutil.Process(int(client.info("server")["process_id"]))
        client.close()
        with self._admin.connect() as connection:
            directory = connection.scalar(text("SHOW data_directory"))
        self._postmaster = psutil.Process(
            int(Path(directory, "postmaster.pid").read_text().split()[0]))

    def snapshot(self) -> Snapshot:
        seconds: Snapshot = {}
        for label, pids in self.processes.items():
            for pid in pids:
                for process in _tree(pid):
                    try:
                        seconds[(label, process.pid)] = _seconds(process)
                    except psutil.Error:
                        continue
        with self._admin.connect() as connection:
            for database, label in self.databases.items():
                seconds[(f"{label}: connections opened", 0)] = float(connection.scalar(text(
                    "SELECT sessions FROM pg_stat_database WHERE datname = :name"),
                    {"name": database}) or 0)
            backends = dict(connection.execute(text(
                "SELECT pid, coalesce(datname, '') || '|' || coalesce(application_name, '') "
                "FROM pg_stat_activity")).all())
        # Backends that closed were reaped by the postmaster, which holds their CPU since.
        reaped = self._postmaster.cpu_times()
        seconds[(CLOSED, self._postmaster.pid)] = reaped.children_user + reaped.children_system
        for process in [self._postmaster, *self._postmaster.children()]:
            database, _, application = backends.get(process.pid, "|").partition("|")
            # the benchmark's own connections count as the client, not the system
            label = CLIENT if application == "bench" else \
                self.databases.get(database, "PostgreSQL (the rest)")
            try:
                seconds[(label, process.pid)] = sum(process.cpu_times()[:2])
            except psutil.Error:
                continue
            self._backends.add(process.pid)
        seconds[("Redis", self._redis.pid)] = sum(self._redis.cpu_times()[:2])
        machine = psutil.cpu_times()
        seconds[(MACHINE, 0)] = machine.user + machine.nice + machine.system + machine.irq \
            + machine.softirq + machine.steal
        for pid in [os.getpid(), *self.client_pids]:
            try:
                seconds[(CLIENT, pid)] = _seconds(psutil.Process(pid))
            except psutil.Error:
                continue
        return seconds

    def between(self, before: Snapshot, after: Snapshot) -> dict[str, float]:
        spent: Counter[str] = Counter()
        for (label, pid), seconds in after.items():
            spent[label] += seconds - before.get((label, pid), 0.0)
        # (the connections opened are counts, not seconds: ``counts`` takes them out)
        for (_label, pid), seconds in before.items():
            if (_label, pid) not in after and pid in self._backends:
                spent[CLOSED] -= seconds  # counted whole in what the postmaster reaped
        return dict(spent)

    @staticmethod
    def counts(spent: dict[str, float]) -> dict[str, float]:
        """Take the counts out of ``between``'s result: what is left is seconds."""
        return {label: spent.pop(label) for label in list(spent) if "connections opened" in label}

    def close(self) -> None:
        self._admin.dispose()


class Sampler:
    """py-spy on one process for a while; the share of its samples in each part of the code."""

    def __init__(self, pid: int, rate: int = 200) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix="py-spy-"))
        self._output = self._folder / "raw.txt"
        spy = str(Path(sys.executable).parent / "py-spy")
        self.process = subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--rate", str(rate), "--nonblocking",
             "--subprocesses", "--format", "raw", "--output", str(self._output)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> dict[str, float]:
        """Stop sampling; each part's share of the samples (they sum to 1)."""
        self.process.send_signal(2)  # SIGINT: py-spy writes what it has
        self.process.wait(60)
        counts: Counter[str] = Counter()
        lines = self._output.read_text().splitlines() if self._output.exists() else []
        for line in lines:
            stack, _, count = line.rpartition(" ")
            counts[part_of(stack)] += int(count)
        shutil.rmtree(self._folder, ignore_errors=True)
        total = sum(counts.values()) or 1
        return {part: counts[part] / total for part in [*(p for p, _ in PARTS), OTHER]}


def part_of(stack: str) -> str:
    for part, marks in PARTS:
        if any(mark in stack for mark in marks):
            return part
    return OTHER


def statements(server_url: str, database: str, limit: int = 8) -> list[tuple[int, float, str]]:
    """The busiest statements of ``database`` since its stats were reset: calls, total ms, the
    text; empty when the server does not preload ``pg_stat_statements``."""
    url = make_url(server_url).set(database=database)
    engine = create_engine(url, isolation_level="AUTOCOMMIT",
                           connect_args={"application_name": "bench"})
    try:
        with engine.connect() as connection:
            loaded = connection.scalar(text(
                "SELECT count(*) FROM pg_settings WHERE name = 'shared_preload_libraries' "
                "AND setting LIKE '%pg_stat_statements%'"))
            if not loaded:
                return []
            connection.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
            rows = connection.execute(text(
                "SELECT s.calls, s.total_exec_time, s.query FROM pg_stat_statements s "
                "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = :name "
                "ORDER BY s.total_exec_time DESC LIMIT :limit"),
                {"name": database, "limit": limit}).all()
            return [(int(calls), float(ms), " ".join(query.split())[:110])
                    for calls, ms, query in rows]
    finally:
        engine.dispose()


def reset_statements(server_url: str) -> bool:
    """Zero ``pg_stat_statements`` (for the whole server) before the measured burst."""
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT",
                           connect_args={"application_name": "bench"})
    try:
        with engine.connect() as connection:
            loaded = connection.scalar(text(
                "SELECT count(*) FROM pg_settings WHERE name = 'shared_preload_libraries' "
                "AND setting LIKE '%pg_stat_statements%'"))
            if not loaded:
                return False
            connection.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
            connection.execute(text("SELECT pg_stat_statements_reset()"))
            return True
    finally:
        engine.dispose()
