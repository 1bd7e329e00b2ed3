"""``provisioning-pipelines serve [--workers N]``: the HTTP API in one process or several.

With ``--workers N`` the parent binds the port N times (``SO_REUSEPORT``: one listening socket per
worker, and the kernel spreads new connections evenly over them) and starts N worker processes,
then only supervises: a worker that dies is replaced on the same socket (connections waiting in
its queue are served by the replacement), and a SIGTERM is passed on to every worker, which
stops the way one server does (open streams get a final event, in-flight provisionings their
grace, claims given back; a second SIGTERM cuts the grace short). The workers share nothing but
PostgreSQL and Redis, which is why several need both: every claim is a row in the database
(exactly once across processes), and operations and their events live in Redis, so a stream
can be served by a worker other than the one provisioning. Each worker has its own
``DIRECT_MAX_CONCURRENCY`` provisioning threads; ``/metrics`` shows them all, whichever worker
answers: the workers count into files under ``PROMETHEUS_MULTIPROC_DIR`` (a temporary folder of
the supervisor's own unless one is set), which ``serve`` empties when it starts, and a worker
that exits is marked dead there so that its gauges no longer count.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from provisioning_pipelines.errors import InvalidRequest, ServiceUnavailable
from provisioning_pipelines.settings import Settings, get_settings

logger = logging.getLogger("provisioning_pipelines.serve")

#: How often the supervisor looks at its workers.
_SUPERVISE_SECONDS = 0.5


def serve(host: str, port: int, workers: int, settings: Settings) -> int:
    from provisioning_pipelines.storage.migrate import require_current, upgrade_once

    if workers < 1:
        raise InvalidRequest("--workers: must be at least 1", field="workers")
    if workers > 1 and not (settings.database_url and settings.redis_url):
        raise InvalidRequest("--workers: several workers share work through PostgreSQL and "
                             "Redis; set DATABASE_URL and REDIS_URL", field="workers")
    provisioners = settings.provisioning_processes
    if provisioners and not (settings.database_url and settings.redis_url):
        raise InvalidRequest("PROVISIONING_PROCESSES: the API hands them work through Redis "
                             "and they claim it in PostgreSQL; set DATABASE_URL and REDIS_URL",
                             field="PROVISIONING_PROCESSES")
    settings.check_serving()
    if settings.database_url is None:
        upgrade_once(settings.resolved_database_url)
    require_current(settings.resolved_database_url)  # else every request would be a 500
    if settings.redis_url:
        _check_redis(settings)
    home = settings.prepare_dagster_home()
    if settings.dagster_home is None:  # the embedded instance: made before workers share it
        from provisioning_pipelines.cli.instance import make_embedded_storage

        make_embedded_storage(home)
    _configure_logging(workers)
    with _worker_metrics(settings.metrics_dir, workers) as folder:
        if workers == 1 and not provisioners:
            try:
                return run_worker(settings, host=host, port=port)
            finally:
                _mark_dead(folder, os.getpid())
        return _supervise(_listeners(host, port, workers), folder, provisioners)


#: What prometheus_client reads, when it is first imported, to count into files.
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


@contextmanager
def _worker_metrics(configured: Path | None, workers: int) -> Iterator[Path | None]:
    """The folder every worker counts into, emptied of what an earlier server left (its
    workers' gauges would count as live): the one configured, else with several workers a
    temporary one, removed at the end. One worker with none configured counts in memory.

    Set in the environment before any worker (or this process) imports prometheus_client.
    """
    if configured is None and workers == 1:
        if os.environ.get(METRICS_DIR_VARIABLE) == "":  # would count into the working folder
            del os.environ[METRICS_DIR_VARIABLE]
        yield None
        return
    folder = configured or Path(tempfile.mkdtemp(prefix="provisioning-metrics-"))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        if not stale.name.endswith(f"_{os.getpid()}.db"):  # this process's own are live
            stale.unlink()
    os.environ[METRICS_DIR_VARIABLE] = str(folder)
    try:
        yield folder
    finally:
        if configured is None:
            shutil.rmtree(folder, ignore_errors=True)


def _mark_dead(folder: Path | None, pid: int | None) -> None:
    """A worker that exited: its gauges (``livesum``) stop counting; its counters stay."""
    if folder is not None and pid is not None:
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(pid, str(folder))


def _check_redis(settings: Settings) -> None:
    """Refuse to serve on a Redis that may drop open operations; warn about one that forgets
    them on a restart (``storage/events/durability.py``)."""
    from provisioning_pipelines.storage.events.durability import check_durability

    assert settings.redis_url is not None
    found = check_durability(settings.redis_url,
                             require_persistence=settings.redis_require_persistence)
    for warning in found.warnings:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    if found.refused:
        raise ServiceUnavailable("; ".join(found.refused))


def _listeners(host: str, port: int, count: int) -> list[socket.socket]:
    """One listening socket per worker on the same port. On one shared socket, a worker whose
    loop wakes first accepts a whole burst of connections at once (measured: one of two workers
    served 2/3 of a burst's work), so the other sits idle while its twin's answers queue."""
    listeners = [socket.create_server((host, port), backlog=4096, reuse_port=True)]
    port = listeners[0].getsockname()[1]  # port 0: the one the first socket got
    listeners += [socket.create_server((host, port), backlog=4096, reuse_port=True)
                  for _ in range(count - 1)]
    for listener in listeners:
        listener.set_inheritable(True)
    return listeners


def _configure_logging(workers: int) -> None:
    where = " [%(process)d]" if workers > 1 else ""
    logging.basicConfig(level=logging.INFO, format=f"%(levelname)-9s{where} %(name)s: %(message)s")
    # httpx logs every request at INFO: each call to a graph host and each probe, every few
    # seconds per host. The host client logs a call that got no answer itself.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def run_worker(settings: Settings, *, host: str = "127.0.0.1", port: int = 0,
               listener: socket.socket | None = None) -> int:
    """One API server: on ``host:port``, or accepting on a socket the supervisor bound."""
    import uvicorn

    from provisioning_pipelines.api.app import create_app

    app = create_app(settings)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.should_exit and sig == signal.SIGTERM:
                self.force_exit = True  # uvicorn forces only on a second SIGINT
            super().handle_exit(sig, frame)

    server = Server(uvicorn.Config(
        app, host=host, port=port, log_level="info", backlog=4096,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_seconds))))
    app.state.api.server = server  # so a second SIGTERM cuts the grace short
    server.run(sockets=[listener] if listener is not None else None)
    if app.state.api.unfinished:
        # Their claims were given back; the threads still in them must not hold up the exit.
        os._exit(0)
    return 0


def _worker_main(listener: socket.socket, workers: int) -> None:
    """A worker process's entry (spawned: it imports everything afresh, holds no parent
    thread or connection)."""
    _configure_logging(workers)
    run_worker(get_settings(), listener=listener)


def _provisioner_main(name: str, workers: int) -> None:
    """A provisioning process's entry, logging as the workers do."""
    from provisioning_pipelines.direct.provisioner import provisioner_main

    _configure_logging(workers)
    provisioner_main(name)


def _supervise(listeners: list[socket.socket], metrics_dir: Path | None,
               provisioners: int = 0) -> int:
    """The API workers, one per listening socket, and the provisioning processes, each
    restarted when it dies (a provisioner under its own name, so it puts back what its
    predecessor had taken)."""
    context = multiprocessing.get_context("spawn")
    signals_seen = 0

    count = len(listeners)
    names = [f"{socket.gethostname()}-{index}" for index in range(provisioners)]
    jobs: list[tuple[Any, tuple[Any, ...], str]] = [
        *((_worker_main, (listener, count), "provisioning-api-worker")
          for listener in listeners),
        *((_provisioner_main, (name, count + provisioners), "provisioner") for name in names)]

    def start(index: int) -> multiprocessing.process.BaseProcess:
        target, args, name = jobs[index]
        process = context.Process(target=target, args=args, name=name)
        process.start()
        return process

    def stop(sig: int, frame: Any) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if sig == signal.SIGTERM:  # a terminal's Ctrl-C already reached every worker
            for process in workers:
                if process.pid is not None and process.is_alive():
                    os.kill(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    workers = [start(index) for index in range(len(jobs))]
    logger.info("serving on %s:%d with %d workers and %d provisioning processes: %s",
                *listeners[0].getsockname()[:2], count, provisioners,
                ", ".join(str(process.pid) for process in workers))
    while True:
        if signals_seen:
            if not any(process.is_alive() for process in workers):
                break
        else:
            for index, process in enumerate(workers):
                if not process.is_alive():
                    logger.warning("worker %s exited with %s; starting another", process.pid,
                                   process.exitcode)
                    _mark_dead(metrics_dir, process.pid)
                    workers[index] = start(index)
        time.sleep(_SUPERVISE_SECONDS)
    for process in workers:
        _mark_dead(metrics_dir, process.pid)
    for listener in listeners:
        listener.close()
    return 0
