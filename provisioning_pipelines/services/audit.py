"""The audit log: who did what to which subscription, graph or repository access."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning_pipelines.storage.db import insert_all
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
    insert_all(session, [entry(actor=actor, action=action, subject_type=subject_type,
                               subject_id=subject_id, details=details)])


def entry(*, actor: str, action: str, subject_type: str, subject_id: str,
          details: dict[str, Any] | None = None) -> AuditLogEntry:
    """An entry not yet added anywhere (for ``insert_all``)."""
    return AuditLogEntry(actor=actor, action=action, subject_type=subject_type,
                         subject_id=subject_id, details=details or {})


def record_once(session: Session, *, actor: str, action: str, subject_type: str,
                subject_id: str, details: dict[str, Any] | None = None) -> bool:
    """Record ``action`` on the subject unless it was recorded before (an alert, say)."""
    seen = session.scalar(select(AuditLogEntry.id).where(
        AuditLogEntry.action == action, AuditLogEntry.subject_type == subject_type,
        AuditLogEntry.subject_id == subject_id).limit(1))
    if seen is not None:
        return False
    record(session, actor=actor, action=action, subject_type=subject_type,
           subject_id=subject_id, details=details)
    return True
