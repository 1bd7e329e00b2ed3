"""Host slots: taken atomically, never past capacity, given back, least-used host first."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from provisioning_pipelines.errors import CapacityExhausted
from provisioning_pipelines.services.capacity import hosts
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import GraphHost


def add_host(database: Database, host_id: str, *, capacity: int, used: int = 0,
             tier: str = "ladybug-standard", status: str = "available") -> None:
    with database.session() as session:
        session.add(GraphHost(id=host_id, tier=tier, capacity=capacity, slots_used=used,
                              data_root=f"/data/{host_id}", status=status))


def used(database: Database, host_id: str) -> int:
    with database.session() as session:
        host = session.get(GraphHost, host_id)
        assert host is not None
        return host.slots_used


def test_a_fresh_install_registers_one_local_host_per_tier_once(
    database: Database, graph_dir: Path
) -> None:
    with database.session() as session:
        first = [h.id for h in hosts.ensure_local_hosts(session, graph_dir)]
    with database.session() as session:
        again = [h.id for h in hosts.ensure_local_hosts(session, graph_dir)]
        assert session.query(GraphHost).count() == len(first)
    assert first == again and "local-ladybug-standard" in first


def test_concurrent_allocations_never_overfill_a_host(database: Database) -> None:
    add_host(database, "h1", capacity=5)
    taken: list[str] = []
    refused: list[CapacityExhausted] = []
    start = threading.Barrier(8)

    def allocate() -> None:
        start.wait()
        try:
            with database.session() as session:
                taken.append(hosts.allocate_slot(session, "ladybug-standard").id)
        except CapacityExhausted as exc:
            refused.append(exc)

    threads = [threading.Thread(target=allocate) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(taken) == 5 and len(refused) == 3
    assert used(database, "h1") == 5
    assert "no host has a free slot" in refused[0].message


def test_the_least_used_available_host_of_the_tier_is_chosen(database: Database) -> None:
    add_host(database, "busy", capacity=10, used=7)
    add_host(database, "quiet", capacity=10, used=2)
    add_host(database, "drained", capacity=10, used=0, status="draining")
    add_host(database, "other-tier", capacity=10, used=0, tier="ladybug-large")

    with database.session() as session:
        assert hosts.allocate_slot(session, "ladybug-standard").id == "quiet"
    assert used(database, "quiet") == 3


def test_a_slot_given_back_is_free_again_and_never_below_zero(database: Database) -> None:
    add_host(database, "h1", capacity=1)
    with database.session() as session:
        hosts.allocate_slot(session, "ladybug-standard")
    with pytest.raises(CapacityExhausted), database.session() as session:
        hosts.allocate_slot(session, "ladybug-standard")

    with database.session() as session:
        hosts.release_slot(session, "h1")
        hosts.release_slot(session, "h1")
    assert used(database, "h1") == 0
    with database.session() as session:
        assert hosts.allocate_slot(session, "ladybug-standard").id == "h1"
