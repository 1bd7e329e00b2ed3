"""The operations page in a real browser: Debian's Chromium, headless, driven by Playwright.

Sign in with an API key, pay through a signed webhook, see the subscription and graph, start a
subgraph and watch its bar reach 100 % over ``EventSource``, reload and find the same state;
query a graph and a subgraph (a table, truncated, each refusal's message); add members, change
their roles, remove them; back a graph up, list and restore its backups; delete a graph and
restore it within the grace, cancel a subscription; page through every list; markup in what
the API returns is shown as text. No error in the console but the refusals the test asks for.
Each test waits on what the page shows, never on time. With ``SCREENSHOTS_DIR`` set, the docs'
screenshots are taken here.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from dagster import DagsterInstance

from provisioning_pipelines.services.billing.events import billing_event
from provisioning_pipelines.storage.db import Database
from tests.api.helpers import Api, make_api, serve
from tests.api.test_app import checkout_event, subscribe_graph
from tests.conftest import make_resources, require
from tests.factories import new_customer, paid_graph_subscription

#: A graph name, query value or member's text that would make an element if parsed as HTML.
MARKUP = '<img src=x onerror="document.title=1">'
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As the machine's notes say: no network of its own, no first-run work, no sandbox as root.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser() -> Iterator[Any]:
    require("Chromium", None if Path(CHROMIUM).exists() else "no chromium binary "
            "(apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


def expect(locator: Any) -> Any:
    """Playwright's assertions, which poll without evaluating strings in the page (its CSP
    forbids that, as it should)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def screenshot(page: Any, name: str) -> None:
    folder = os.environ.get("SCREENSHOTS_DIR")
    if folder:
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def test_sign_in_pay_watch_a_subgraph_reach_100_and_reload(
    postgres_api: Api, browser: Any,
) -> None:
    api = postgres_api
    email = f"page-{uuid.uuid4().hex[:8]}@example.com"
    user = new_customer(api.database, email=email)
    sub_id = paid_graph_subscription(api.database, user, paid=False, plan_name="ladybug-large")
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text)
            if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))

    page.goto(f"{api.url}/")
    page.wait_for_selector("#sign-in:not([hidden])")
    screenshot(page, "sign-in")
    page.fill("#api-key", user.api_key)
    page.click("#sign-in form button[type=submit]")
    page.wait_for_selector("#signed-in:not([hidden])")
    assert page.inner_text("#email") == email

    event = billing_event(sub_id, event_id=f"evt_{sub_id}")
    assert api.deliver(event).status_code == 200
    expect(page.locator("#subscriptions td.id").first).to_have_text(sub_id)
    expect(page.locator("#subscriptions .status").first).to_have_text("active")
    expect(page.locator("#graphs tbody tr")).to_have_count(1)
    expect(page.locator("#watch-percent")).to_have_text("100%")
    graph_operation = page.inner_text("#watch-id")

    page.fill("#subgraph-name", "analysis")
    page.check("#subgraph-fork")
    page.click("#subgraph-form button[type=submit]")
    expect(page.locator("#watch-id")).not_to_have_text(graph_operation)  # the subgraph's now
    expect(page.locator("#watch-status")).to_have_text("completed", timeout=30_000)
    expect(page.locator("#watch-percent")).to_have_text("100%")
    expect(page.locator("#watch-progress")).to_have_attribute("value", "100")
    expect(page.locator("#graphs tbody")).to_contain_text("analysis")
    screenshot(page, "operations-page")

    page.reload()
    page.wait_for_selector("#signed-in:not([hidden])")  # the cookie kept the session
    expect(page.locator("#operations .status")).to_have_text(["completed", "completed"])
    expect(page.locator("#watch-percent")).to_have_text("100%")
    expect(page.locator("#graphs tbody")).to_contain_text("analysis")
    assert problems == []


def active_graph(api: Api, api_key: str, **graph: Any) -> str:
    """A ladybug-large graph, paid for through the webhook and provisioned."""
    sub_id = subscribe_graph(api, api_key, **graph)
    assert api.deliver(checkout_event(sub_id)).status_code == 200
    return api.wait_status(api_key, sub_id, "active")["resource_id"]


class Customer(NamedTuple):
    email: str
    api_key: str


def customer(api: Api) -> Customer:
    email = f"page-{uuid.uuid4().hex[:8]}@example.com"
    return Customer(email, new_customer(api.database, email=email).api_key)


def signed_in(browser: Any, api: Api, api_key: str, query: str = "") -> tuple[Any, list[str]]:
    """A page signed in with ``api_key`` (``query``: the page's URL query, e.g. ``?limit=2``),
    that accepts every confirmation it asks for, and what it logs as an error or throws."""
    page = browser.new_page(viewport={"width": 1200, "height": 1400})
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text)
            if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{api.url}/ui/{query}")
    page.fill("#api-key", api_key)
    page.click("#sign-in form button[type=submit]")
    page.wait_for_selector("#signed-in:not([hidden])")
    return page, problems


def open_graph(page: Any, graph_id: str) -> None:
    page.locator("#graphs tbody tr", has_text=graph_id).get_by_role("button", name="open").click()
    expect(page.locator("#graph-id")).to_have_text(graph_id)


def finish(page: Any, click: Any) -> None:
    """Click, then wait for the operation the click started to complete in the watch panel
    (which shows an earlier operation before: every test's graph was provisioned by one)."""
    expect(page.locator("#watch")).to_be_visible()
    before = page.inner_text("#watch-id")
    click()
    expect(page.locator("#watch-id")).not_to_have_text(before)
    expect(page.locator("#watch-status")).to_have_text("completed", timeout=30_000)


def run_query(page: Any, query: str, parameters: str = "") -> None:
    """Run a query in the graph's panel and wait for its answer (or refusal)."""
    page.fill("#query-text", query)
    page.fill("#query-parameters", parameters)
    page.click("#query-form button[type=submit]")
    expect(page.locator("#query-form button[type=submit]")).to_be_enabled()


def test_a_backup_is_taken_listed_and_restored(postgres_api: Api, browser: Any) -> None:
    api = postgres_api
    user = new_customer(api.database)
    graph_id = active_graph(api, user.api_key)
    page, problems = signed_in(browser, api, user.api_key, "?limit=2")
    open_graph(page, graph_id)
    backups = page.locator("#backups tbody tr")
    expect(backups).to_have_count(0)

    run_query(page, "CREATE (:Entity {identifier: 'kept'})")
    expect(page.locator("#query-count")).to_contain_text("0 rows in")
    finish(page, lambda: page.click("#back-up"))
    expect(backups).to_have_count(1)
    expect(backups.first.locator("td").nth(1)).to_have_text("on_demand")
    run_query(page, "CREATE (:Entity {identifier: 'later'})")
    finish(page, lambda: page.click("#back-up"))
    expect(backups).to_have_count(2)
    expect(page.locator("#backups-more")).to_be_hidden()
    finish(page, lambda: page.click("#back-up"))
    expect(page.locator("#backups-more")).to_be_visible()  # two a page
    page.click("#backups-more")
    expect(backups).to_have_count(3)
    expect(page.locator("#backups-more")).to_be_hidden()
    with api.client(user.api_key) as client:
        listed = client.get(f"/v1/graphs/{graph_id}/backups").json()["backups"]
    expect(page.locator("#backups td.id")).to_have_text([b["backup_id"] for b in listed])
    screenshot(page, "backups")

    oldest = listed[-1]["backup_id"]
    finish(page, lambda: page.locator("#backups tbody tr", has_text=oldest)
           .get_by_role("button", name="restore").click())
    expect(page.locator("#operations tbody tr").first).to_contain_text("graph_restore")
    expect(page.locator("#graph-status")).to_have_text("active")
    run_query(page, "MATCH (e:Entity) RETURN e.identifier AS id ORDER BY id")
    expect(page.locator("#query-result tbody td")).to_have_text(["kept"])  # 'later' is gone
    assert page.inner_text("#backups-error") == ""
    assert problems == []


def test_a_graph_is_deleted_restored_within_the_grace_and_its_subscription_cancelled(
    postgres_api: Api, browser: Any,
) -> None:
    api = postgres_api
    user = new_customer(api.database)
    graph_id = active_graph(api, user.api_key)
    page, problems = signed_in(browser, api, user.api_key)
    open_graph(page, graph_id)
    expect(page.locator("#graph-status")).to_have_text("active")
    expect(page.locator("#graph-reactivate")).to_be_hidden()

    finish(page, lambda: page.click("#graph-delete"))
    expect(page.locator("#graph-status")).to_have_text("suspended")
    expect(page.locator("#graph-grace")).to_contain_text("deleted after 20")
    expect(page.locator("#graph-delete")).to_be_hidden()
    expect(page.locator("#subscriptions .status").first).to_have_text("canceled")

    finish(page, lambda: page.click("#graph-reactivate"))
    expect(page.locator("#graph-status")).to_have_text("active")
    expect(page.locator("#graph-grace")).to_have_text("")
    expect(page.locator("#subscriptions .status").first).to_have_text("active")

    subscription = page.locator("#subscriptions tbody tr").first
    finish(page, lambda: subscription.get_by_role("button", name="cancel").click())
    expect(page.locator("#subscriptions .status").first).to_have_text("canceled")
    expect(subscription.get_by_role("button", name="cancel")).to_have_count(0)
    expect(page.locator("#graph-status")).to_have_text("suspended")
    with api.client(user.api_key) as client:
        assert client.get(f"/v1/graphs/{graph_id}").json()["status"] == "suspended"
    assert problems == []


def test_markup_in_what_the_api_returns_is_shown_as_text(
    postgres_api: Api, browser: Any,
) -> None:
    api = postgres_api
    user = new_customer(api.database)
    graph_id = active_graph(api, user.api_key, name=MARKUP)
    page, problems = signed_in(browser, api, user.api_key)
    expect(page.locator("#graphs tbody tr td").nth(1)).to_have_text(MARKUP)
    open_graph(page, graph_id)
    expect(page.locator("#graph-name")).to_have_text(MARKUP)
    expect(page.locator("#query-target option").first).to_have_text(f"{MARKUP} ({graph_id})")
    expect(page.locator("img")).to_have_count(0)
    assert page.title() == "Provisioning"
    assert problems == []


def test_every_list_shows_more_on_request(postgres_api: Api, browser: Any) -> None:
    api = postgres_api
    user = new_customer(api.database)
    graph_ids = [active_graph(api, user.api_key, name=f"graph {n}") for n in range(3)]
    page, problems = signed_in(browser, api, user.api_key, "?limit=2")
    for name in ["subscriptions", "graphs", "operations"]:
        rows = page.locator(f"#{name} tbody tr")
        expect(rows).to_have_count(2)
        page.click(f"#{name}-more")
        expect(rows).to_have_count(3)
        expect(page.locator(f"#{name}-more")).to_be_hidden()
    expect(page.locator("#graphs td.id")).to_have_text(list(reversed(graph_ids)))  # newest first
    assert problems == []


def test_members_are_added_changed_and_removed(postgres_api: Api, browser: Any) -> None:
    api = postgres_api
    owner, reader, writer = customer(api), customer(api), customer(api)
    graph_id = active_graph(api, owner.api_key)
    page, problems = signed_in(browser, api, owner.api_key, "?limit=2")
    open_graph(page, graph_id)
    members = page.locator("#members tbody tr")
    expect(members).to_have_count(1)
    expect(members.first).to_contain_text(owner.email)
    expect(members.first.get_by_label("role")).to_have_value("admin")

    for user, role in [(reader, "reader"), (writer, "writer")]:
        page.fill("#member-email", user.email)
        page.select_option("#member-role", role)
        page.click("#member-form button[type=submit]")
        expect(page.locator("#member-form button[type=submit]")).to_be_enabled()  # answered
        expect(page.locator("#member-email")).to_have_value("")
    expect(members).to_have_count(2)  # two a page
    page.click("#members-more")
    expect(members).to_have_count(3)
    expect(page.locator("#members-more")).to_be_hidden()
    row = members.filter(has_text=reader.email)
    expect(row.get_by_label("role")).to_have_value("reader")

    row.get_by_label("role").select_option("writer")
    expect(row.get_by_label("role")).to_be_enabled()
    expect(row.get_by_label("role")).to_have_value("writer")
    with api.client(owner.api_key) as client:
        listed = {m["email"]: m["role"] for m in
                  client.get(f"/v1/graphs/{graph_id}/members").json()["members"]}
    assert listed == {owner.email: "admin", reader.email: "writer", writer.email: "writer"}

    members.filter(has_text=writer.email).get_by_role("button", name="remove").click()
    expect(members.filter(has_text=writer.email)).to_have_count(0)
    expect(page.locator("#members-error")).to_have_text("")

    error = page.locator("#members-error")
    page.fill("#member-email", "nobody-we-know@example.com")
    page.click("#member-form button[type=submit]")
    expect(error).to_have_text("email: no user with the email 'nobody-we-know@example.com'")
    mine = members.filter(has_text=owner.email)
    mine.get_by_label("role").select_option("reader")
    expect(error).to_contain_text(f"email: '{owner.email}' is the last admin")
    expect(mine.get_by_label("role")).to_be_enabled()
    expect(mine.get_by_label("role")).to_have_value("admin")  # what the server kept
    mine.get_by_role("button", name="remove").click()
    expect(error).to_contain_text(f"user: '{owner.email}' is the last admin")
    expect(mine).to_have_count(1)
    assert [p for p in problems if "status of 4" not in p] == []  # the three refusals


@pytest.fixture
def small_answers_api(postgres_database: Database, graph_dir: Path,
                      dagster_instance: DagsterInstance) -> Iterator[Api]:
    """The app on PostgreSQL, answering at most three rows a query."""
    resources = make_resources(postgres_database.url, graph_dir)
    app, executor = make_api(postgres_database, resources, dagster_instance, QUERY_MAX_ROWS="3")
    with serve(app) as url:
        yield Api(url, postgres_database, executor)
    executor.close()


def test_a_query_shows_its_table_and_each_refusal_and_a_reader_only_reads(
    small_answers_api: Api, browser: Any,
) -> None:
    api = small_answers_api
    owner, reader = customer(api), customer(api)
    graph_id = active_graph(api, owner.api_key)
    with api.client(owner.api_key) as client:
        made = client.post(f"/v1/graphs/{graph_id}/subgraphs", json={"name": "empty"})
        assert api.events(owner.api_key, made.json()["operation_id"])[-1][1] \
            == "operation_completed"
        added = client.post(f"/v1/graphs/{graph_id}/members",
                            json={"email": reader.email, "role": "reader"})
        assert added.status_code == 201, added.text
    page, problems = signed_in(browser, api, owner.api_key)
    open_graph(page, graph_id)
    expect(page.locator("#query-target option")).to_have_count(2)  # the graph, its subgraph

    run_query(page, "CREATE (:Entity {identifier: 'acme', name: $name})",
              json.dumps({"name": MARKUP}))
    expect(page.locator("#query-error")).to_have_text("")
    run_query(page, "MATCH (e:Entity) RETURN e.identifier AS id, e.name AS name, 1.5 AS x, "
              "e AS node")
    expect(page.locator("#query-result th")).to_have_text(["id", "name", "x", "node"])
    cells = page.locator("#query-result tbody td")
    expect(cells.nth(0)).to_have_text("acme")
    expect(cells.nth(1)).to_have_text(MARKUP)
    expect(cells.nth(2)).to_have_text("1.5")
    expect(cells.nth(3)).to_contain_text('"_label":"Entity"')
    expect(page.locator("#query-count")).to_contain_text("1 row")
    expect(page.locator("#query-truncated")).to_be_hidden()
    expect(page.locator("img")).to_have_count(0)
    screenshot(page, "query")
    run_query(page, "UNWIND range(1, 10) AS i RETURN i")
    expect(page.locator("#query-result tbody td")).to_have_text(["1", "2", "3"])
    expect(page.locator("#query-truncated")).to_be_visible()

    page.select_option("#query-target", f"{graph_id}_empty")
    run_query(page, "MATCH (e:Entity) RETURN count(e) AS entities")
    expect(page.locator("#query-result tbody td")).to_have_text(["0"])
    page.select_option("#query-target", graph_id)

    run_query(page, "MATCH (e:Nowhere) RETURN e")
    expect(page.locator("#query-error")).to_contain_text("Table Nowhere does not exist")
    expect(page.locator("#query-truncated")).to_be_hidden()
    expect(page.locator("#query-result tbody tr")).to_have_count(0)
    run_query(page, "RETURN 1", "[1, 2]")
    expect(page.locator("#query-error")).to_contain_text("parameters: expected a JSON object")

    theirs, _ = signed_in(browser, api, reader.api_key)
    open_graph(theirs, graph_id)
    run_query(theirs, "MATCH (e:Entity) RETURN e.identifier")
    expect(theirs.locator("#query-result tbody td")).to_have_text(["acme"])
    run_query(theirs, "CREATE (:Entity {identifier: 'mine'})")
    expect(theirs.locator("#query-error")).to_contain_text("the caller may only read")
    # nor may a reader back the graph up, delete it, restore a backup, change its members or
    # make a subgraph of it: the page offers none of it, and says why
    expect(theirs.locator("#graph-role")).to_contain_text("You are a reader of this graph")
    for control in ("#back-up", "#graph-delete", "#member-form", "#subgraph-form"):
        expect(theirs.locator(control)).to_be_hidden()
    listed = theirs.locator("#members tbody tr")
    expect(listed).to_have_count(2)
    expect(listed.filter(has_text=reader.email)).to_contain_text("reader")
    expect(theirs.locator("#members select, #members button")).to_have_count(0)
    with api.client(reader.api_key) as client:  # and the API refuses it whatever a page shows
        refused = client.post(f"/v1/graphs/{graph_id}/backups")
        assert refused.status_code == 403, refused.text
        assert f"only an admin of '{graph_id}'" in refused.json()["message"]
    expect(theirs.locator("#graph-status")).to_have_text("active")
    expect(page.locator("#graph-role")).to_have_text("")  # the owner, an admin
    expect(page.locator("#back-up")).to_be_visible()

    finish(page, lambda: page.click("#graph-delete"))
    expect(page.locator("#graph-status")).to_have_text("suspended")
    run_query(page, "MATCH (e:Entity) RETURN e.identifier")
    expect(page.locator("#query-error")).to_contain_text(f"graph {graph_id} is suspended")
    assert [p for p in problems if "status of 4" not in p] == []
