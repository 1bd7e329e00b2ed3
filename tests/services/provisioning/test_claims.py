"""The claim, on its own: one winner, fencing after a takeover, backoff, giving up, and the
sensors' queries agreeing with the claim about who may start an attempt."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text, update

from provisioning_pipelines.errors import Conflict, PaymentRequired
from provisioning_pipelines.services.provisioning import claims, due
from provisioning_pipelines.services.provisioning.claims import Claim, ClaimHeld, ClaimLost
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import Subscription, utcnow
from tests.factories import new_customer, paid_graph_subscription

LEASE = 120.0
MAX_ATTEMPTS = 3


def claim(database: Database, sub_id: str, *, now: datetime | None = None,
          max_attempts: int = MAX_ATTEMPTS) -> Claim:
    with database.session() as session:
        return claims.claim(session, sub_id, lease_seconds=LEASE, max_attempts=max_attempts,
                            now=now)


def release(database: Database, held: Claim, *, retryable: bool = True,
            backoff: float = 30.0) -> str:
    with database.session() as session:
        return claims.release_after_failure(session, held, "disk full", retryable=retryable,
                                            max_attempts=MAX_ATTEMPTS, backoff_seconds=backoff)


def row(database: Database, sub_id: str) -> Subscription:
    with database.session() as session:
        found = session.get(Subscription, sub_id)
        assert found is not None
        return found


def force(database: Database, sub_id: str, **values: Any) -> None:
    with database.session() as session:
        session.execute(update(Subscription).where(Subscription.id == sub_id).values(**values))


def test_of_many_concurrent_claims_exactly_one_wins(database: Database) -> None:
    sub_id = paid_graph_subscription(database, new_customer(database))
    won: list[Claim] = []
    held: list[ClaimHeld] = []
    start = threading.Barrier(8)

    def contend() -> None:
        start.wait()
        try:
            won.append(claim(database, sub_id))
        except ClaimHeld as exc:
            held.append(exc)

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(won) == 1 and len(held) == 7
    assert row(database, sub_id).claim_token == won[0].token
    assert row(database, sub_id).attempts == 1


def test_a_lapsed_lease_is_taken_over_and_fences_out_the_old_holder(database: Database) -> None:
    sub_id = paid_graph_subscription(database, new_customer(database))
    first = claim(database, sub_id)
    later = utcnow() + timedelta(seconds=LEASE + 1)

    second = claim(database, sub_id, now=later)

    assert second.token != first.token and second.attempt == 2
    with pytest.raises(ClaimLost), database.session() as session:
        claims.record_resource(session, first, "kg-from-the-dead-worker")
    with pytest.raises(ClaimLost):
        release(database, first)  # the old holder cannot undo the new holder's work
    assert row(database, sub_id).claim_token == second.token
    assert row(database, sub_id).resource_id is None


def test_a_failed_attempt_waits_out_its_backoff_then_may_be_claimed(database: Database) -> None:
    sub_id = paid_graph_subscription(database, new_customer(database))
    first = claim(database, sub_id)

    assert release(database, first, backoff=30) == "provisioning"

    waiting = row(database, sub_id)
    assert waiting.claim_token is None and waiting.last_error == "disk full"
    assert waiting.retry_after is not None
    with pytest.raises(ClaimHeld) as held:
        claim(database, sub_id)
    assert held.value.backoff
    second = claim(database, sub_id, now=waiting.retry_after + timedelta(seconds=1))
    assert second.attempt == 2
    assert release(database, second, backoff=30) == "provisioning"
    # The backoff doubles: 30 s after the first failure, 60 s after the second.
    third_wait = row(database, sub_id).retry_after
    assert third_wait is not None
    assert abs((third_wait - utcnow()).total_seconds() - 60) < 5


def test_the_last_attempt_or_a_final_error_fails_the_subscription(database: Database) -> None:
    user = new_customer(database)
    final = paid_graph_subscription(database, user)
    assert release(database, claim(database, final), retryable=False) == "failed"

    exhausted = paid_graph_subscription(database, user)
    force(database, exhausted, attempts=MAX_ATTEMPTS - 1)
    assert release(database, claim(database, exhausted)) == "failed"
    with pytest.raises(Conflict, match="is failed: disk full"):
        claim(database, exhausted)


def test_claim_says_why_it_cannot_start(database: Database) -> None:
    user = new_customer(database)
    unpaid = paid_graph_subscription(database, user, paid=False)
    with pytest.raises(PaymentRequired):
        claim(database, unpaid)

    active = paid_graph_subscription(database, user)
    with database.session() as session:
        held = claims.claim(session, active, lease_seconds=LEASE, max_attempts=MAX_ATTEMPTS)
        claims.activate(session, held, "kg0123456789abcdef")
    again = claim(database, active)
    assert again.already_active and again.resource_id == "kg0123456789abcdef"


def test_only_the_claims_own_commit_skips_waiting_for_the_disk(database: Database) -> None:
    """The claim's transaction commits lazily on PostgreSQL (``synchronous_commit`` off for
    it alone); the next transaction on the same connection, the rows of the graph, waits for
    the disk again. If the setting leaked, every commit of the process would be lazy."""
    if database.engine.dialect.name != "postgresql":
        pytest.skip("a PostgreSQL setting")
    sub_id = paid_graph_subscription(database, new_customer(database))
    with database.session() as session:
        before = session.scalar(text("SHOW synchronous_commit"))
        claims.claim(session, sub_id, lease_seconds=LEASE, max_attempts=MAX_ATTEMPTS)
        assert session.scalar(text("SHOW synchronous_commit")) == "off"
        session.commit()
        assert session.scalar(text("SHOW synchronous_commit")) == before == "on"
    assert row(database, sub_id).claim_token is not None


def test_only_a_failed_subscription_can_be_put_back(database: Database) -> None:
    sub_id = paid_graph_subscription(database, new_customer(database))
    with database.session() as session:
        assert not claims.reset_failed(session, sub_id)
    release(database, claim(database, sub_id), retryable=False)
    with database.session() as session:
        assert claims.reset_failed(session, sub_id)
    back = row(database, sub_id)
    assert (back.status, back.attempts, back.retry_after) == ("provisioning", 0, None)


def test_exhausted_subscriptions_fail_unless_someone_holds_them(database: Database) -> None:
    user = new_customer(database)
    lapsed = paid_graph_subscription(database, user)
    live = paid_graph_subscription(database, user)
    now = utcnow()
    force(database, lapsed, attempts=MAX_ATTEMPTS, claim_token="gone",
          lease_expires_at=now - timedelta(seconds=1))
    force(database, live, attempts=MAX_ATTEMPTS, claim_token="working",
          lease_expires_at=now + timedelta(seconds=60))

    with database.session() as session:
        failed = due.fail_exhausted(session, "graph", now=now, max_attempts=MAX_ATTEMPTS)

    assert failed == [lapsed]
    assert row(database, lapsed).status == "failed"
    assert row(database, live).status == "provisioning"


# --- the sensors ask the claim's own question --------------------------------------------------

STATES = st.fixed_dictionaries({
    "status": st.sampled_from(["pending_payment", "provisioning", "active", "failed"]),
    "claimed": st.booleans(),
    "lease_offset": st.integers(-300, 300),
    "retry_offset": st.one_of(st.none(), st.integers(-300, 300)),
    "attempts": st.integers(0, MAX_ATTEMPTS + 1),
    "quiet_for": st.integers(0, 120),
})


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(state=STATES, direct_enabled=st.booleans())
def test_a_sensor_launches_exactly_what_the_claim_would_accept(
    database: Database, state: dict[str, Any], direct_enabled: bool,
) -> None:
    sub_id = paid_graph_subscription(database, new_customer(database))
    now = utcnow()
    force(database, sub_id, status=state["status"], attempts=state["attempts"],
          claim_token="holder" if state["claimed"] else None,
          lease_expires_at=now + timedelta(seconds=state["lease_offset"]),
          retry_after=None if state["retry_offset"] is None
          else now + timedelta(seconds=state["retry_offset"]),
          updated_at=now - timedelta(seconds=state["quiet_for"]))

    with database.session() as session:
        found = due.due_for_launch(session, "graph", now=now, grace_seconds=30,
                                      direct_enabled=direct_enabled, max_attempts=MAX_ATTEMPTS)
    launched = sub_id in {item.subscription_id for item in found}
    try:
        accepted = not claim(database, sub_id, now=now).already_active
    except (ClaimHeld, Conflict, PaymentRequired):
        accepted = False

    if launched:
        assert accepted, "a sensor launched a run the claim refused"
    elif not direct_enabled:
        assert not accepted, "the claim was open but no run was launched"
    else:  # the direct path's grace period: a fresh, unclaimed payment is left to it
        assert not accepted or (not state["claimed"] and state["quiet_for"] < 30)
