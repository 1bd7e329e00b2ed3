"""Graph hosts: where database files live, and the atomic taking and giving back of a slot.

A slot is taken by ``UPDATE graph_hosts SET slots_used = slots_used + 1 WHERE id = :id AND
slots_used < capacity``. The condition is re-checked by the database under the row's write lock,
so concurrent allocations can never overfill a host whatever they read before.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from provisioning_pipelines.errors import CapacityExhausted
from provisioning_pipelines.services.catalog import TIERS
from provisioning_pipelines.storage.models import GraphHost


def local_host_id(tier: str) -> str:
    return f"local-{tier}"


def ensure_local_hosts(session: Session, graph_data_dir: Path) -> list[GraphHost]:
    """Register one local host per tier under ``graph_data_dir`` (a fresh install's hosts)."""
    hosts = []
    for tier in TIERS.values():
        host = session.get(GraphHost, local_host_id(tier.name))
        if host is None:
            host = GraphHost(
                id=local_host_id(tier.name),
                tier=tier.name,
                capacity=tier.host_capacity,
                slots_used=0,
                data_root=str(graph_data_dir / tier.name),
                status="available",
            )
            session.add(host)
        hosts.append(host)
    session.flush()
    return hosts


def allocate_slot(session: Session, tier: str) -> GraphHost:
    """Take a slot on the least-used available host of the tier."""
    candidates = session.scalars(
        select(GraphHost.id)
        .where(GraphHost.tier == tier, GraphHost.status == "available",
               GraphHost.slots_used < GraphHost.capacity)
        .order_by(GraphHost.slots_used, GraphHost.id)
    ).all()
    for host_id in candidates:
        taken = session.execute(
            update(GraphHost)
            .where(GraphHost.id == host_id, GraphHost.slots_used < GraphHost.capacity)
            .values(slots_used=GraphHost.slots_used + 1)
        )
        if taken.rowcount == 1:
            host = session.get(GraphHost, host_id)
            assert host is not None
            session.refresh(host)
            return host
    raise CapacityExhausted(f"tier {tier!r}: no host has a free slot")


def release_slot(session: Session, host_id: str) -> None:
    session.execute(
        update(GraphHost)
        .where(GraphHost.id == host_id, GraphHost.slots_used > 0)
        .values(slots_used=GraphHost.slots_used - 1)
    )
