"""Credit pools: allocations happen once per reference, and a failed attempt takes them back."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from provisioning_pipelines.flows import GRAPH_FLOW, SubscriptionConfig
from provisioning_pipelines.services.billing import credits
from provisioning_pipelines.services.catalog import REPOSITORY_PLANS, TIERS
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import CreditPool, CreditTransaction
from tests.factories import new_customer, paid_graph_subscription, paid_repository_subscription
from tests.flows.helpers import run_direct


def balance(database: Database, **where: str) -> int:
    with database.session() as session:
        pool = session.scalar(select(CreditPool).filter_by(**where))
        assert pool is not None
        return pool.balance


def test_a_repository_plan_is_credited_once_and_an_upgrade_adds_its_own(
    database: Database,
) -> None:
    user = new_customer(database)
    sub_id = paid_repository_subscription(database, user)

    def allocate(plan: str) -> int:
        with database.session() as session:
            return credits.allocate_repository_plan(session, user_id=user.user_id,
                                                    repository="sec", plan=plan,
                                                    subscription_id=sub_id)

    assert allocate("starter") == REPOSITORY_PLANS["starter"].monthly_credits
    assert allocate("starter") == 0
    assert allocate("advanced") == REPOSITORY_PLANS["advanced"].monthly_credits
    assert balance(database, user_id=user.user_id, repository="sec") == 5_000 + 17_000


def test_a_failed_attempt_takes_its_allocations_back(database: Database) -> None:
    user = new_customer(database)
    sub_id = paid_repository_subscription(database, user)
    with database.session() as session:
        credits.allocate_repository_plan(session, user_id=user.user_id, repository="sec",
                                         plan="unlimited", subscription_id=sub_id)

    with database.session() as session:
        credits.remove_subscription_allocations(session, sub_id)

    assert balance(database, user_id=user.user_id, repository="sec") == 0
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(CreditTransaction)) == 0
    with database.session() as session:  # and a retry credits the plan again
        assert credits.allocate_repository_plan(
            session, user_id=user.user_id, repository="sec", plan="unlimited",
            subscription_id=sub_id) == 85_000


def test_a_graph_pool_is_credited_once_however_often_it_is_made(
    database: Database, resources: dict[str, Any],
) -> None:
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user, plan_name="ladybug-large")
    graph_id = run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id),
                          resources).result["graph_id"]
    tier = TIERS["ladybug-large"]

    with database.session() as session:  # a retry after a crash makes the pool again
        credits.create_graph_pool(session, graph_id=graph_id, tier=tier,
                                  subscription_id=sub_id)

    assert balance(database, graph_id=graph_id) == tier.monthly_credits == 50_000
