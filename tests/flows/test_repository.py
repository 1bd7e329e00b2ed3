"""The repository-access flow: grant, allocate credits once, activate, audit, invoice."""

from __future__ import annotations

from typing import Any

import pytest
from dagster import AssetKey, DagsterInstance
from sqlalchemy import select, update

from provisioning_pipelines.errors import InvalidRequest
from provisioning_pipelines.flows import REPOSITORY_FLOW, SubscriptionConfig
from provisioning_pipelines.services import requests as subscriptions
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import (
    AuditLogEntry,
    CreditPool,
    CreditTransaction,
    Invoice,
    RepositoryAccess,
    Subscription,
)
from tests.factories import new_customer, paid_repository_subscription
from tests.flows.helpers import job_error, run_direct, run_job


def test_repository_job_grants_access_and_credits(
    database: Database, resources: dict[str, Any], dagster_instance: DagsterInstance
) -> None:
    user = new_customer(database)
    sub_id = paid_repository_subscription(database, user, plan_name="sec-starter")

    result = run_job(REPOSITORY_FLOW, SubscriptionConfig(subscription_id=sub_id),
                     instance=dagster_instance, resources=resources)

    assert result.success
    with database.session() as session:
        sub = session.get(Subscription, sub_id)
        assert (sub.status, sub.resource_id) == ("active", "sec")
        access = session.scalar(select(RepositoryAccess))
        assert (access.user_id, access.repository, access.access_level) == (
            user.user_id, "sec", "read")
        pool = session.scalar(select(CreditPool).where(CreditPool.repository == "sec"))
        assert (pool.balance, pool.monthly_allocation) == (5_000, 5_000)
        actions = session.scalars(select(AuditLogEntry.action)).all()
        assert "repository.access_granted" in actions and "subscription.activated" in actions
    event = dagster_instance.get_latest_materialization_event(
        AssetKey(["provisioning", "repository_access"]))
    metadata = event.asset_materialization.metadata
    assert metadata["repository"].value == "sec" and metadata["plan"].value == "starter"
    assert metadata["provisioning_method"].value == "dagster"
    assert metadata["user_id"].value == user.user_id


def test_same_plan_again_adds_no_credits_and_no_second_access(
    database: Database, resources: dict[str, Any]
) -> None:
    user = new_customer(database)
    first = paid_repository_subscription(database, user, plan_name="sec-advanced")
    second = paid_repository_subscription(database, user, plan_name="sec-advanced")
    run_direct(REPOSITORY_FLOW, SubscriptionConfig(subscription_id=first), resources)
    outcome = run_direct(REPOSITORY_FLOW, SubscriptionConfig(subscription_id=second), resources)

    assert outcome.result["credits_added"] == 0
    with database.session() as session:
        assert len(session.scalars(select(RepositoryAccess)).all()) == 1
        pool = session.scalar(select(CreditPool))
        assert pool.balance == 17_000
        assert session.scalar(select(RepositoryAccess.access_level)) == "write"


def test_upgrading_the_plan_raises_the_level_and_adds_its_credits(
    database: Database, resources: dict[str, Any]
) -> None:
    user = new_customer(database)
    for plan in ("sec-starter", "sec-unlimited"):
        sub_id = paid_repository_subscription(database, user, plan_name=plan)
        run_direct(REPOSITORY_FLOW, SubscriptionConfig(subscription_id=sub_id), resources)
    with database.session() as session:
        assert session.scalar(select(RepositoryAccess.access_level)) == "admin"
        assert session.scalar(select(CreditPool.balance)) == 5_000 + 85_000


def test_invoice_billed_customer_gets_an_invoice(
    database: Database, resources: dict[str, Any]
) -> None:
    user = new_customer(database, invoice_billing=True)
    sub_id = paid_repository_subscription(database, user, plan_name="sec-starter")
    run_direct(REPOSITORY_FLOW, SubscriptionConfig(subscription_id=sub_id), resources)
    with database.session() as session:
        invoice = session.scalar(select(Invoice))
        assert (invoice.subscription_id, invoice.amount_cents) == (sub_id, 2_900)


@pytest.mark.parametrize(
    ("plan_name", "message"),
    [
        ("industry-starter", "repository 'industry' is announced but not open yet"),
        ("weather-starter", "unknown repository 'weather'"),
        ("sec-platinum", "unknown plan 'sec-platinum'"),
        ("sec", "unknown plan 'sec'"),
    ],
)
def test_unknown_or_closed_repository_or_plan_is_refused(
    database: Database, plan_name: str, message: str
) -> None:
    user = new_customer(database)
    with database.session() as session, pytest.raises(InvalidRequest, match=message):
        subscriptions.request_repository(session, user_id=user.user_id, plan_name=plan_name)


def test_job_for_a_closed_repository_fails_the_subscription_and_grants_nothing(
    database: Database, resources: dict[str, Any], dagster_instance: DagsterInstance
) -> None:
    user = new_customer(database)
    sub_id = paid_repository_subscription(database, user)
    with database.session() as session:
        session.execute(update(Subscription).where(Subscription.id == sub_id)
                        .values(plan_name="economic-advanced",
                                request={"repository": "economic"}))

    result = run_job(REPOSITORY_FLOW, SubscriptionConfig(subscription_id=sub_id),
                     instance=dagster_instance, resources=resources)

    assert not result.success
    assert "announced but not open" in job_error(result)
    with database.session() as session:
        assert session.get(Subscription, sub_id).status == "failed"
        assert session.scalars(select(RepositoryAccess)).all() == []
        assert session.scalars(select(CreditTransaction)).all() == []
