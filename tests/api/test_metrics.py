"""``GET /metrics``: Prometheus' text format, counting what this process did."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from provisioning_pipelines.flows import GRAPH_FLOW, SubscriptionConfig
from provisioning_pipelines.flows.backup import BACKUP_FLOW, BackupConfig
from provisioning_pipelines.services.billing.events import billing_event
from tests.api.helpers import Api
from tests.factories import new_customer, paid_graph_subscription
from tests.flows.helpers import run_direct
from tests.services.graphs.test_backup_ages import backdate


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


def test_metrics_show_each_graphs_newest_backup_age(api: Api) -> None:
    user = new_customer(api.database)
    sub_id = paid_graph_subscription(api.database, user)
    resources = api.executor.resources
    graph_id = run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id),
                          resources).result["graph_id"]
    without = run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=paid_graph_subscription(
        api.database, new_customer(api.database))), resources).result["graph_id"]
    run_direct(BACKUP_FLOW, BackupConfig(graph_id=graph_id), resources)
    backdate(api.database, graph_id, graph_hours=10, backup_hours=3)
    with api.client() as client:
        answer = client.get("/metrics")
    assert answer.status_code == 200
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in text_string_to_metric_families(answer.text)
               for sample in family.samples}
    ages = {dict(labels)["graph_id"]: value for (name, labels), value in samples.items()
            if name == "provisioning_graph_backup_age_seconds"}
    assert ages[graph_id] == pytest.approx(3 * 3600, abs=120)
    assert without not in ages
    assert samples[("provisioning_graphs_without_backup",
                    (("tier", "ladybug-standard"),))] >= 1
    assert ("provisioning_provisionings_total", (("flow", "graph"), ("method", "direct"),
                                                 ("outcome", "completed"))) in samples
