"""Asking for a graph or a repository: a validated subscription, waiting for payment.

Validation happens here, when the customer asks, so a request that could never be provisioned
is refused before anyone pays for it; the flows validate again (a subscription row may come
from elsewhere) and fail such a subscription without retrying it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from provisioning_pipelines.errors import InvalidRequest
from provisioning_pipelines.services import catalog, validation
from provisioning_pipelines.services.access import accounts
from provisioning_pipelines.services.billing import subscriptions as billing
from provisioning_pipelines.services.graphs.graph_requests import GraphRequest
from provisioning_pipelines.storage.models import Subscription


def request_graph(
    session: Session, *, user_id: str, plan_name: str, graph: Any
) -> Subscription:
    catalog.customer_tier(plan_name)
    parsed = GraphRequest.parse(graph)
    return billing.create_subscription(
        session, user_id=user_id, org_id=accounts.org_of(session, user_id),
        resource_type="graph", plan_name=plan_name, request={"graph": parsed.to_dict()},
    )


def request_repository(
    session: Session, *, user_id: str, plan_name: str, repository: Any = None
) -> Subscription:
    repository = validation.text(repository, "repository", max_length=64, required=False)
    if repository is not None:
        catalog.open_repository(repository)  # an unknown one is said as such, first
    planned_repository, _plan = catalog.repository_plan(plan_name)
    repository = planned_repository if repository is None else repository
    if repository != planned_repository:
        raise InvalidRequest(
            f"repository: {repository!r} does not match plan {plan_name!r}", field="repository"
        )
    catalog.open_repository(repository)
    return billing.create_subscription(
        session, user_id=user_id, org_id=accounts.org_of(session, user_id),
        resource_type="repository", plan_name=plan_name, request={"repository": repository},
    )


def request_subscription(session: Session, user_id: str, body: Any) -> Subscription:
    """The API's ``POST /v1/subscriptions`` body, dispatched on ``resource_type``."""
    if not isinstance(body, dict):
        raise InvalidRequest("body: expected a JSON object", field="body")
    resource_type = body.get("resource_type")
    plan_name = validation.text(body.get("plan_name"), "plan_name", max_length=64)
    if not plan_name:
        raise InvalidRequest("plan_name: required", field="plan_name")
    if resource_type == "graph":
        if body.get("repository") is not None:
            raise InvalidRequest("repository: only a repository subscription names one",
                                 field="repository")
        return request_graph(session, user_id=user_id, plan_name=plan_name,
                             graph=body.get("graph"))
    if resource_type == "repository":
        if body.get("graph") is not None:
            raise InvalidRequest("graph: only a graph subscription describes a graph",
                                 field="graph")
        return request_repository(session, user_id=user_id, plan_name=plan_name,
                                  repository=body.get("repository"))
    raise InvalidRequest(
        f"resource_type: expected 'graph' or 'repository', got {resource_type!r:.70}",
        field="resource_type",
    )
