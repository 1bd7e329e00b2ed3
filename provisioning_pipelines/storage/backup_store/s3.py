"""Backups kept in an S3-compatible store (boto3), the production home of backups.

Uploads go through boto3's transfer manager: multipart above ``multipart_bytes``, parts sent in
parallel, and an object that S3 shows only once its upload completed, so a store that dies
mid-upload leaves no object (and the next try starts afresh). The manifest is written after the
object; ``list`` and ``head`` go by manifests, so a half-done put is invisible. Every call has
connect and read timeouts and the client's own retries; what still fails is
``BackupStoreUnavailable`` (a 503 for the customer), never a half-made backup.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from provisioning_pipelines.errors import BackupStoreUnavailable, Conflict, InvalidRequest
from provisioning_pipelines.storage.backup_store import manifests
from provisioning_pipelines.storage.backup_store.contract import (
    MANIFEST_SUFFIX,
    BackupStore,
    StoredBackup,
    check_key,
    damaged,
    not_kept,
)

#: Above this a file goes in parts (and parts of this size).
MULTIPART_BYTES = 64 * 1024 * 1024
_MISSING = {"404", "NoSuchKey", "NotFound"}


class S3Store(BackupStore):
    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region: str | None = None, storage_class: str | None = None,
                 timeout_seconds: float = 30.0, attempts: int = 3,
                 multipart_bytes: int = MULTIPART_BYTES) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.storage_class = storage_class
        self.location = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.client = boto3.client(
            "s3", endpoint_url=endpoint_url, region_name=region or "us-east-1",
            config=Config(connect_timeout=min(timeout_seconds, 10.0),
                          read_timeout=timeout_seconds,
                          retries={"max_attempts": attempts, "mode": "standard"},
                          s3={"addressing_style": "path"}))
        self.transfer = TransferConfig(multipart_threshold=multipart_bytes,
                                       multipart_chunksize=multipart_bytes, max_concurrency=4)

    def put(self, key: str, source: Path, *, sha256: str, expires_at: datetime | None,
            details: dict[str, Any] | None = None, move: bool = False) -> StoredBackup:
        kept = self.head(key)
        if kept is not None:
            if kept.sha256 != sha256:
                raise Conflict(f"backup {key!r} is kept already with other contents",
                               field="backup_id")
            return kept
        found = StoredBackup(key, Path(source).stat().st_size, sha256, expires_at, details or {})
        extra: dict[str, Any] = {"Metadata": {"sha256": sha256}}
        if self.storage_class:
            extra["StorageClass"] = self.storage_class
        with self._answering(f"keeping backup {key!r}"):
            self.client.upload_file(str(source), self.bucket, self._object(key),
                                    ExtraArgs=extra, Config=self.transfer)
            self.client.put_object(Bucket=self.bucket, Key=self._manifest(key),
                                   Body=manifests.dump(found),
                                   ContentType="application/json")
        if move:
            Path(source).unlink(missing_ok=True)
        return found

    def get(self, key: str, destination: Path, *, sha256: str | None = None) -> StoredBackup:
        found = self.head(key)
        if found is None:
            raise not_kept(key)
        expected = sha256 or found.sha256
        destination = Path(destination)
        destination.parent.mkdir(parents=True, exist_ok=True)
        temp = destination.with_name(f".{destination.name}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            with self._answering(f"fetching backup {key!r}"):
                try:
                    self.client.download_file(self.bucket, self._object(key), str(temp),
                                              Config=self.transfer)
                except ClientError as exc:
                    if _code(exc) in _MISSING:
                        raise not_kept(key) from None
                    raise
            with temp.open("rb") as fetched:
                actual = hashlib.file_digest(fetched, "sha256").hexdigest()
            if actual != expected:
                raise damaged(key, actual, expected)
            os.replace(temp, destination)
            return found
        finally:
            temp.unlink(missing_ok=True)

    def head(self, key: str) -> StoredBackup | None:
        with self._answering(f"looking up backup {key!r}"):
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=self._manifest(key))
            except ClientError as exc:
                if _code(exc) in _MISSING:
                    return None
                raise
            return manifests.load(answer["Body"].read())

    def delete(self, key: str) -> bool:
        existed = self.head(key) is not None
        with self._answering(f"removing backup {key!r}"):
            # The manifest first: a crash between the two leaves an object nobody lists, which
            # ``orphans`` finds, never a manifest naming nothing.
            self.client.delete_object(Bucket=self.bucket, Key=self._manifest(key))
            self.client.delete_object(Bucket=self.bucket, Key=self._object(key))
        return existed

    def list(self, prefix: str = "", *, kept_before: datetime | None = None
             ) -> list[StoredBackup]:
        found = []
        for name, written in self._listing(prefix):
            if name.endswith(MANIFEST_SUFFIX) and (kept_before is None or written < kept_before):
                kept = self.head(self._key(name).removesuffix(MANIFEST_SUFFIX))
                if kept is not None:
                    found.append(kept)
        return sorted(found, key=lambda kept: kept.key)

    def orphans(self, prefix: str = "") -> list[str]:
        """Objects without a manifest (a put or a delete cut between its two writes)."""
        names = {name for name, _ in self._listing(prefix)}
        return sorted(self._key(name) for name in names if not name.endswith(MANIFEST_SUFFIX)
                      and f"{name}{MANIFEST_SUFFIX}" not in names)

    def close(self) -> None:
        self.client.close()

    def _listing(self, prefix: str) -> list[tuple[str, datetime]]:
        """Object names under the prefix, with when each was written."""
        names: list[tuple[str, datetime]] = []
        with self._answering("listing backups"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._under(prefix))
            for page in pages:
                names.extend((item["Key"], item["LastModified"])
                             for item in page.get("Contents", []))
        return names

    def _object(self, key: str) -> str:
        return self._under(check_key(key))

    def _under(self, name: str) -> str:
        """A key or a key's beginning, under the store's prefix."""
        if ".." in name:
            raise InvalidRequest(f"backup key: {name[:80]!r} is not under the store",
                                 field="key")
        return f"{self.prefix}/{name}" if self.prefix else name

    def _manifest(self, key: str) -> str:
        return f"{self._object(key)}{MANIFEST_SUFFIX}"

    def _key(self, name: str) -> str:
        return name.removeprefix(f"{self.prefix}/") if self.prefix else name

    @contextlib.contextmanager
    def _answering(self, doing: str):  # type: ignore[no-untyped-def]
        """A store that does not answer, or answers with its own failure, is 503 naming it."""
        try:
            yield
        except ClientError as exc:
            if _code(exc) in _MISSING or not _server_side(exc):
                raise
            raise BackupStoreUnavailable(f"the backup store {self.location} failed while "
                                         f"{doing} ({_code(exc)}); try again shortly") from exc
        except (BotoCoreError, S3UploadFailedError) as exc:
            raise BackupStoreUnavailable(f"the backup store {self.location} did not answer "
                                         f"while {doing} ({type(exc).__name__}); try again "
                                         "shortly") from exc


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _server_side(exc: ClientError) -> bool:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 500
    return int(status) >= 500 or _code(exc) in {"SlowDown", "RequestTimeout"}
