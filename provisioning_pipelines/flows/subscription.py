"""The steps every paid subscription goes through: claim it first, activate it last.

Shared by the graph and repository flows (one op each in Dagster, so one config class:
``SubscriptionConfig``). A step of a subscription flow that finally fails hands its work to
``abandon_attempt``, which undoes what the attempt made and gives the claim back.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dagster import Config
from pydantic import Field

from provisioning_pipelines.errors import HostUnavailable
from provisioning_pipelines.flows.asset_keys import SUBSCRIPTION_ASSETS
from provisioning_pipelines.flows.public import CustomerError, customer_error, detail
from provisioning_pipelines.flows.steps import (
    SUBSCRIPTION_TAG,
    Outcome,
    StepContext,
    step,
    worth_retrying,
)
from provisioning_pipelines.services.access import repositories
from provisioning_pipelines.services.billing import credits
from provisioning_pipelines.services.billing import subscriptions as billing
from provisioning_pipelines.services.graphs import records as graphs
from provisioning_pipelines.services.provisioning import claims, leases
from provisioning_pipelines.services.provisioning.claims import Claim
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.errors import is_outage


class SubscriptionConfig(Config):
    """Which subscription to provision (graph and repository jobs alike)."""

    subscription_id: str = Field(description="The subscription to provision, e.g. sub_…")
    retry_failed: bool = Field(
        default=False,
        description="Put a failed subscription back to provisioning first (a new attempt).",
    )


@dataclass(frozen=True)
class SubscriptionWork:
    """One attempt's claim and what its steps found out, passed from step to step."""

    claim: Claim
    started_at: float
    details: dict[str, Any] = field(default_factory=dict)

    def with_details(self, **details: Any) -> SubscriptionWork:
        return replace(self, details={**self.details, **details})


def abandon_attempt(ctx: StepContext, work: Any, exc: BaseException) -> None:
    """Undo what this attempt made, keep the error, give the claim back.

    Only while the claim is still ours: a worker whose lease lapsed must not undo the work of the
    worker that took over. While attempts remain, raises ``RetryScheduled`` (from ``exc``): the
    work goes on, so its operation does too. The subscription keeps the customer's sentence
    for the error; the log keeps the raw one.
    """
    if not isinstance(work, SubscriptionWork) or work.claim.already_active:
        return
    claim = work.claim
    error = customer_error(exc)
    retryable = worth_retrying(exc)
    # A create its host may have received, and did not answer: the graph keeps its rows and
    # its place, so the next attempt asks the same host again (its create is idempotent) and
    # a partition never leaves a second file on another host.
    keep_place = (isinstance(exc, HostUnavailable) and exc.reached and retryable
                  and claim.attempt < ctx.policy.max_attempts)
    try:
        with ctx.database.session() as session:
            claims.assert_held(session, claim)
            if claim.resource_type == "graph":
                if not keep_place:
                    graphs.discard_graph(session, ctx.hosts,
                                         graphs.graph_id_for_subscription(claim.subscription_id),
                                         undo=True)
            else:
                repositories.revoke_subscription_access(session, claim.subscription_id)
                credits.remove_subscription_allocations(session, claim.subscription_id)
            status = claims.release_after_failure(
                session, claim, error.message, retryable=retryable,
                max_attempts=ctx.policy.max_attempts,
                backoff_seconds=ctx.policy.retry_backoff_seconds,
            )
    except claims.ClaimLost as lost:
        ctx.log.warning(f"subscription {claim.subscription_id}: claim lapsed; leaving its "
                        "work to the worker that took over")
        raise lost from exc
    except Exception as unreleased:
        # The database went away with the claim still held: its lease lapses and the next
        # trigger makes the next attempt, if one is left; what was made is found and finished.
        ctx.log.error(f"subscription {claim.subscription_id}: attempt {claim.attempt} failed "
                      f"({detail(exc)}) and its claim could not be given back "
                      f"({detail(unreleased)})")
        if (is_outage(unreleased) and retryable
                and claim.attempt < ctx.policy.max_attempts):
            raise _retry(claim, ctx, error, ctx.policy.claim_lease_seconds) from exc
        raise
    ctx.log.error(f"subscription {claim.subscription_id}: attempt {claim.attempt} failed "
                  f"({detail(exc)}); subscription is now {status}")
    if status == "provisioning":
        delay = claims.backoff_delay(claim.attempt, ctx.policy.retry_backoff_seconds)
        raise _retry(claim, ctx, error, delay) from exc


def _retry(claim: Claim, ctx: StepContext, error: CustomerError,
           retry_in: float) -> claims.RetryScheduled:
    return claims.RetryScheduled(claim.subscription_id, attempt=claim.attempt,
                                 max_attempts=ctx.policy.max_attempts, reason=error.message,
                                 reason_code=error.code, retry_in=retry_in)


def hold_claim(ctx: StepContext, work: Any) -> AbstractContextManager[Any]:
    """While a step works under a claim, this process's heartbeat keeps its lease alive."""
    if isinstance(work, SubscriptionWork) and not work.claim.already_active:
        keeper = leases.keeper(ctx.database, ctx.policy.claim_lease_seconds)
        return keeper.holding(work.claim.token)
    return nullcontext()


#: A step of an attempt: it runs under the attempt's claim, and its failure abandons the attempt.
attempt_step = step(on_failure=abandon_attempt, around=hold_claim)


@step(config=SubscriptionConfig, on_failure=None)
def claim_subscription(ctx: StepContext, config: SubscriptionConfig) -> SubscriptionWork:
    """Claim the subscription for one attempt; exactly one worker wins it."""
    started_at = time.time()
    with ctx.database.session() as session:
        if config.retry_failed:
            claims.reset_failed(session, config.subscription_id)
    with ctx.database.session() as session:
        claim = claims.claim(
            session, config.subscription_id, lease_seconds=ctx.policy.claim_lease_seconds,
            max_attempts=ctx.policy.max_attempts, operation_id=ctx.operation_id,
        )
    if claim.already_active:
        ctx.progress(f"Subscription already active with {claim.resource_id}", 90)
    else:
        ctx.progress(f"Claimed subscription {claim.subscription_id} (attempt {claim.attempt})",
                     10)
    return SubscriptionWork(claim=claim, started_at=started_at)


@attempt_step
def activate_subscription(ctx: StepContext, work: SubscriptionWork) -> Outcome:
    """Mark the subscription active with its resource id; invoice customers billed by invoice."""
    claim = work.claim
    asset_key = SUBSCRIPTION_ASSETS[claim.resource_type]
    if claim.already_active:
        return Outcome(asset_key=asset_key, started_at=work.started_at, materialize=False,
                       result={"subscription_id": claim.subscription_id, "status": "active",
                               "resource_id": claim.resource_id, "already_active": True},
                       metadata={})
    if "queued" in work.details:
        return Outcome(asset_key=asset_key, started_at=work.started_at, materialize=False,
                       pending=True, metadata={},
                       result={"subscription_id": claim.subscription_id, "status": "queued",
                               "queue_position": work.details["queued"]})
    resource_id = work.details["resource_id"]
    with ctx.database.session() as session:
        claims.activate(session, claim, resource_id)
    ctx.progress(f"Subscription {claim.subscription_id} is active", 100)
    result = {"subscription_id": claim.subscription_id, "status": "active",
              "resource_type": claim.resource_type, "resource_id": resource_id,
              "already_active": False, **work.details}
    metadata = {key: _metadata_value(value) for key, value in work.details.items()
                if key in ("graph_id", "repository", "tier", "plan", "access_level",
                           "credits_added", "database_path", "host_id")}
    metadata.update(subscription_id=claim.subscription_id, user_id=claim.user_id,
                    attempt=claim.attempt)
    return Outcome(asset_key=asset_key, result=result, metadata=metadata,
                   started_at=work.started_at)


def subscription_tags(config: SubscriptionConfig) -> dict[str, str]:
    return {SUBSCRIPTION_TAG: config.subscription_id}


def subscription_owner(database: Database, config: SubscriptionConfig) -> str | None:
    with database.session() as session:
        return billing.owner_of(session, config.subscription_id)


def subscription_result(database: Database, config: SubscriptionConfig) -> dict[str, Any]:
    """Where a run left the subscription: its status, resource, attempts and error."""
    with database.session() as session:
        subscription = billing.get_subscription(session, config.subscription_id)
        found = billing.summary(subscription)
    return {key: found[key] for key in ("subscription_id", "status", "resource_type",
                                        "resource_id", "attempts", "error")}


def _metadata_value(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value
