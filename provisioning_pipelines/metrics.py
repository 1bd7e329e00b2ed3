"""What an operator scrapes: ``GET /metrics`` in Prometheus' text format.

Counted in the process that does the work: an API process counts the provisionings it runs
directly (``method="direct"``) or launches and waits for (``method="launched"``), its webhooks,
reports to Dagster, store outages, its waiting queue and open streams. A Dagster run process is
not scraped; its runs are in Dagster's own UI. One registry per process (not the global one, so
importing this module never registers twice).
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

REGISTRY = CollectorRegistry(auto_describe=True)

PROVISIONINGS = Counter(
    "provisioning_provisionings", "Provisionings finished, by flow, method and outcome "
    "(completed, failed, claim_held).", ["flow", "method", "outcome"], registry=REGISTRY)
DURATION = Histogram(
    "provisioning_duration_seconds", "Time from start to outcome of a provisioning.",
    ["flow", "method"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
WAITING = Gauge(
    "provisioning_waiting", "Provisionings waiting for a free slot of DIRECT_MAX_CONCURRENCY.",
    registry=REGISTRY)
RUNNING = Gauge("provisioning_running", "Provisionings running now.", registry=REGISTRY)
RESUMED = Counter("provisioning_resumed", "Provisionings resumed after another worker's "
                  "crash.", registry=REGISTRY)
REPORTS = Counter(
    "provisioning_dagster_reports", "Reports of direct provisionings to Dagster, by outcome "
    "(ok, timeout, error).", ["outcome"], registry=REGISTRY)
WEBHOOKS = Counter(
    "provisioning_webhooks", "Billing webhook deliveries, by outcome (applied, ignored, "
    "rejected, duplicate, refused, unavailable).", ["outcome"], registry=REGISTRY)
OUTAGES = Counter(
    "provisioning_store_outages", "Calls that found a store unreachable, by store (database, "
    "event_store).", ["store"], registry=REGISTRY)
STREAMS = Gauge("provisioning_open_streams", "Server-Sent Events streams open now.",
                registry=REGISTRY)
STREAM_READERS = Gauge(
    "provisioning_stream_readers", "Event store readers open now: one per operation with a "
    "stream open in this process, however many streams it has.", registry=REGISTRY)
SLOW_CLIENTS = Counter(
    "provisioning_slow_clients", "SSE clients dropped for taking no event for "
    "SLOW_CLIENT_TIMEOUT_SECONDS.", registry=REGISTRY)
BODY_READS = Gauge("provisioning_body_reads", "Request bodies being read now (at most "
                   "BODY_READ_MAX_CONCURRENCY).", registry=REGISTRY)
BODIES_REFUSED = Counter(
    "provisioning_bodies_refused", "Request bodies refused before they were read whole, by "
    "reason (timeout: 408, busy: 503).", ["reason"], registry=REGISTRY)


def scrape() -> tuple[bytes, str]:
    """The exposition and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
