"""Probes of a real graph host server: unanswered ones in a row make it unhealthy, never
deleted; the first answer makes it healthy again. (Remote hosts take no graph yet: the flows
still write on this machine's disk.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioning_pipelines.errors import CapacityExhausted
from provisioning_pipelines.services.capacity import hosts, remote
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import GraphHost
from tests.host_serving import TOKEN, HostProcess
from tests.services.capacity.test_hosts import add_host

MISSES = 3


@pytest.fixture
def host(tmp_path: Path) -> Iterator[HostProcess]:
    process = HostProcess(tmp_path / "host-data", tmp_path / "host.log", host_id="host-r",
                          tier="ladybug-standard", capacity=10).start()
    yield process
    process.stop()


def row(database: Database, host_id: str) -> GraphHost:
    with database.session() as session:
        found = session.get(GraphHost, host_id)
        assert found is not None
        session.expunge(found)
        return found


def placed(database: Database) -> str:
    with database.session() as session:
        return hosts.allocate_slot(session, "ladybug-standard").id


def test_a_killed_host_is_unhealthy_after_the_misses_and_healthy_when_it_answers(
        database: Database, host: HostProcess, graph_dir: Path) -> None:
    with database.session() as session:
        remote.add_remote_host(session, host_id=host.host_id, url=host.url, token=TOKEN,
                               graph_data_dir=graph_dir)
    add_host(database, "other", capacity=10, used=5)
    first_seen = row(database, host.host_id).last_seen_at
    # Healthy, it takes the next graph: 10 slots free against the other's 5.
    assert placed(database) == host.host_id

    host.kill()
    for miss in range(1, MISSES):
        assert remote.probe_hosts(database, TOKEN, misses=MISSES) == {host.host_id: "healthy"}
        assert row(database, host.host_id).failed_probes == miss
    assert remote.probe_hosts(database, TOKEN, misses=MISSES) == {host.host_id: "unhealthy"}
    down = row(database, host.host_id)
    assert (down.health, down.failed_probes, down.last_seen_at) == ("unhealthy", MISSES,
                                                                    first_seen)
    # Its row and slots stay; the tier fills on the other host and then says so.
    assert [placed(database) for _ in range(5)] == ["other"] * 5
    assert down.slots_used == 1
    with pytest.raises(CapacityExhausted):
        placed(database)
    with database.session() as session:
        assert hosts.free_slots(session, "ladybug-standard") == 0

    host.start()
    assert remote.probe_hosts(database, TOKEN, misses=MISSES) == {host.host_id: "healthy"}
    back = row(database, host.host_id)
    assert (back.health, back.failed_probes) == ("healthy", 0)
    assert back.last_seen_at is not None and first_seen is not None
    assert back.last_seen_at > first_seen


def test_local_hosts_are_never_probed(database: Database, graph_dir: Path) -> None:
    with database.session() as session:
        hosts.ensure_local_hosts(session, graph_dir)
    assert remote.probe_hosts(database, TOKEN, misses=1) == {}
    with database.session() as session:
        assert {h.health for h in hosts.list_hosts(session)} == {"healthy"}


@settings(max_examples=40, deadline=None)
@given(outcomes=st.lists(st.booleans(), max_size=12), misses=st.integers(1, 4))
def test_health_is_unhealthy_exactly_after_misses_in_a_row(
        sqlite_database: Database, outcomes: list[bool], misses: int) -> None:
    """Whatever the order of answers and misses: unhealthy from the ``misses``-th miss in a
    row until the next answer."""
    host_id = f"h-{uuid.uuid4().hex[:12]}"
    with sqlite_database.session() as session:
        session.add(GraphHost(id=host_id, tier="ladybug-standard", capacity=1, slots_used=0,
                              data_root="/h", status="available", url="http://127.0.0.1:1"))
    in_a_row, expected = 0, "healthy"
    for answered in outcomes:
        with sqlite_database.session() as session:
            health = remote.record_probe(session, host_id, answered, misses=misses)
        in_a_row = 0 if answered else in_a_row + 1
        if answered:
            expected = "healthy"
        elif in_a_row >= misses:
            expected = "unhealthy"
        assert health == expected
        assert row(sqlite_database, host_id).failed_probes == in_a_row
