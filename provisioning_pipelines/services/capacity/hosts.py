"""Graph hosts: where database files live, and the atomic taking and giving back of a slot.

A slot is taken by ``UPDATE graph_hosts SET slots_used = slots_used + 1 WHERE id = :id AND
slots_used < capacity``. The condition is re-checked by the database under the row's write lock,
so concurrent allocations can never overfill a host whatever they read before.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    String,
    Update,
    bindparam,
    func,
    select,
    update,
)
from sqlalchemy.orm import Session

from provisioning_pipelines.errors import (
    CapacityExhausted,
    Conflict,
    HostUnavailable,
    InvalidRequest,
    NotFound,
)
from provisioning_pipelines.services.catalog import TIERS
from provisioning_pipelines.storage.hosts.contract import GraphHost as HostInterface
from provisioning_pipelines.storage.hosts.directory import HostAddress, HostDirectory
from provisioning_pipelines.storage.models import Graph, GraphHost, Subscription, utcnow

_HOSTS = GraphHost.__table__
#: A lost host whose graphs were rebuilt elsewhere (``services/upkeep/replacement.py``): nothing
#: is placed on it or sent to it until an operator clears it.
REPLACED = "replaced"
#: A host a new graph may go to: not draining, answering its probes, with a free slot. The most
#: free slots first (``least_used``): hosts of a tier fill evenly.
_TAKES_GRAPHS = (_HOSTS.c.status == "available", _HOSTS.c.health == "healthy",
                 _HOSTS.c.slots_used < _HOSTS.c.capacity)
#: What taking a slot returns: the host's address (``address_of``), so the graph's step reaches
#: its host without reading the host's row again (a host that takes graphs is not replaced).
_SLOT = (_HOSTS.c.id, _HOSTS.c.data_root, _HOSTS.c.url)


def local_host_id(tier: str) -> str:
    return f"local-{tier}"


def ensure_local_hosts(session: Session, graph_data_dir: Path,
                       capacity: int | None = None) -> list[GraphHost]:
    """Register one local host per tier under ``graph_data_dir`` (a fresh install's hosts),
    with ``capacity`` slots each (``LOCAL_HOST_CAPACITY``) or the tier's own figure. One query
    when they exist, as they do after the first graph."""
    wanted = {local_host_id(tier.name): tier for tier in TIERS.values()}
    present = {host.id: host for host in
               session.scalars(select(GraphHost).where(GraphHost.id.in_(wanted)))}
    for host_id, tier in wanted.items():
        if host_id not in present:
            present[host_id] = GraphHost(id=host_id, tier=tier.name,
                                         capacity=capacity or tier.host_capacity, slots_used=0,
                                         data_root=str(graph_data_dir / tier.name),
                                         status="available")
            session.add(present[host_id])
    session.flush()
    return [present[host_id] for host_id in wanted]


#: How often a slot is looked for again when a racing allocation took the chosen one.
_ALLOCATION_ATTEMPTS = 20


def take_slot(session: Session, tier: str) -> Row[Any] | None:
    """One try at a slot on the least-used available host of the tier (its ``id``,
    ``data_root`` and ``url``); None when no slot is free or a racing allocation took the
    chosen one."""
    return session.execute(_plain_slot(), {"slot_tier": tier}).first()


def slot_statement(unless: ColumnElement[bool] | None = None, *,
                   on_chosen_host: bool = False) -> Update:
    """Take a slot on the least-used available host of the tier bound as ``slot_tier``, unless
    ``unless`` holds: one statement, which picks the host and takes its slot (``UPDATE ...
    WHERE id = (least used) ... RETURNING id, data_root, url``). With ``on_chosen_host``, on the
    host bound as ``slot_host`` instead (picked earlier in the transaction, ``least_used``),
    if it still has a free slot and takes new graphs."""
    tier = bindparam("slot_tier", type_=String)
    host = (bindparam("slot_host", type_=String) if on_chosen_host
            else least_used(_HOSTS.c.id, tier).scalar_subquery())
    statement = update(_HOSTS).where(_HOSTS.c.id == host, _HOSTS.c.tier == tier,
                                     *_TAKES_GRAPHS)
    if unless is not None:
        statement = statement.where(~unless)
    return statement.values(slots_used=_HOSTS.c.slots_used + 1).returning(*_SLOT)


def least_used(column: Any, tier: str | ColumnElement[str]) -> Select[Any]:
    """``column`` of the least-used available host of the tier with a free slot (none: no
    row): where the next graph of the tier goes."""
    return (select(column)
            .where(_HOSTS.c.tier == tier, *_TAKES_GRAPHS)
            .order_by((_HOSTS.c.slots_used - _HOSTS.c.capacity), _HOSTS.c.id).limit(1))


@functools.cache
def _plain_slot() -> Update:
    return slot_statement()


def allocate_slot(session: Session, tier: str) -> Row[Any]:
    """A slot on the least-used available, healthy host of the tier, tried again while racing
    allocations take the chosen one; ``CapacityExhausted`` once none is free."""
    for _ in range(_ALLOCATION_ATTEMPTS):
        host = take_slot(session, tier)
        if host is not None:
            return host
        if free_slots(session, tier) == 0:
            break
    raise CapacityExhausted(f"tier {tier!r}: no host has a free slot")


def slot_elsewhere(session: Session, tier: str, avoid: set[str]) -> Row[Any] | None:
    """A slot on the tier's host with the most free slots other than ``avoid`` (hosts that
    did not answer this attempt), or None."""
    host = least_used(_HOSTS.c.id, tier).where(_HOSTS.c.id.not_in(avoid)).scalar_subquery()
    return session.execute(
        update(_HOSTS).where(_HOSTS.c.id == host, *_TAKES_GRAPHS)
        .values(slots_used=_HOSTS.c.slots_used + 1).returning(*_SLOT)).first()


def graph_host(session: Session, directory: HostDirectory, host_id: str) -> HostInterface:
    """The host a graph lives on, as its interface (one client per host per process); a host
    marked replaced is refused, in every process, from the moment its row says so."""
    row = session.get(GraphHost, host_id)
    if row is None:
        raise NotFound(f"host_id: no host {host_id[:70]!r}", field="host_id")
    found = directory.known(host_id)
    if found is not None and row.status != REPLACED:
        return found
    if row.status == REPLACED:
        raise HostUnavailable(f"graph host {host_id} was replaced; it serves nothing until an "
                              "operator clears it (hosts clear)", reached=False)
    return directory.get(address_of(row))


def address_of(row: GraphHost | Row[Any]) -> HostAddress:
    """A host's address from its row, or from the row a slot statement returned."""
    return HostAddress(row.id, row.url, row.data_root)


def release_slot(session: Session, host_id: str) -> None:
    session.execute(
        update(GraphHost)
        .where(GraphHost.id == host_id, GraphHost.slots_used > 0)
        .values(slots_used=GraphHost.slots_used - 1)
    )


# --- an operator's capacity -----------------------------------------------------------------------

HOST_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def add_host(session: Session, *, tier: str, capacity: int, data_root: Path | None,
             graph_data_dir: Path, host_id: str | None = None, url: str | None = None,
             slots_used: int = 0) -> GraphHost:
    """Register a host: ``capacity`` more slots for ``tier``, its files under ``data_root``
    (default: a folder named after it under ``graph_data_dir``); a remote one with its
    server's ``url`` and the ``slots_used`` its disk really holds."""
    if tier not in TIERS or tier == "ladybug-shared":
        raise InvalidRequest(f"tier: {tier!r} is not a graph tier; one of "
                             f"{', '.join(t for t in TIERS if t != 'ladybug-shared')}",
                             field="tier")
    if not isinstance(capacity, int) or not 1 <= capacity <= 1_000_000:
        raise InvalidRequest("capacity: a whole number from 1 to 1,000,000", field="capacity")
    count = session.scalar(select(func.count()).select_from(GraphHost)
                           .where(GraphHost.tier == tier)) or 0
    host_id = host_id or f"{tier}-{count + 1}"
    if not HOST_ID.fullmatch(host_id):
        raise InvalidRequest(f"id: {host_id[:70]!r} is not a host id; use lower-case letters, "
                             "digits and '-'", field="id")
    if session.get(GraphHost, host_id) is not None:
        raise Conflict(f"id: host {host_id!r} exists already", field="id")
    host = GraphHost(id=host_id, tier=tier, capacity=capacity, slots_used=slots_used,
                     data_root=str(data_root or graph_data_dir / host_id), status="available",
                     url=url, health="healthy", failed_probes=0,
                     last_seen_at=utcnow() if url else None)
    session.add(host)
    session.flush()
    return host


def set_status(session: Session, host_id: str, status: str) -> GraphHost:
    """``draining`` (its graphs stay, no new one is placed on it) or ``available``."""
    host = session.get(GraphHost, host_id) if HOST_ID.fullmatch(host_id) else None
    if host is None:
        raise NotFound(f"host_id: no host {host_id[:70]!r}", field="host_id")
    if host.status == REPLACED:
        raise Conflict(f"host_id: host {host_id} was replaced; take it back empty with "
                       "hosts clear", field="host_id")
    host.status = status
    return host


def list_hosts(session: Session) -> list[GraphHost]:
    return list(session.scalars(select(GraphHost).order_by(GraphHost.tier, GraphHost.id)))


def check_serving(session: Session, graph_id: str) -> None:
    """Refuse work on a graph whose host misses its probes (503 with ``Retry-After``) before an
    operation is opened: it would only wait out the host's timeouts and fail."""
    host_id = session.scalar(select(Graph.host_id).where(Graph.id == graph_id))
    if host_id is not None and unhealthy_among(session, {host_id}):
        raise HostUnavailable(f"graph_id: graph {graph_id} is on graph host {host_id}, which "
                              "is not answering; try again shortly", field="graph_id")


def servers_among(session: Session, host_ids: set[str]) -> set[str]:
    """Which of these hosts are host servers (registered with a url)."""
    if not host_ids:
        return set()
    return set(session.scalars(select(GraphHost.id).where(GraphHost.id.in_(host_ids),
                                                          GraphHost.url.is_not(None))))


def unhealthy_among(session: Session, host_ids: set[str]) -> set[str]:
    """Which of these hosts do not answer their probes now."""
    if not host_ids:
        return set()
    return set(session.scalars(select(GraphHost.id).where(GraphHost.id.in_(host_ids),
                                                          GraphHost.health == "unhealthy")))


def free_slots_query(tier: str | ColumnElement[str]) -> Select[tuple[int]]:
    """Slots free on the tier's available, healthy hosts."""
    return (select(func.coalesce(func.sum(GraphHost.capacity - GraphHost.slots_used), 0))
            .where(GraphHost.tier == tier, *_TAKES_GRAPHS))


def free_slots(session: Session, tier: str) -> int:
    return int(session.scalar(free_slots_query(tier)) or 0)


def queue_lengths(session: Session) -> dict[str, int]:
    """Paid subscriptions waiting for a slot, per tier."""
    rows = session.execute(select(Subscription.plan_name, func.count())
                           .where(Subscription.status == "queued")
                           .group_by(Subscription.plan_name)).all()
    return {tier: int(count) for tier, count in rows}
