"""Access to shared data repositories: granting is idempotent, unique per user and repository."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from provisioning_pipelines.services import audit
from provisioning_pipelines.services.catalog import REPOSITORY_PLANS
from provisioning_pipelines.storage.models import RepositoryAccess, new_id


def grant_access(
    session: Session, *, user_id: str, repository: str, plan: str, subscription_id: str
) -> tuple[RepositoryAccess, bool]:
    """Grant (or re-level) a user's access, audited; returns the access row and whether it is
    new."""
    level = REPOSITORY_PLANS[plan].access_level
    access = session.scalar(
        select(RepositoryAccess).where(RepositoryAccess.user_id == user_id,
                                       RepositoryAccess.repository == repository)
    )
    created = access is None
    if access is None:
        access = RepositoryAccess(id=new_id("access"), user_id=user_id, repository=repository,
                                  access_level=level, plan_name=plan,
                                  subscription_id=subscription_id)
        session.add(access)
        session.flush()
    else:
        access.access_level = level
        access.plan_name = plan
    audit.record(session, actor=user_id, action="repository.access_granted",
                 subject_type="repository", subject_id=repository,
                 details={"plan": plan, "access_level": level, "new": created,
                          "subscription_id": subscription_id})
    return access, created


def revoke_subscription_access(session: Session, subscription_id: str) -> None:
    """Undo a failed attempt: remove the access rows this subscription created."""
    session.execute(
        delete(RepositoryAccess).where(RepositoryAccess.subscription_id == subscription_id)
    )
