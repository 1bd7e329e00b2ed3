"""Cross-site request forgery from the same site, in a real browser.

``SameSite=Strict`` is per *site*, and a site is a registrable domain or an IP address: a page on
another port of the same host (or a sibling subdomain) is the same site, so the browser sends the
session cookie with its requests. Such a page tries to make a subgraph on the victim's graph,
once with ``fetch`` (``text/plain``, no preflight) and once with a plain form; both must be
refused, and the same request from the app's own page must work.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest
from dagster import DagsterInstance
from hypothesis import example, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from provisioning_pipelines.api.same_origin import check_browser_write
from provisioning_pipelines.errors import Forbidden, SettingsError
from provisioning_pipelines.services.billing.events import billing_event
from provisioning_pipelines.settings import load_settings, normalized_origin
from provisioning_pipelines.storage.db import Database
from tests.api.helpers import Api, make_api, serve
from tests.api.test_page import browser, expect  # noqa: F401  (browser is a fixture)
from tests.factories import graph_request, new_customer, paid_graph_subscription
from tests.serving import http_server

FETCH_PAGE = """<!doctype html><title>prize</title><script>
fetch("{target}", {{method: "POST", mode: "no-cors", credentials: "include",
  headers: {{"Content-Type": "text/plain"}}, body: '{{"name": "byfetch"}}'}});
</script>"""
# A text/plain form sends "name=value": the name closes a JSON object the value completes.
FORM_PAGE = """<!doctype html><title>prize</title>
<form method="POST" enctype="text/plain" action="{target}">
<input type="hidden" name='{{"name": "byform", "x": "' value='"}}'></form>
<script>document.forms[0].submit()</script>"""


@contextmanager
def attacker_site(pages: dict[str, str]) -> Iterator[str]:
    """Another HTTP server on another port of 127.0.0.1, serving the given pages."""

    class Pages(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, "").encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with http_server(Pages) as url:
        yield url


def test_a_page_on_another_port_cannot_make_a_subgraph_with_the_victims_cookie(
    postgres_api: Api, browser: Any,  # noqa: F811
) -> None:
    api = postgres_api
    victim = new_customer(api.database, email=f"victim-{uuid.uuid4().hex[:8]}@example.com")
    sub_id = paid_graph_subscription(api.database, victim, paid=False,
                                     plan_name="ladybug-large")
    assert api.deliver(billing_event(sub_id, event_id=f"evt_{sub_id}")).status_code == 200
    graph_id = api.wait_status(victim.api_key, sub_id, "active")["resource_id"]
    target = f"{api.url}/v1/graphs/{graph_id}/subgraphs"

    context = browser.new_context()
    app = context.new_page()
    app.goto(f"{api.url}/")
    app.fill("#api-key", victim.api_key)
    app.click("#sign-in form button[type=submit]")
    app.wait_for_selector("#signed-in:not([hidden])")

    statuses: list[int] = []
    with attacker_site({"/fetch": FETCH_PAGE.format(target=target),
                        "/form": FORM_PAGE.format(target=target)}) as evil:
        assert evil.split(":")[-1] != api.url.split(":")[-1]
        page = context.new_page()
        for path in ("/fetch", "/form"):
            with page.expect_response(lambda r: r.url == target
                                      and r.request.method == "POST") as answer:
                page.goto(f"{evil}{path}")
            statuses.append(answer.value.status)
        sent = answer.value.request.all_headers()
        shown = page.inner_text("body")

    # The browser sends the victim's cookie along (403, not 401: the cookie was there), so only
    # the server's check of where the request comes from stands in the way.
    assert statuses == [403, 403]
    assert "pp_session=" in sent["cookie"] and sent["origin"] == evil
    assert "Origin" in shown and evil in shown

    # The same request from the app's own page works.
    app.fill("#subgraph-name", "mine")
    with app.expect_response(lambda r: r.url == target and r.request.method == "POST") as made:
        app.click("#subgraph-form button[type=submit]")
    assert made.value.status == 202
    # The watch panel may still show an earlier operation: wait for this one's end.
    expect(app.locator("#watch-id")).to_have_text(made.value.json()["operation_id"],
                                                  timeout=30_000)
    expect(app.locator("#watch-status")).to_have_text("completed", timeout=30_000)
    context.close()
    with api.client(victim.api_key) as client:
        [graph] = client.get("/v1/graphs").json()["graphs"]
    assert [subgraph["name"] for subgraph in graph["subgraphs"]] == ["mine"]


def test_a_cookie_write_must_come_from_an_allowed_origin_with_a_json_body(
    database: Database, resources: dict[str, Any], dagster_instance: DagsterInstance,
) -> None:
    """Every refusal names the header; reads, and scripts with their key, are not checked."""
    console = "https://console.example.com"
    app, executor = make_api(database, resources, dagster_instance,
                             CORS_ALLOW_ORIGINS=f"{console}, HTTPS://Other.Example.com:443/")
    user = new_customer(database)
    body = json.dumps({"resource_type": "graph", "plan_name": "ladybug-standard",
                       "graph": graph_request()})
    as_json = {"Content-Type": "application/json"}
    with serve(app) as url, httpx.Client(base_url=url) as client:
        evil = url.rsplit(":", 1)[0] + ":1"  # the same host, another port
        assert client.post("/v1/session", json={"api_key": user.api_key},
                           headers={"Origin": evil}).status_code == 403
        assert "pp_session" not in client.cookies  # no page elsewhere signs a browser in
        signed = client.post("/v1/session", json={"api_key": user.api_key},
                             headers={"Origin": url})
        assert signed.status_code == 200

        def create(**headers: str) -> httpx.Response:
            return client.post("/v1/subscriptions", content=body, headers=headers)

        refused = {
            "another port": create(Origin=evil, **as_json),
            "opaque origin": create(Origin="null", **as_json),
            "another scheme": create(Origin=url.replace("http:", "https:"), **as_json),
            "same site": create(**{"Sec-Fetch-Site": "same-site"}, **as_json),
            "nothing said": create(**as_json),
            "text/plain": create(Origin=url, **{"Content-Type": "text/plain"}),
            "no type": create(Origin=url),
        }
        accepted = {
            "own origin": create(Origin=url, **{"Content-Type": "application/json; charset=utf-8"}),
            "same-origin fetch": create(**{"Sec-Fetch-Site": "same-origin"}, **as_json),
            "named origin": create(Origin=console, **as_json),
            "named, normalized": create(Origin="https://other.example.com", **as_json),
            "a script's key": client.post("/v1/subscriptions", content=body, headers={
                "Authorization": f"Bearer {user.api_key}", "Origin": evil,
                "Content-Type": "text/plain"}),
        }
        read = client.get("/v1/subscriptions", headers={"Origin": evil})
        not_signed_in = httpx.post(f"{url}/v1/subscriptions", content=body,
                                   headers={"Origin": evil, **as_json})
        signed_out_elsewhere = client.delete("/v1/session", headers={"Origin": evil})
    executor.close()

    assert {why: (a.status_code, a.json()["field"]) for why, a in refused.items()} == {
        "another port": (403, "Origin"), "opaque origin": (403, "Origin"),
        "another scheme": (403, "Origin"), "same site": (403, "Sec-Fetch-Site"),
        "nothing said": (403, "Origin"), "text/plain": (415, "Content-Type"),
        "no type": (415, "Content-Type")}
    assert evil in refused["another port"].json()["message"]
    assert "CORS_ALLOW_ORIGINS" in refused["another port"].json()["message"]
    assert {why: a.status_code for why, a in accepted.items()} == dict.fromkeys(accepted, 201)
    assert read.status_code == 200 and len(read.json()["subscriptions"]) == len(accepted)
    assert not_signed_in.status_code == 401  # no cookie, nothing to forge: the usual answer
    assert signed_out_elsewhere.status_code == 403


def test_a_wildcard_or_a_path_in_cors_allow_origins_stops_start_up() -> None:
    for value in ("*", "https://*.example.com", "https://console.example.com/app", "console"):
        with pytest.raises(SettingsError, match="CORS_ALLOW_ORIGINS"):
            load_settings(CORS_ALLOW_ORIGINS=value)
    assert load_settings(CORS_ALLOW_ORIGINS="https://A.example.com:443, http://b:8080/"
                         ).cors_origins == ["https://a.example.com", "http://b:8080"]


def cookie_write(headers: dict[str, str], *, host: str = "127.0.0.1:8000") -> Request:
    """A POST as the ASGI server hands it over (headers are latin-1 bytes there)."""
    raw = [(b"host", host.encode())] + [(name.lower().encode("latin-1"), value.encode("latin-1"))
                                        for name, value in headers.items()]
    return Request({"type": "http", "method": "POST", "scheme": "http", "path": "/v1/x",
                    "headers": raw, "query_string": b"", "server": ("127.0.0.1", 8000)})


@settings(max_examples=300, derandomize=True, deadline=None)
@example(origin="HTTP://127.0.0.1:8000/", site="cross-site")  # ours, however it is written
@example(origin="http://127.0.0.1:8001", site="same-origin")  # another port: never ours
@given(origin=st.text(st.characters(max_codepoint=255), max_size=60)
       | st.builds("{}://{}:{}".format, st.sampled_from(["http", "https", "HTTP", "ftp"]),
                   st.sampled_from(["127.0.0.1", "LOCALHOST", "[::1]", "a.example.com"]),
                   st.integers(0, 70000))
       | st.sampled_from(["http://127.0.0.1:8000", "HTTP://127.0.0.1:8000/", "null",
                          "http://127.0.0.1:8000/app", "http://user@127.0.0.1:8000"]),
       site=st.none() | st.sampled_from(["same-origin", "same-site", "cross-site", "none", ""]))
def test_any_origin_but_our_own_is_refused_with_a_403_naming_it(origin: str,
                                                                 site: str | None) -> None:
    headers = {"Origin": origin, "Content-Type": "application/json"}
    if site is not None:
        headers["Sec-Fetch-Site"] = site
    ours = {"http://127.0.0.1:8000", "https://console.example.com"}
    try:
        check_browser_write(cookie_write(headers), ["https://console.example.com"])
    except Forbidden as refusal:
        assert refusal.field == "Origin"
        assert normalized_origin(origin) not in ours
    else:  # Sec-Fetch-Site never overrules an Origin that is there
        assert normalized_origin(origin) in ours



def test_an_opaque_origin_is_refused_even_without_a_host_header() -> None:
    request = cookie_write({"Origin": "null", "Content-Type": "application/json"}, host="")
    request.scope["headers"] = [h for h in request.scope["headers"] if h[0] != b"host"]
    with pytest.raises(Forbidden, match="Origin"):
        check_browser_write(request, [])
