"""The audit log: who did what to which subscription, graph or repository access."""

from __future__ import annotations

from typing import Any

from sqlalchemy import CTE, Insert, bindparam, insert, literal, select
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


def for_each(changed: CTE, *, actor: str, action: str, subject_type: str) -> Insert:
    """An entry for each row the statement ``changed`` returns (its ``id`` the subject), to be
    a data-modifying CTE beside it: the entry is written exactly when the change is, in the
    change's own round trip. Bind ``audit_at``, the change's time, where the statement runs."""
    log = AuditLogEntry.__table__
    return insert(log).from_select(
        ["at", "actor", "action", "subject_type", "subject_id", "details"],
        select(bindparam("audit_at", type_=log.c.at.type), literal(actor), literal(action),
               literal(subject_type), changed.c.id,
               bindparam("audit_details", {}, type_=log.c.details.type)))


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
