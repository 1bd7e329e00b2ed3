"""The OpenAPI document against the server it describes.

The document is valid OpenAPI 3.1, names every route the app serves (and none it does not),
and schemathesis sends every operation generated requests (valid and invalid ones, on made-up
ids and on a real user's real graph, backup, subscription and operation) over HTTP to a uvicorn
server on PostgreSQL and Redis: every answer must be in the document (status, media type,
schema, headers) and none a 5xx.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from dagster import DagsterInstance
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate
from pydantic import BaseModel
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from provisioning_pipelines.api import openapi, spec
from provisioning_pipelines.api.app import create_app
from provisioning_pipelines.api.bodies import BodyReader
from provisioning_pipelines.services.billing.events import signed_delivery
from provisioning_pipelines.settings import load_settings
from provisioning_pipelines.storage.db import Database
from tests.api.helpers import SECRET, Api, make_api, serve
from tests.api.test_app import checkout_event, subscribe_graph
from tests.api.test_page import browser  # noqa: F401 - the fixture
from tests.conftest import REDIS_URL, make_resources
from tests.factories import new_customer

#: The HTML for people, not in the document: the operations page and the reference itself.
PAGES = {"/", "/ui", "/ui/", "/ui/static", "/docs", "/docs/swagger-ui"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]
#: Examples per operation and mode: about a minute and a half for the whole run on 2 cores.
EXAMPLES = 40


def test_the_document_is_valid_openapi_3_1(tmp_path: Path) -> None:
    document = _document(_app(tmp_path))
    validate(document)
    assert document["openapi"] == "3.1.0"
    error = document["components"]["schemas"]["ErrorAnswer"]
    assert set(error["properties"]) == {"error", "message", "field"}
    webhook = document["paths"]["/v1/webhooks/billing"]["post"]
    assert [p["name"] for p in webhook["parameters"]] == ["Stripe-Signature"]
    assert webhook["security"] == []
    events = document["paths"]["/v1/operations/{operation_id}/events"]["get"]
    assert "text/event-stream" in events["responses"]["200"]["content"]
    assert "text/plain" in document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    created = document["paths"]["/v1/subscriptions"]["post"]["responses"]
    assert "Idempotent-Replayed" in created["201"]["headers"]  # a replay says so
    assert "Idempotent-Replayed" not in created["422"].get("headers", {})  # never kept


def test_every_route_is_in_the_document_and_nothing_else(tmp_path: Path) -> None:
    app = _app(tmp_path)
    served = set()
    for route in app.routes:
        if route.path in PAGES:
            continue
        assert isinstance(route, Route) and not isinstance(route, Mount), route.path
        served.update((route.path, method.lower()) for method in route.methods or ()
                      if method != "HEAD")
    documented = {(path, method) for path, operations in _document(app)["paths"].items()
                  for method in operations}
    assert served == documented


def test_the_reference_is_served_from_this_server(postgres_api: Api) -> None:
    with postgres_api.client() as client:
        page = client.get("/docs")
        script = client.get("/docs/swagger-ui/swagger-ui-bundle.js")
        style = client.get("/docs/swagger-ui/swagger-ui.css")
        own = client.get("/ui/static/docs.js")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "//" not in page.text.replace("<!doctype", "")  # nothing from another host
    assert script.status_code == 200 and "SwaggerUIBundle" in script.text
    assert style.status_code == 200 and own.status_code == 200
    assert "/openapi.json" in own.text


class World:
    """A customer with a real graph, backup, subscription and operation, for the happy paths."""

    def __init__(self, api: Api) -> None:
        self.api = api
        user = new_customer(api.database)
        self.api_key = user.api_key
        self.subscription_id = subscribe_graph(api, user.api_key)
        api.deliver(checkout_event(self.subscription_id))
        self.graph_id = api.wait_status(user.api_key, self.subscription_id,
                                        "active")["resource_id"]
        with api.client(user.api_key) as client:
            started = client.post(f"/v1/graphs/{self.graph_id}/backups").json()
        self.backup_id = started["backup_id"]
        self.operation_id = started["operation_id"]
        api.events(user.api_key, self.operation_id)  # to its end
        with api.client(user.api_key) as client:
            made = client.post(f"/v1/graphs/{self.graph_id}/subgraphs", json={"name": "kept"})
            api.events(user.api_key, made.json()["operation_id"])
            # The subscription the generated requests may cancel: repository access, paid.
            access = client.post("/v1/subscriptions", json={
                "resource_type": "repository", "plan_name": "sec-starter"}).json()
        self.subscription_id = access["subscription_id"]
        self.colleague = f"colleague-{uuid.uuid4().hex[:8]}@example.com"
        new_customer(api.database, email=self.colleague)
        api.deliver(checkout_event(self.subscription_id))
        api.wait_status(user.api_key, self.subscription_id, "active")

    def happy(self, method: str, path: str) -> list[dict[str, Any]]:
        """Requests that should succeed, sent as they are (as a client would)."""
        origin = {"Origin": self.api.url}
        unpaid = {"resource_type": "graph", "plan_name": "ladybug-standard",
                  "graph": {"name": "Another", "tags": ["a"], "schema_extensions": ["crm"],
                            "entity": {"name": "Acme", "country": "DE"}}}
        cases: dict[tuple[str, str], list[dict[str, Any]]] = {
            ("POST", "/v1/subscriptions"): [
                {"json": unpaid},
                {"json": {"resource_type": "repository", "plan_name": "sec-advanced"}}],
            ("POST", "/v1/session"): [{"json": {"api_key": self.api_key}, "headers": origin}],
            ("DELETE", "/v1/session"): [{}],
            ("POST", "/v1/graphs/{graph_id}/subgraphs"): [
                {"json": {"name": "another", "fork_parent": True}}],
            ("DELETE", "/v1/graphs/{graph_id}/subgraphs/{name}"): [
                {"path": {"name": "kept"}}],
            ("POST", "/v1/graphs/{graph_id}/backups/{backup_id}/restore"): [
                {}],
            ("POST", "/v1/graphs/{graph_id}/members"): [
                {"json": {"email": self.colleague, "role": "reader"},
                 "headers": {"Idempotency-Key": "add-the-colleague"}}],
            ("DELETE", "/v1/graphs/{graph_id}/members/{user}"): [{}],
            ("POST", "/v1/graphs/{graph_id}/query"): [
                {"json": {"query": "MATCH (n) RETURN n, count(*) AS c LIMIT $n",
                          "parameters": {"n": 5}}}],
        }
        if (method, path) == ("POST", "/v1/webhooks/billing"):
            with self.api.client(self.api_key) as client:
                pending = client.post("/v1/subscriptions", json=unpaid).json()
            payload, headers = signed_delivery(checkout_event(pending["subscription_id"]),
                                               SECRET)
            return [{"content": payload, "headers": headers}]
        return cases.get((method, path), [])

    def real(self, parameters: dict[str, Any]) -> dict[str, Any]:
        ids = {"graph_id": self.graph_id, "backup_id": self.backup_id,
               "subscription_id": self.subscription_id, "operation_id": self.operation_id,
               "user": self.colleague}
        return {name: ids.get(name, value) for name, value in parameters.items()}


@pytest.fixture
def redis_api(postgres_database: Database, graph_dir: Path, dagster_instance: DagsterInstance,
              redis_prefix: str) -> Iterator[Api]:
    """The app under uvicorn on PostgreSQL, its operation events in Redis."""
    redis = {"REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": redis_prefix}
    resources = make_resources(postgres_database.url, graph_dir, **redis)
    app, executor = make_api(postgres_database, resources, dagster_instance, **redis)
    with serve(app) as url:
        yield Api(url, postgres_database, executor)
    executor.close()


def test_every_operation_answers_as_documented_and_never_5xx(redis_api: Api) -> None:
    world = World(redis_api)
    document = httpx.get(f"{redis_api.url}/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    # Reads first, then what creates, then what deletes: the real ids live long enough.
    order = {"GET": 0, "POST": 1, "DELETE": 2}
    last = ("DELETE", "/v1/graphs/{graph_id}")
    operations.sort(key=lambda operation: (
        (operation.method.upper(), operation.path) == last, order[operation.method.upper()],
        operation.path))
    headers = {"Authorization": f"Bearer {world.api_key}"}
    failures: list[str] = []
    seen: dict[str, set[int]] = {}
    started = time.monotonic()
    for operation in operations:
        for request in world.happy(operation.method.upper(), operation.path):
            failure = _send(operation, request, world, redis_api.url, headers, seen)
            if failure:
                failures.append(f"{operation.method.upper()} {operation.path} (as a client "
                                f"would): {failure}")
        for mode, real_ids in ((GenerationMode.POSITIVE, False), (GenerationMode.POSITIVE, True),
                               (GenerationMode.NEGATIVE, True)):
            if real_ids and not operation.path_parameters and (
                    mode is GenerationMode.POSITIVE or not _has_input(operation)):
                continue  # the first round covered it, or nothing to make invalid
            failure = _run(operation, mode, real_ids, world, redis_api.url, headers, seen)
            if failure:
                failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}, "
                                f"{'real ids' if real_ids else 'generated ids'}): {failure}")
    elapsed = time.monotonic() - started
    assert not failures, "\n\n".join(failures)
    # The happy paths were reached, not only refusals: every operation answered a 2xx.
    assert {label for label, statuses in seen.items()
            if not any(200 <= status < 300 for status in statuses)} == set()
    assert elapsed < 300, f"the run took {elapsed:.0f} s"


def _send(operation: Any, request: dict[str, Any], world: World, url: str,
          headers: dict[str, str], seen: dict[str, set[int]]) -> str | None:
    """One request sent with httpx, its answer checked by schemathesis as any other."""
    names = [parameter.name for parameter in operation.path_parameters]
    path = world.real({**dict.fromkeys(names, ""), **request.get("path", {})})
    target = operation.path.format(**path)
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        response = client.request(operation.method.upper(), target,
                                  json=request.get("json"), content=request.get("content"),
                                  headers=request.get("headers"))
    seen.setdefault(f"{operation.method.upper()} {operation.path}", set()).add(
        response.status_code)
    try:
        operation.Case(path_parameters=path).validate_response(response, checks=CHECKS)
    except (Exception, BaseExceptionGroup) as exc:
        return f"{response.status_code} {response.text[:500]}: {type(exc).__name__}: {exc}"
    return None


def _described(exc: BaseException) -> str:
    """An error with what it groups (hypothesis' and schemathesis' groups say little)."""
    said = f"{type(exc).__name__}: {exc}"
    for inner in getattr(exc, "exceptions", ()):
        said += "\n  " + _described(inner).replace("\n", "\n  ")
    return said


def _has_input(operation: Any) -> bool:
    definition = operation.definition.raw
    return bool(definition.get("parameters") or definition.get("requestBody"))


def _run(operation: Any, mode: GenerationMode, real_ids: bool, world: World, url: str,
         headers: dict[str, str], seen: dict[str, set[int]]) -> str | None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    def call(case: Any) -> None:
        if real_ids:
            case.path_parameters = world.real(case.path_parameters or {})
        response = case.call(base_url=url, headers=headers, timeout=30)
        seen.setdefault(f"{operation.method.upper()} {operation.path}", set()).add(
            response.status_code)
        case.validate_response(response, checks=CHECKS)

    try:
        call()
    except (Exception, BaseExceptionGroup) as exc:  # each operation's failures, together
        return _described(exc)[:4000]
    return None


def _app(tmp_path: Path) -> Any:
    """The app on the embedded default in a folder of its own (its lifespan never runs)."""
    return create_app(load_settings(DATA_DIR=str(tmp_path), GRAPH_DATA_DIR=str(tmp_path / "g"),
                                    BILLING_WEBHOOK_SECRET="whsec_x"))


def _document(app: Any) -> dict[str, Any]:
    """The document as the app serves it, built from the app's declarations."""
    return openapi.document(app.state.endpoints)


def test_the_reference_renders_every_operation_in_a_browser(
    postgres_api: Api, browser: Any,  # noqa: F811
) -> None:
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text)
            if message.type == "error" else None)
    page.goto(f"{postgres_api.url}/docs")
    page.wait_for_selector(".opblock", timeout=30_000)
    shown = page.locator(".opblock-summary-path").all_inner_texts()
    document = httpx.get(f"{postgres_api.url}/openapi.json").json()
    assert len(shown) == sum(len(operations) for operations in document["paths"].values())
    assert "/v1/webhooks/billing" in " ".join(shown)
    assert errors == []
    page.close()


class _Declared(BaseModel):
    name: str


class _Other(BaseModel):
    name: str


def test_a_handler_that_reads_another_body_than_it_declares_is_refused() -> None:
    """The document shows the declared body; a handler reading another would make it lie."""
    reader = BodyReader(timeout_seconds=5, max_concurrent=4)

    async def honest(request: Request) -> Response:
        return JSONResponse((await reader.read_model(request, _Declared)).model_dump())

    async def drifted(request: Request) -> Response:
        return JSONResponse((await reader.read_model(request, _Other)).model_dump())

    app = Starlette(routes=spec.routes([
        spec.Endpoint("POST", "/honest", honest, "", {200: _Declared}, body=_Declared),
        spec.Endpoint("POST", "/drifted", drifted, "", {200: _Declared}, body=_Declared)]))
    with serve(app) as url:
        kept = httpx.post(f"{url}/honest", json={"name": "a"})
        refused = httpx.post(f"{url}/drifted", json={"name": "a"})
    assert kept.status_code == 200 and kept.json() == {"name": "a"}
    assert refused.status_code == 500 and refused.json()["error"] == "internal_error"
