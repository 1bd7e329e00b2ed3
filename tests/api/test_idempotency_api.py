"""``Idempotency-Key`` over real HTTP on PostgreSQL: a replay makes nothing twice (rows,
operations and backups counted), concurrent requests under one key make one thing, another body
under the key is refused, and answers that decided nothing are not kept."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
from sqlalchemy import func, select

from provisioning_pipelines.api.idempotency import fingerprint_of
from provisioning_pipelines.services import idempotency
from provisioning_pipelines.services.upkeep import housekeeping
from provisioning_pipelines.storage.models import (
    Graph,
    GraphBackup,
    IdempotencyKey,
    Subscription,
    utcnow,
)
from tests.api.helpers import Api
from tests.api.test_lifecycle_api import active_graph, finished
from tests.api.test_members_api import person
from tests.factories import graph_request, new_customer

BODY = {"resource_type": "graph", "plan_name": "ladybug-large", "graph": graph_request()}


def subscriptions_of(api: Api, user_id: str) -> int:
    with api.database.session() as session:
        return session.scalar(select(func.count()).select_from(Subscription).where(
            Subscription.user_id == user_id)) or 0


def test_a_replay_gets_the_first_answer_and_makes_nothing_twice(postgres_api: Api) -> None:
    api = postgres_api
    user, other = new_customer(api.database), new_customer(api.database)
    with api.client(user.api_key) as client:
        first = client.post("/v1/subscriptions", json=BODY, headers={"Idempotency-Key": "k-1"})
        assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
        # The same request, its JSON spelled differently: the first answer, nothing new.
        spelled = json.dumps(dict(reversed(list(BODY.items()))), indent=2)
        again = client.post("/v1/subscriptions", content=spelled,
                            headers={"Idempotency-Key": "k-1",
                                     "Content-Type": "application/json"})
        assert (again.status_code, again.json()) == (201, first.json())
        assert again.headers["Idempotent-Replayed"] == "true"
        assert subscriptions_of(api, user.user_id) == 1

        other_body = client.post("/v1/subscriptions", json={**BODY, "plan_name": "ladybug-xlarge"},
                                 headers={"Idempotency-Key": "k-1"})
        assert other_body.status_code == 409
        assert other_body.json()["error"] == "idempotency_key_reused"
        elsewhere = client.post("/v1/graphs/kg0123456789abcdef/backups",
                                headers={"Idempotency-Key": "k-1"})
        assert elsewhere.json()["error"] == "idempotency_key_reused"

        # A body that was not valid decided nothing: the key is free for the corrected one.
        invalid = client.post("/v1/subscriptions", json={**BODY, "plan_name": "nope"},
                              headers={"Idempotency-Key": "k-2"})
        assert invalid.status_code == 422
        fixed = client.post("/v1/subscriptions", json=BODY, headers={"Idempotency-Key": "k-2"})
        assert fixed.status_code == 201 and fixed.json() != first.json()
        assert subscriptions_of(api, user.user_id) == 2

        for bad in ("", "x" * 256, "tab\there", "é"):
            refused = client.post("/v1/subscriptions", json=BODY,
                                  headers={"Idempotency-Key": bad.encode()})
            assert refused.status_code == 422, bad
            assert refused.json()["field"] == "Idempotency-Key"
        assert subscriptions_of(api, user.user_id) == 2

    with api.client(other.api_key) as client:  # keys are each user's own
        theirs = client.post("/v1/subscriptions", json=BODY, headers={"Idempotency-Key": "k-1"})
        assert theirs.status_code == 201 and theirs.json() != first.json()


def test_concurrent_requests_under_one_key_make_one_subscription(postgres_api: Api) -> None:
    api = postgres_api
    user = new_customer(api.database)
    start = threading.Barrier(8)

    def post(_: int) -> httpx.Response:
        with api.client(user.api_key) as client:
            start.wait()
            return client.post("/v1/subscriptions", json=BODY,
                               headers={"Idempotency-Key": "together"})

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, range(8)))
    made = [a for a in answers if a.status_code == 201]
    busy = [a for a in answers if a.status_code == 409]
    assert len(made) + len(busy) == 8 and made
    assert len({a.text for a in made}) == 1  # the first answer, replayed to the later ones
    assert all(a.json()["error"] == "idempotency_key_in_use" and
               int(a.headers["Retry-After"]) >= 1 for a in busy)
    assert subscriptions_of(api, user.user_id) == 1


def test_a_key_in_use_is_told_with_retry_after_and_an_expired_one_is_new(postgres_api: Api
                                                                        ) -> None:
    api = postgres_api
    user = new_customer(api.database)
    raw = json.dumps(BODY).encode()
    held = idempotency.begin(api.database, user_id=user.user_id, key="slow",
                             fingerprint=fingerprint_of("POST", "/v1/subscriptions", raw),
                             hours=24)
    assert isinstance(held, idempotency.Held)
    with api.client(user.api_key) as client:
        busy = client.post("/v1/subscriptions", content=raw,
                           headers={"Idempotency-Key": "slow",
                                    "Content-Type": "application/json"})
        assert busy.status_code == 409 and busy.json()["error"] == "idempotency_key_in_use"
        assert 1 <= int(busy.headers["Retry-After"]) <= 5
        assert subscriptions_of(api, user.user_id) == 0
        idempotency.release(api.database, user_id=user.user_id, key="slow", token=held.token)
        assert client.post("/v1/subscriptions", content=raw,
                           headers={"Idempotency-Key": "slow",
                                    "Content-Type": "application/json"}).status_code == 201

        # A key past its hours is removed by housekeeping, and the next use of it is new.
        with api.database.session() as session:
            row = session.get(IdempotencyKey, (user.user_id, "slow"))
            assert row is not None and row.status == "done"
            row.expires_at = utcnow() - timedelta(seconds=1)
        again = client.post("/v1/subscriptions", content=raw,
                            headers={"Idempotency-Key": "slow",
                                     "Content-Type": "application/json"})
        assert again.status_code == 201 and "Idempotent-Replayed" not in again.headers
        assert subscriptions_of(api, user.user_id) == 2
        with api.database.session() as session:
            session.get(IdempotencyKey, (user.user_id, "slow")).expires_at = (  # type: ignore
                utcnow() - timedelta(seconds=1))
        with api.database.session() as session:
            assert housekeeping.remove_expired_idempotency_keys(session) >= 1
            assert session.get(IdempotencyKey, (user.user_id, "slow")) is None


def test_a_replayed_backup_is_the_same_operation_and_one_backup(postgres_api: Api) -> None:
    api = postgres_api
    owner, reader = person(api), person(api)
    graph_id = active_graph(api, owner.api_key)
    headers = {"Idempotency-Key": "backup-now"}
    with api.client(owner.api_key) as client:
        first = client.post(f"/v1/graphs/{graph_id}/backups", headers=headers)
        assert first.status_code == 202
        assert finished(api, owner.api_key, first.json()["operation_id"])[0] == \
            "operation_completed"
        again = client.post(f"/v1/graphs/{graph_id}/backups", headers=headers)
        assert (again.status_code, again.json()) == (202, first.json())
        time.sleep(0.2)  # a second backup, had one been started, would have begun by now
        kinds = [op.kind for op in api.executor.store.operations_of(owner.user_id)]
        assert kinds.count(api.executor.store.get(first.json()["operation_id"]).kind) == 1
        with api.database.session() as session:
            assert session.scalar(select(func.count()).select_from(GraphBackup).where(
                GraphBackup.graph_id == graph_id, GraphBackup.kind == "on_demand")) == 1

        # A subgraph asked for twice under a key: one operation, one subgraph.
        sub_headers = {"Idempotency-Key": "sub-1"}
        made = client.post(f"/v1/graphs/{graph_id}/subgraphs", json={"name": "team"},
                           headers=sub_headers)
        assert made.status_code == 202
        remade = client.post(f"/v1/graphs/{graph_id}/subgraphs", json={"name": "team"},
                             headers=sub_headers)
        assert (remade.status_code, remade.json()) == (202, made.json())
        assert finished(api, owner.api_key, made.json()["operation_id"])[0] == \
            "operation_completed"
        with api.database.session() as session:
            assert session.scalar(select(func.count()).select_from(Graph).where(
                Graph.parent_graph_id == graph_id)) == 1
        assert [op.kind for op in api.executor.store.operations_of(owner.user_id)].count(
            api.executor.store.get(made.json()["operation_id"]).kind) == 1

        # A member added under a key: the replay is the first answer (201), not "changed".
        body = {"email": reader.email, "role": "reader"}
        added = client.post(f"/v1/graphs/{graph_id}/members", json=body,
                            headers={"Idempotency-Key": "add-reader"})
        replayed = client.post(f"/v1/graphs/{graph_id}/members", json=body,
                               headers={"Idempotency-Key": "add-reader"})
        assert added.status_code == replayed.status_code == 201
        assert replayed.json() == added.json()
        # A refusal is a decision, kept like any other: asked again, the same 404.
        unknown = {"email": "nobody@example.com", "role": "reader"}
        first_no = client.post(f"/v1/graphs/{graph_id}/members", json=unknown,
                               headers={"Idempotency-Key": "add-nobody"})
        again_no = client.post(f"/v1/graphs/{graph_id}/members", json=unknown,
                               headers={"Idempotency-Key": "add-nobody"})
        assert first_no.status_code == again_no.status_code == 404
        assert again_no.headers["Idempotent-Replayed"] == "true"
