"""Where backups are kept: a folder (the embedded default) or an S3-compatible store
(``BACKUP_STORE_URL=s3://BUCKET/PREFIX``), one contract (``contract.py``)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from provisioning_pipelines.errors import BackupDamaged, BackupStoreUnavailable, SettingsError
from provisioning_pipelines.storage.backup_store.contract import (
    BackupStore,
    StoredBackup,
    check_key,
)
from provisioning_pipelines.storage.backup_store.folder import FolderStore


def build_backup_store(url: str | None, folder: Path, *, endpoint_url: str | None = None,
                       storage_class: str | None = None,
                       timeout_seconds: float = 30.0) -> BackupStore:
    """S3 for an ``s3://`` URL (boto3 imported only then), the folder otherwise."""
    if not url:
        return FolderStore(folder)
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise SettingsError(f"BACKUP_STORE_URL: expected s3://BUCKET/PREFIX, got {url[:80]!r}")
    from provisioning_pipelines.storage.backup_store.s3 import S3Store

    return S3Store(parts.netloc, parts.path.strip("/"), endpoint_url=endpoint_url,
                   storage_class=storage_class, timeout_seconds=timeout_seconds)


__all__ = ["BackupDamaged", "BackupStore", "BackupStoreUnavailable", "FolderStore",
           "StoredBackup", "build_backup_store", "check_key"]
