"""The backup store's contract, held by the folder and by S3 on a real SeaweedFS server: what is
kept comes back byte for byte with its checksum checked, a damaged object is refused with
nothing made, retention removes what expired, and a store that dies mid-transfer leaves nothing
half-made while the next try works."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisioning_pipelines.errors import Conflict, InvalidRequest, NotFound, SettingsError
from provisioning_pipelines.storage.backup_store import (
    BackupDamaged,
    BackupStore,
    BackupStoreUnavailable,
    FolderStore,
    build_backup_store,
    check_key,
)
from provisioning_pipelines.storage.backup_store.s3 import S3Store
from tests.seaweed import SeaweedServer

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def _bucket() -> str:
    return f"backups-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["folder", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackupStore]:
    if request.param == "folder":
        yield FolderStore(tmp_path / "store")
        return
    seaweed: SeaweedServer = request.getfixturevalue("seaweed")
    kept = S3Store(seaweed.bucket(_bucket()), "graphs", endpoint_url=seaweed.endpoint_url,
                   multipart_bytes=5 * 1024 * 1024)
    yield kept
    kept.close()


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")


def _file(path: Path, size: int) -> tuple[Path, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_a_kept_backup_comes_back_byte_for_byte(store: BackupStore, tmp_path: Path) -> None:
    source, sha = _file(tmp_path / "graph.lbug", 300_000)
    kept = store.put("kgabc/daily-1", source, sha256=sha, expires_at=NOW,
                     details={"graph_id": "kgabc", "ddl": ["CREATE NODE TABLE x(id INT64)"]})
    assert (kept.size_bytes, kept.sha256) == (300_000, sha)
    back = store.get("kgabc/daily-1", tmp_path / "back" / "graph.lbug")
    assert (tmp_path / "back" / "graph.lbug").read_bytes() == source.read_bytes()
    assert back.details == {"graph_id": "kgabc", "ddl": ["CREATE NODE TABLE x(id INT64)"]}
    assert back.expires_at == NOW
    assert [found.key for found in store.list()] == ["kgabc/daily-1"]
    assert store.head("kgabc/daily-1") == back
    assert [entry.name for entry in (tmp_path / "back").iterdir()] == ["graph.lbug"]


def test_a_retried_put_returns_what_is_kept_and_other_contents_are_refused(
        store: BackupStore, tmp_path: Path) -> None:
    source, sha = _file(tmp_path / "a.lbug", 1000)
    first = store.put("kgabc/x", source, sha256=sha, expires_at=None)
    assert store.put("kgabc/x", source, sha256=sha, expires_at=None) == first
    other, other_sha = _file(tmp_path / "b.lbug", 1000)
    with pytest.raises(Conflict):
        store.put("kgabc/x", other, sha256=other_sha, expires_at=None)
    assert store.get("kgabc/x", tmp_path / "c.lbug").sha256 == sha


def test_a_large_file_goes_up_in_parts_and_comes_back_whole(
        store: BackupStore, tmp_path: Path) -> None:
    source, sha = _file(tmp_path / "big.lbug", 12 * 1024 * 1024 + 17)  # three parts on S3
    store.put("kgbig/on-demand", source, sha256=sha, expires_at=None)
    store.get("kgbig/on-demand", tmp_path / "big-back.lbug")
    assert hashlib.sha256((tmp_path / "big-back.lbug").read_bytes()).hexdigest() == sha


def _damage(store: BackupStore, key: str) -> None:
    """Flip one byte of the kept object, leaving its manifest as it is."""
    if isinstance(store, FolderStore):
        path = store.root / key
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        return
    assert isinstance(store, S3Store)
    name = f"{store.prefix}/{key}"
    data = bytearray(store.client.get_object(Bucket=store.bucket, Key=name)["Body"].read())
    data[len(data) // 2] ^= 0x01
    store.client.put_object(Bucket=store.bucket, Key=name, Body=bytes(data))


def test_a_damaged_object_is_refused_and_nothing_is_made(
        store: BackupStore, tmp_path: Path) -> None:
    source, sha = _file(tmp_path / "graph.lbug", 50_000)
    store.put("kgabc/daily-2", source, sha256=sha, expires_at=None)
    _damage(store, "kgabc/daily-2")
    target = tmp_path / "restore" / "graph.lbug"
    with pytest.raises(BackupDamaged, match="damaged"):
        store.get("kgabc/daily-2", target)
    assert not target.exists()
    assert list((tmp_path / "restore").iterdir()) == []  # no temp file either


def test_a_source_that_is_not_its_checksum_is_not_kept_in_a_folder(tmp_path: Path) -> None:
    """(S3 keeps the checksum the host computed; every download is checked against it.)"""
    store = FolderStore(tmp_path / "store")
    source, _sha = _file(tmp_path / "graph.lbug", 1000)
    with pytest.raises(BackupDamaged):
        store.put("kgabc/y", source, sha256="0" * 64, expires_at=None)
    assert store.head("kgabc/y") is None and store.list() == []


def test_retention_removes_what_expired_and_keeps_the_rest(store: BackupStore,
                                                           tmp_path: Path) -> None:
    source, sha = _file(tmp_path / "graph.lbug", 1000)
    now = datetime.now(UTC)
    store.put("kga/daily-old", source, sha256=sha, expires_at=now - timedelta(days=1))
    store.put("kga/daily-new", source, sha256=sha, expires_at=now + timedelta(days=6))
    store.put("kga/final", source, sha256=sha, expires_at=None)
    # Nothing written within the shortest retention is read, expired or not.
    assert store.sweep(now, shortest_retention=timedelta(days=7)) == []
    assert store.sweep(now + timedelta(seconds=5)) == ["kga/daily-old"]
    assert [found.key for found in store.list()] == ["kga/daily-new", "kga/final"]
    with pytest.raises(NotFound):
        store.get("kga/daily-old", tmp_path / "gone.lbug")
    if isinstance(store, S3Store):  # the object went with its manifest
        assert store.orphans() == []


def test_delete_is_idempotent_and_a_missing_key_is_not_found(store: BackupStore,
                                                             tmp_path: Path) -> None:
    source, sha = _file(tmp_path / "graph.lbug", 1000)
    store.put("kga/x", source, sha256=sha, expires_at=None)
    assert store.delete("kga/x") is True
    assert store.delete("kga/x") is False
    assert store.head("kga/x") is None
    with pytest.raises(NotFound):
        store.get("kga/x", tmp_path / "x.lbug")
    assert store.list("kga/") == []


def test_list_goes_by_prefix(store: BackupStore, tmp_path: Path) -> None:
    source, sha = _file(tmp_path / "graph.lbug", 100)
    for key in ("kga/1", "kga/2", "kgb/1"):
        store.put(key, source, sha256=sha, expires_at=None)
    assert [found.key for found in store.list("kga/")] == ["kga/1", "kga/2"]


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture],
          deadline=None)
@given(st.text(max_size=40))
def test_a_key_that_could_leave_the_store_is_refused(key: str) -> None:
    try:
        checked = check_key(key)
    except InvalidRequest:
        return
    parts = checked.split("/")
    assert all(part and part not in (".", "..") and not part.startswith(".") for part in parts)
    assert not checked.startswith("/") and "\\" not in checked and "\x00" not in checked


def test_the_store_url_is_read_or_refused_by_name(tmp_path: Path) -> None:
    assert isinstance(build_backup_store(None, tmp_path), FolderStore)
    s3 = build_backup_store("s3://my-bucket/some/prefix", tmp_path,
                            endpoint_url="http://127.0.0.1:1")
    assert isinstance(s3, S3Store) and (s3.bucket, s3.prefix) == ("my-bucket", "some/prefix")
    for bad in ("ftp://x/y", "s3:///nobucket", "my-bucket"):
        with pytest.raises(SettingsError, match="BACKUP_STORE_URL"):
            build_backup_store(bad, tmp_path)


# --- the store itself dies ------------------------------------------------------------------


@pytest.fixture
def own_seaweed(tmp_path: Path, seaweed: SeaweedServer) -> Iterator[SeaweedServer]:
    """A private server, to kill (the session's serves every other test)."""
    server = SeaweedServer(tmp_path / "own-seaweed").start()
    yield server
    server.stop()


def _s3(server: SeaweedServer, bucket: str, **kwargs: Any) -> S3Store:
    return S3Store(bucket, "graphs", endpoint_url=server.endpoint_url, timeout_seconds=3,
                   attempts=1, multipart_bytes=5 * 1024 * 1024, **kwargs)


def test_a_store_that_is_down_is_unavailable_not_a_crash(own_seaweed: SeaweedServer,
                                                         tmp_path: Path) -> None:
    store = _s3(own_seaweed, own_seaweed.bucket(_bucket()))
    source, sha = _file(tmp_path / "graph.lbug", 1000)
    own_seaweed.kill()
    with pytest.raises(BackupStoreUnavailable, match="did not answer"):
        store.put("kga/x", source, sha256=sha, expires_at=None)
    with pytest.raises(BackupStoreUnavailable):
        store.get("kga/x", tmp_path / "x.lbug")
    assert not (tmp_path / "x.lbug").exists()


def test_killed_mid_upload_nothing_is_kept_and_the_next_try_works(
        own_seaweed: SeaweedServer, tmp_path: Path) -> None:
    bucket = own_seaweed.bucket(_bucket())
    store = _s3(own_seaweed, bucket)
    source, sha = _file(tmp_path / "big.lbug", 40 * 1024 * 1024)  # eight parts
    sent = threading.Event()
    uploading = threading.Event()

    def kill_when_parts_flow(_bytes: int) -> None:
        uploading.set()

    errors: list[BaseException] = []

    # Through the store's own put, the server killed once bytes are on the wire.
    def put() -> None:
        try:
            store.put("kga/big", source, sha256=sha, expires_at=None)
        except BaseException as exc:
            errors.append(exc)
        sent.set()

    store.transfer.max_concurrency = 1
    original = store.client.upload_file

    def upload_with_callback(*args: Any, **kwargs: Any) -> Any:
        kwargs["Callback"] = kill_when_parts_flow
        return original(*args, **kwargs)

    store.client.upload_file = upload_with_callback  # type: ignore[method-assign]
    worker = threading.Thread(target=put)
    worker.start()
    assert uploading.wait(30)
    own_seaweed.kill()
    assert sent.wait(60)
    worker.join(10)
    assert errors and isinstance(errors[0], BackupStoreUnavailable), errors
    own_seaweed.start()  # the same folder: what it kept survives
    store = _s3(own_seaweed, bucket)
    assert store.head("kga/big") is None and store.list() == []
    assert store.put("kga/big", source, sha256=sha, expires_at=None).sha256 == sha
    store.get("kga/big", tmp_path / "back.lbug")
    assert hashlib.sha256((tmp_path / "back.lbug").read_bytes()).hexdigest() == sha


def test_killed_mid_download_nothing_is_made_and_the_next_try_works(
        own_seaweed: SeaweedServer, tmp_path: Path) -> None:
    bucket = own_seaweed.bucket(_bucket())
    store = _s3(own_seaweed, bucket)
    source, sha = _file(tmp_path / "big.lbug", 40 * 1024 * 1024)
    store.put("kga/big", source, sha256=sha, expires_at=None)
    store.transfer.max_concurrency = 1
    receiving = threading.Event()
    original = store.client.download_file

    def download_with_callback(*args: Any, **kwargs: Any) -> Any:
        kwargs["Callback"] = lambda _bytes: receiving.set()
        return original(*args, **kwargs)

    store.client.download_file = download_with_callback  # type: ignore[method-assign]
    errors: list[BaseException] = []
    target = tmp_path / "restore" / "graph.lbug"

    def get() -> None:
        try:
            store.get("kga/big", target)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=get)
    worker.start()
    assert receiving.wait(30)
    own_seaweed.kill()
    worker.join(60)
    assert errors and isinstance(errors[0], BackupStoreUnavailable), errors
    assert not target.exists() and list(target.parent.iterdir()) == []
    own_seaweed.start()
    store = _s3(own_seaweed, bucket)
    store.get("kga/big", target)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == sha
