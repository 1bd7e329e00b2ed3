"""The operations page in a real browser: Debian's Chromium, headless, driven by Playwright.

Sign in with an API key, pay through a signed webhook, see the subscription and graph, start a
subgraph and watch its bar reach 100 % over ``EventSource``, reload and find the same state, and
no error in the console. With ``SCREENSHOTS_DIR`` set, the README's screenshots are taken here.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioning_pipelines.services.billing.events import billing_event
from tests.api.helpers import Api
from tests.conftest import require
from tests.factories import new_customer, paid_graph_subscription

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
