"""Graph hosts as servers: registering one with what its disk really holds, and probing them.

A host is added only if it answers: its ``/healthz`` gives the tier and capacity when the
operator left them out, and its graph listing (authenticated, so a wrong token is found here,
not at the first placement) gives the slots it already uses: its top-level graphs (a subgraph
lives in its parent's slot). A replacement registered as empty would have its slots
double-booked, so the count is never assumed.

Probes ask each remote host's ``/healthz`` with a short timeout, one attempt, no breaker (the
probe is what decides health). ``misses`` unanswered probes in a row make a host ``unhealthy``:
placement skips it and its graphs show ``available: false``; its row is never deleted, and the
first answer makes it ``healthy`` again. Each outcome is one conditional UPDATE, so API
processes probing the same host at once only add their misses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from provisioning_pipelines.errors import (
    HostTokenRefused,
    HostUnavailable,
    InvalidRequest,
    ProvisioningError,
    Unauthorized,
)
from provisioning_pipelines.services.capacity import hosts
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.graph_ids import GRAPH_ID
from provisioning_pipelines.storage.hosts.client import HostClient
from provisioning_pipelines.storage.models import GraphHost, utcnow

logger = logging.getLogger(__name__)

#: Seconds a probe (and each registration call) waits for a host: a host slower than this is
#: as good as down for placing graphs.
PROBE_TIMEOUT = 2.0
#: Hosts probed at once.
_PROBE_THREADS = 8

ClientFactory = Callable[[str, str, str], HostClient]


def _client(host_id: str, url: str, token: str) -> HostClient:
    return HostClient(host_id, url, token, timeout=PROBE_TIMEOUT,
                      connect_timeout=PROBE_TIMEOUT, attempts=1)


def check_url(url: str) -> str:
    """``http(s)://host[:port]`` with nothing after it, or ``InvalidRequest`` naming ``url``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or \
            parts.path.strip("/") or parts.query or parts.fragment:
        raise InvalidRequest(f"url: {url[:100]!r} is not a host server's address; expected "
                             "http(s)://host:port", field="url")
    try:
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        raise InvalidRequest(f"url: {url[:100]!r} has no valid port", field="url") from None
    return url.rstrip("/")


def add_remote_host(session: Session, *, host_id: str, url: str, token: str | None,
                    graph_data_dir: Path, tier: str | None = None,
                    capacity: int | None = None, data_root: Path | None = None,
                    client: ClientFactory = _client) -> GraphHost:
    """Register the host server at ``url`` with the graphs it holds; ``tier`` and ``capacity``
    from its ``/healthz`` when not given (a given tier must be the host's own). ``data_root``
    is where the host keeps its files, when the operator knows it (shown, never opened here);
    else a folder named after the host under ``graph_data_dir``."""
    if not token:
        raise InvalidRequest("url: GRAPH_HOST_TOKEN is unset, so no remote host can be "
                             "added; set it to the token the host serves with", field="url")
    if not hosts.HOST_ID.fullmatch(host_id):
        raise InvalidRequest(f"id: {host_id[:70]!r} is not a host id; use lower-case letters, "
                             "digits and '-'", field="id")
    url = check_url(url)
    where = f"graph host {host_id} at {url}"
    with client(host_id, url, token) as remote:
        try:
            health = remote.health()
            holding = remote.list()
        except HostTokenRefused:
            raise Unauthorized(f"url: {where} refused the token (GRAPH_HOST_TOKEN is not the "
                               "one it serves with); not added", field="url") from None
        except HostUnavailable as exc:
            raise HostUnavailable(f"url: {exc.message.replace(f'graph host {host_id}', where)}"
                                  "; not added", field="url") from None
        except (ProvisioningError, KeyError, TypeError, ValueError) as exc:
            raise HostUnavailable(f"url: {where} did not answer as a graph host "
                                  f"({type(exc).__name__}); not added", field="url") from None
    if tier is not None and tier != health.tier:
        raise InvalidRequest(f"tier: {where} serves {health.tier!r}, not {tier!r}",
                             field="tier")
    return hosts.add_host(session, tier=health.tier,
                          capacity=health.capacity if capacity is None else capacity,
                          data_root=data_root, graph_data_dir=graph_data_dir, host_id=host_id,
                          url=url, slots_used=sum(1 for graph_id in holding.graphs
                                                  if GRAPH_ID.fullmatch(graph_id)))


# --- probes --------------------------------------------------------------------------------


def _answers(host_id: str, url: str, token: str, client: ClientFactory) -> bool:
    try:
        with client(host_id, url, token) as remote:
            remote.health()
        return True
    except Exception as exc:  # any failure to answer as a host is a miss
        logger.info("probe of graph host %s: %s: %s", host_id, type(exc).__name__, exc)
        return False


def record_probe(session: Session, host_id: str, answered: bool, *, misses: int) -> str:
    """Write one probe's outcome; the host's health after it."""
    before = session.scalar(select(GraphHost.health).where(GraphHost.id == host_id))
    table = GraphHost.__table__
    if answered:
        values = {"health": "healthy", "failed_probes": 0, "last_seen_at": utcnow()}
    else:
        values = {"failed_probes": table.c.failed_probes + 1,
                  "health": case((table.c.failed_probes + 1 >= misses, "unhealthy"),
                                 else_=table.c.health)}
    after = session.scalar(update(table).where(table.c.id == host_id).values(**values)
                           .returning(table.c.health))
    if after != before and after is not None:
        log = logger.info if after == "healthy" else logger.warning
        log("graph host %s is %s (was %s)", host_id, after, before)
    return str(after)


def probe_hosts(database: Database, token: str | None, *, misses: int,
                client: ClientFactory = _client) -> dict[str, str]:
    """Probe every host with a url once; each one's health after it."""
    with database.session() as session:
        targets = session.execute(select(GraphHost.id, GraphHost.url)
                                  .where(GraphHost.url.is_not(None))
                                  .order_by(GraphHost.id)).all()
    if not targets:
        return {}
    with ThreadPoolExecutor(min(_PROBE_THREADS, len(targets))) as pool:
        answered = list(pool.map(lambda target: _answers(target[0], target[1], token or "",
                                                         client), targets))
    found = {}
    for (host_id, _), ok in zip(targets, answered, strict=True):
        with database.session() as session:
            found[host_id] = record_probe(session, host_id, ok, misses=misses)
    return found
