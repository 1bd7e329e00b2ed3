"""The audit log: who did what to which subscription, graph or repository access."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from provisioning_pipelines.storage.models import AuditLogEntry


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: str,
    details: dict[str, Any] | None = None,
) -> None:
    session.add(
        AuditLogEntry(
            actor=actor,
            action=action,
            subject_type=subject_type,
            subject_id=subject_id,
            details=details or {},
        )
    )
