"""Customers and paid subscriptions for tests, made through the services a user's request uses."""

from __future__ import annotations

from typing import Any

from provisioning_pipelines.services import requests as subscriptions
from provisioning_pipelines.services.access import accounts
from provisioning_pipelines.services.access.accounts import NewUser
from provisioning_pipelines.services.billing import subscriptions as billing
from provisioning_pipelines.storage.db import Database


def new_customer(database: Database, *, invoice_billing: bool = False,
                 email: str | None = None) -> NewUser:
    import uuid

    with database.session() as session:
        return accounts.create_user(
            session, email=email or f"user-{uuid.uuid4().hex[:8]}@example.com",
            invoice_billing=invoice_billing,
        )


def graph_request(**overrides: Any) -> dict[str, Any]:
    request: dict[str, Any] = {"name": "Acme knowledge graph", "description": "test graph",
                               "tags": ["test"], "schema_extensions": []}
    request.update(overrides)
    return request


def paid_graph_subscription(database: Database, user: NewUser, *,
                            plan_name: str = "ladybug-standard", paid: bool = True,
                            **graph: Any) -> str:
    with database.session() as session:
        subscription = subscriptions.request_graph(
            session, user_id=user.user_id, plan_name=plan_name, graph=graph_request(**graph)
        )
        if paid:
            billing.mark_paid(session, subscription.id)
        return subscription.id


def paid_repository_subscription(database: Database, user: NewUser, *,
                                 plan_name: str = "sec-starter", paid: bool = True) -> str:
    with database.session() as session:
        subscription = subscriptions.request_repository(
            session, user_id=user.user_id, plan_name=plan_name
        )
        if paid:
            billing.mark_paid(session, subscription.id)
        return subscription.id
