"""Credit pools: one per graph (sized by tier) and one per user and repository (sized by plan).

Every balance change is a ``CreditTransaction`` with a unique ``reference``; an allocation that
was already made (same pool, same plan, same subscription) hits the unique constraint's twin
check below and adds nothing.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from provisioning_pipelines.services.catalog import REPOSITORY_PLANS, Tier
from provisioning_pipelines.storage.models import CreditPool, CreditTransaction, new_id


def create_graph_pool(
    session: Session, *, graph_id: str, tier: Tier, subscription_id: str | None,
) -> CreditPool:
    """The graph's pool with its first month's credits; idempotent per graph."""
    pool = session.scalar(select(CreditPool).where(CreditPool.graph_id == graph_id))
    if pool is None:
        pool = _graph_pool(graph_id, tier, balance=0)
        session.add(pool)
        session.flush()
    _allocate(session, pool, tier.monthly_credits, _graph_reference(graph_id), subscription_id)
    return pool


def new_graph_pool(graph_id: str, tier: Tier, subscription_id: str | None
                   ) -> tuple[CreditPool, CreditTransaction]:
    """The rows of a pool for a graph made in this transaction (it cannot have one yet): the
    pool, credited as it is inserted, and its first month's allocation."""
    pool = _graph_pool(graph_id, tier, balance=tier.monthly_credits)
    return pool, _allocation(pool, tier.monthly_credits, _graph_reference(graph_id),
                             subscription_id)


def _graph_pool(graph_id: str, tier: Tier, *, balance: int) -> CreditPool:
    return CreditPool(id=new_id("pool"), owner_type="graph", graph_id=graph_id,
                      plan_name=tier.name, monthly_allocation=tier.monthly_credits,
                      balance=balance)


def _graph_reference(graph_id: str) -> str:
    return f"graph:{graph_id}:initial"


def allocate_repository_plan(
    session: Session, *, user_id: str, repository: str, plan: str, subscription_id: str
) -> int:
    """Give the plan's monthly credits once; returns how many credits were added (0 if done)."""
    credits = REPOSITORY_PLANS[plan].monthly_credits
    pool = session.scalar(
        select(CreditPool).where(CreditPool.user_id == user_id,
                                 CreditPool.repository == repository)
    )
    if pool is None:
        pool = CreditPool(
            id=new_id("pool"),
            owner_type="repository",
            user_id=user_id,
            repository=repository,
            plan_name=plan,
            monthly_allocation=credits,
            balance=0,
        )
        session.add(pool)
        session.flush()
    elif pool.plan_name != plan:
        pool.plan_name = plan
        pool.monthly_allocation = credits
    return _allocate(session, pool, credits, f"repository:{pool.id}:{plan}", subscription_id)


def _allocate(
    session: Session, pool: CreditPool, amount: int, reference: str, subscription_id: str | None
) -> int:
    if pool.status != "active":
        return 0  # a suspended resource's pool is frozen: no new credit
    exists = session.scalar(
        select(CreditTransaction.id).where(CreditTransaction.reference == reference)
    )
    if exists is not None:
        return 0
    session.add(_allocation(pool, amount, reference, subscription_id))
    pool.balance += amount
    session.flush()
    return amount


def _allocation(pool: CreditPool, amount: int, reference: str, subscription_id: str | None
                ) -> CreditTransaction:
    return CreditTransaction(pool_id=pool.id, amount=amount, kind="allocation",
                             reference=reference, subscription_id=subscription_id,
                             description=f"monthly allocation for {pool.plan_name}")


def remove_subscription_allocations(session: Session, subscription_id: str) -> None:
    """Undo the allocations a failed attempt made (the balance goes back with them)."""
    transactions = session.scalars(
        select(CreditTransaction).where(CreditTransaction.subscription_id == subscription_id)
    ).all()
    for transaction in transactions:
        pool = session.get(CreditPool, transaction.pool_id)
        if pool is not None:
            pool.balance -= transaction.amount
    session.execute(
        delete(CreditTransaction).where(CreditTransaction.subscription_id == subscription_id)
    )
    session.flush()
