"""Backups in object storage, on real parts: two ``host serve`` processes and the control plane
sharing one S3 store on a real SeaweedFS server (``BACKUP_STORE_URL``), PostgreSQL for the rows.
A backup taken on one host is restored into a graph on the other; a damaged object is refused
with the graph untouched; a store that is down fails the backup with nothing half-made, and the
next try works; retention removes expired objects from the store itself."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from provisioning_pipelines.errors import BackupStoreUnavailable
from provisioning_pipelines.flows import GRAPH_FLOW, SubscriptionConfig
from provisioning_pipelines.flows.backup import (
    BACKUP_FLOW,
    RESTORE_FLOW,
    BackupConfig,
    RestoreConfig,
)
from provisioning_pipelines.services.graphs import backups
from provisioning_pipelines.storage.backup_store.s3 import S3Store
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import Graph, GraphBackup, utcnow
from tests.factories import NewUser, new_customer, paid_graph_subscription
from tests.flows.helpers import run_direct
from tests.flows.host_servers import TIER, client, control_plane, register, stop_hosts
from tests.host_serving import HostProcess
from tests.seaweed import SeaweedServer

ROWS = "MATCH (e:Entity) RETURN e.identifier AS id ORDER BY id"


def _store_settings(server: SeaweedServer, bucket: str) -> dict[str, str]:
    return {"BACKUP_STORE_URL": f"s3://{bucket}/backups",
            "BACKUP_STORE_ENDPOINT_URL": server.endpoint_url,
            "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}


class Plane:
    """Two hosts of one slot each, a control plane, and the store they share."""

    def __init__(self, database: Database, servers: list[HostProcess],
                 resources: dict[str, Any], store: S3Store) -> None:
        self.database, self.servers, self.resources, self.store = (database, servers,
                                                                   resources, store)

    def graph(self, user: NewUser) -> dict[str, Any]:
        sub_id = paid_graph_subscription(self.database, user, plan_name=TIER)
        return run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id),
                          self.resources).result

    def host_of(self, graph: dict[str, Any]) -> HostProcess:
        return next(server for server in self.servers if server.host_id == graph["host_id"])

    def write(self, graph: dict[str, Any], *identifiers: str) -> None:
        with client(self.host_of(graph)) as host:
            for identifier in identifiers:
                host.query(graph["graph_id"], "CREATE (:Entity {identifier: $id, name: $id})",
                           {"id": identifier}, read_only=False)

    def rows(self, graph: dict[str, Any]) -> list[str]:
        with client(self.host_of(graph)) as host:
            return [row["id"] for row in host.query(graph["graph_id"], ROWS)]


def _plane(postgres_database: Database, tmp_path: Path, server: SeaweedServer,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Plane]:
    bucket = server.bucket(f"plane-{uuid.uuid4().hex[:10]}")
    settings = _store_settings(server, bucket)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # the control plane's client
        monkeypatch.setenv(name, settings[name])
    made = [HostProcess(tmp_path / f"host-{i}" / "data", tmp_path / f"host-{i}.log",
                        host_id=f"host-{i}", tier=TIER, capacity=1) for i in range(2)]
    for process in made:
        process.env.update(settings)
    servers: list[HostProcess] = []
    try:
        for process in made:
            servers.append(process.start())
        register(postgres_database, servers, tmp_path)
        resources = control_plane(postgres_database, tmp_path,
                                  GRAPH_HOST_TIMEOUT_SECONDS=10,
                                  GRAPH_HOST_WORK_TIMEOUT_SECONDS=60,
                                  **{name: value for name, value in settings.items()
                                     if name.startswith("BACKUP_")})
        store = S3Store(bucket, "backups", endpoint_url=server.endpoint_url)
        yield Plane(postgres_database, servers, resources, store)
        store.close()
    finally:
        stop_hosts(servers)


@pytest.fixture
def plane(postgres_database: Database, tmp_path: Path, seaweed: SeaweedServer,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Plane]:
    yield from _plane(postgres_database, tmp_path, seaweed, monkeypatch)


def test_a_backup_taken_on_one_host_is_restored_on_another(plane: Plane) -> None:
    user = new_customer(plane.database)
    first = plane.graph(user)
    plane.write(first, "acme", "globex")
    taken = run_direct(BACKUP_FLOW, BackupConfig(graph_id=first["graph_id"],
                                                 backup_id="bk_ondemand1"),
                       plane.resources).result
    second = plane.graph(user)  # the other host: each holds one graph
    assert {first["host_id"], second["host_id"]} == {"host-0", "host-1"}
    plane.write(second, "initech")

    kept = plane.store.head(f"{first['graph_id']}/bk_ondemand1.lbug")
    assert kept is not None and kept.sha256 == taken["checksum"]
    assert kept.expires_at is not None and kept.details["host_id"] == first["host_id"]
    with plane.database.session() as session:
        row = session.get(GraphBackup, "bk_ondemand1")
        assert row.path == f"s3://{plane.store.bucket}/backups/{first['graph_id']}/" \
            "bk_ondemand1.lbug"
        assert abs((row.expires_at - kept.expires_at).total_seconds()) < 1
    # Nothing stays on the host's disk: the store keeps it.
    assert not list((plane.host_of(first).data_root / ".host").glob("**/bk_ondemand1*"))

    restored = run_direct(RESTORE_FLOW, RestoreConfig(
        user_id=user.user_id, graph_id=first["graph_id"], backup_id="bk_ondemand1",
        into_graph_id=second["graph_id"]), plane.resources).result
    assert restored["restored_from"] == {"graph_id": first["graph_id"],
                                         "backup_id": "bk_ondemand1"}
    assert plane.rows(second) == ["acme", "globex"]
    assert plane.rows(first) == ["acme", "globex"]
    with client(plane.host_of(second)) as host:
        assert host.checksum(second["graph_id"]) == taken["checksum"]


def test_a_damaged_object_is_refused_and_the_graph_is_untouched(plane: Plane) -> None:
    user = new_customer(plane.database)
    first = plane.graph(user)
    plane.write(first, "acme")
    run_direct(BACKUP_FLOW, BackupConfig(graph_id=first["graph_id"], backup_id="bk_damaged"),
               plane.resources)
    second = plane.graph(user)
    plane.write(second, "initech")
    name = f"backups/{first['graph_id']}/bk_damaged.lbug"
    data = bytearray(plane.store.client.get_object(Bucket=plane.store.bucket,
                                                   Key=name)["Body"].read())
    data[len(data) // 2] ^= 0x01  # one bit of one byte
    plane.store.client.put_object(Bucket=plane.store.bucket, Key=name, Body=bytes(data))
    data_root = plane.host_of(second).data_root
    before = sorted(path.name for path in data_root.iterdir())

    with pytest.raises(Exception, match="damaged"):
        run_direct(RESTORE_FLOW, RestoreConfig(
            user_id=user.user_id, graph_id=first["graph_id"], backup_id="bk_damaged",
            into_graph_id=second["graph_id"]), plane.resources)

    assert plane.rows(second) == ["initech"]
    assert sorted(path.name for path in data_root.iterdir()) == before  # nothing staged left
    with plane.database.session() as session:
        graph = session.get(Graph, second["graph_id"])
        assert graph.lifecycle_token is None and "restoring" not in (graph.details or {})


def test_retention_removes_expired_objects_from_the_store(plane: Plane) -> None:
    user = new_customer(plane.database)
    graph = plane.graph(user)
    for backup_id in ("bk_old", "bk_new"):
        run_direct(BACKUP_FLOW, BackupConfig(graph_id=graph["graph_id"], backup_id=backup_id),
                   plane.resources)
    assert sorted(found.key for found in plane.store.list()) == [
        f"{graph['graph_id']}/bk_new.lbug", f"{graph['graph_id']}/bk_old.lbug"]
    with plane.database.session() as session:
        old = session.get(GraphBackup, "bk_old")
        old.expires_at = utcnow() - timedelta(seconds=1)
        expired = backups.expired(session, now=utcnow())
        assert [backup.id for backup in expired] == ["bk_old"]
        backups.prune(session, plane.resources["graph_engine"].hosts(), expired[0])
    assert [found.key for found in plane.store.list()] == [f"{graph['graph_id']}/bk_new.lbug"]
    assert plane.store.orphans() == []
    # What no row names any more (a backup whose answer was lost) is swept by its own
    # manifest's expiry, as the reaper does on every round.
    with client(plane.host_of(graph)) as host:
        stray = host.back_up(graph["graph_id"], "bk_stray", expires_at=utcnow())
    assert stray.location.endswith("bk_stray.lbug")
    assert backups.sweep_store(plane.store, now=utcnow()) == []  # newer than any retention
    later = utcnow() + timedelta(days=400)
    assert backups.sweep_store(plane.store, now=later) == [
        f"removed expired backup {graph['graph_id']}/{name}.lbug from the backup store"
        for name in ("bk_new", "bk_stray")]
    assert plane.store.list() == []


@pytest.fixture
def own_seaweed(tmp_path: Path, seaweed: SeaweedServer) -> Iterator[SeaweedServer]:
    server = SeaweedServer(tmp_path / "own-seaweed").start()
    yield server
    server.stop()


def test_a_store_that_is_down_fails_the_backup_with_nothing_half_made(
        postgres_database: Database, tmp_path: Path, own_seaweed: SeaweedServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    made = _plane(postgres_database, tmp_path, own_seaweed, monkeypatch)
    plane = next(made)
    try:
        user = new_customer(plane.database)
        graph = plane.graph(user)
        plane.write(graph, "acme")
        own_seaweed.kill()
        with pytest.raises(BackupStoreUnavailable, match="backup store"):
            run_direct(BACKUP_FLOW, BackupConfig(graph_id=graph["graph_id"],
                                                 backup_id="bk_down"), plane.resources)
        with plane.database.session() as session:
            assert session.get(GraphBackup, "bk_down") is None
            assert session.get(Graph, graph["graph_id"]).lifecycle_token is None
        outgoing = plane.host_of(graph).data_root / ".host" / "outgoing"
        assert not outgoing.exists() or not any(outgoing.rglob("*"))

        own_seaweed.start()  # the same folder
        taken = run_direct(BACKUP_FLOW, BackupConfig(graph_id=graph["graph_id"],
                                                     backup_id="bk_down"),
                           plane.resources).result
        kept = plane.store.head(f"{graph['graph_id']}/bk_down.lbug")
        assert kept is not None and kept.sha256 == taken["checksum"]
    finally:
        made.close()
