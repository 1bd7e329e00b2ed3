"""``GET /metrics``: Prometheus' text format, counting what this process did."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from provisioning_pipelines.services.billing.events import billing_event
from tests.api.helpers import Api
from tests.factories import new_customer, paid_graph_subscription


def scrape(api: Api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with api.client() as client:
        answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.text)
            for sample in family.samples}


def test_a_paid_graph_shows_in_the_counters(api: Api) -> None:
    before = scrape(api)
    user = new_customer(api.database)
    sub_id = paid_graph_subscription(api.database, user, paid=False)
    event = billing_event(sub_id, event_id=f"evt_{sub_id}")
    api.deliver(event)
    api.deliver(event)  # a redelivery
    api.wait_status(user.api_key, sub_id, "active")
    api.executor.reporter.wait_idle(10)
    after = scrape(api)

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    done = {"flow": "graph", "method": "direct", "outcome": "completed"}
    assert grew("provisioning_provisionings_total", **done) == 1
    assert grew("provisioning_duration_seconds_count", flow="graph", method="direct") == 1
    assert grew("provisioning_webhooks_total", outcome="applied") == 1
    assert grew("provisioning_webhooks_total", outcome="duplicate") == 1
    assert grew("provisioning_dagster_reports_total", outcome="ok") == 1
    assert ("provisioning_open_streams", ()) in after
    assert ("provisioning_waiting", ()) in after
