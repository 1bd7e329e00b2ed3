"""Provision access to a shared data repository for a paid repository subscription."""

from __future__ import annotations

from provisioning_pipelines.errors import InvalidRequest
from provisioning_pipelines.flows.asset_keys import REPOSITORY_ASSET
from provisioning_pipelines.flows.steps import Flow, StepContext
from provisioning_pipelines.flows.subscription import (
    SubscriptionConfig,
    SubscriptionWork,
    activate_subscription,
    attempt_step,
    claim_subscription,
    subscription_owner,
    subscription_result,
    subscription_tags,
)
from provisioning_pipelines.services import catalog
from provisioning_pipelines.services.access import repositories
from provisioning_pipelines.services.billing import credits

RepositoryConfig = SubscriptionConfig


def _repository_and_plan(work: SubscriptionWork) -> tuple[str, catalog.RepositoryPlan]:
    repository, plan = catalog.repository_plan(work.claim.plan_name)
    asked = work.claim.request.get("repository", repository)
    if asked != repository:
        raise InvalidRequest(
            f"repository: {asked!r} does not match plan {work.claim.plan_name!r}",
            field="repository",
        )
    return catalog.open_repository(repository), plan


@attempt_step
def grant_repository_access(ctx: StepContext, work: SubscriptionWork) -> SubscriptionWork:
    """Grant the subscriber access to the repository at the plan's level (idempotent)."""
    if work.claim.already_active:
        return work
    repository, plan = _repository_and_plan(work)
    with ctx.database.session() as session:
        repositories.grant_access(
            session, user_id=work.claim.user_id, repository=repository, plan=plan.name,
            subscription_id=work.claim.subscription_id,
        )
    ctx.progress(f"Granted {plan.access_level} access to {repository}", 40)
    return work.with_details(resource_id=repository, repository=repository, plan=plan.name,
                             access_level=plan.access_level)


@attempt_step
def allocate_plan_credits(ctx: StepContext, work: SubscriptionWork) -> SubscriptionWork:
    """Allocate the plan's monthly credits; the same plan again adds nothing."""
    if work.claim.already_active:
        return work
    repository, plan = _repository_and_plan(work)
    with ctx.database.session() as session:
        added = credits.allocate_repository_plan(
            session, user_id=work.claim.user_id, repository=repository, plan=plan.name,
            subscription_id=work.claim.subscription_id,
        )
    ctx.progress(f"Allocated {added} credits for {repository}-{plan.name}", 80)
    return work.with_details(credits_added=added)


REPOSITORY_FLOW = Flow(
    name="repository_access",
    job_name="provision_repository_job",
    operation_kind="repository_provisioning",
    description="Grant access to a shared data repository and allocate the plan's credits.",
    asset_key=REPOSITORY_ASSET,
    steps=(claim_subscription, grant_repository_access, allocate_plan_credits,
           activate_subscription),
    tags=subscription_tags,
    owner=subscription_owner,
    result=subscription_result,
)
