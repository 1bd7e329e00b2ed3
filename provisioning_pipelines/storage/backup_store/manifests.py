"""A backup's manifest, as it is written beside its object (JSON), in one place for both stores."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from provisioning_pipelines.storage.backup_store.contract import StoredBackup


def dump(found: StoredBackup) -> bytes:
    return json.dumps({
        "key": found.key, "size_bytes": found.size_bytes, "sha256": found.sha256,
        "expires_at": found.expires_at.isoformat() if found.expires_at else None,
        "details": found.details,
    }, sort_keys=True).encode()


def load(raw: bytes) -> StoredBackup | None:
    """The manifest, or None for one that is not ours (unreadable, fields missing)."""
    try:
        data: dict[str, Any] = json.loads(raw)
        expires = data.get("expires_at")
        return StoredBackup(key=str(data["key"]), size_bytes=int(data["size_bytes"]),
                            sha256=str(data["sha256"]),
                            expires_at=datetime.fromisoformat(expires) if expires else None,
                            details=dict(data.get("details") or {}))
    except (ValueError, KeyError, TypeError):
        return None
