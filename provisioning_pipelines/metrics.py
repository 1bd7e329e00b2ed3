"""What an operator scrapes: ``GET /metrics`` in Prometheus' text format.

Counted in the process that does the work: an API process counts the provisionings it runs
directly (``method="direct"``) or launches and waits for (``method="launched"``), its webhooks,
reports to Dagster, store outages, its waiting queue and open streams. A Dagster run process is
not scraped; its runs are in Dagster's own UI. One registry per process (not the global one, so
importing this module never registers twice).

``serve --workers N`` is one server to whoever scrapes it, whichever worker answers: each
worker counts into files under ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess
mode, chosen from the environment when prometheus_client is first imported), and a scrape sums
every worker's files. A gauge counts only live workers (``livesum``): ``serve`` marks a worker
dead when it exits; a counter keeps what a dead worker counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)
#: Whether this process counts into PROMETHEUS_MULTIPROC_DIR, as prometheus_client decided.
MULTIPROCESS = values.ValueClass is not values.MutexValue
#: A gauge's value across workers: the sum over those alive.
ACROSS_WORKERS = "livesum"

PROVISIONINGS = Counter(
    "provisioning_provisionings", "Provisionings finished, by flow, method and outcome "
    "(completed, failed, claim_held).", ["flow", "method", "outcome"], registry=REGISTRY)
DURATION = Histogram(
    "provisioning_duration_seconds", "Time from start to outcome of a provisioning.",
    ["flow", "method"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
WAITING = Gauge(
    "provisioning_waiting", "Provisionings waiting for a free slot of DIRECT_MAX_CONCURRENCY.",
    registry=REGISTRY, multiprocess_mode=ACROSS_WORKERS)
RUNNING = Gauge("provisioning_running", "Provisionings running now.", registry=REGISTRY,
                multiprocess_mode=ACROSS_WORKERS)
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
                registry=REGISTRY, multiprocess_mode=ACROSS_WORKERS)
STREAM_READERS = Gauge(
    "provisioning_stream_readers", "Event store readers open now: one per operation with a "
    "stream open in a process, however many streams it has.", registry=REGISTRY,
    multiprocess_mode=ACROSS_WORKERS)
SLOW_CLIENTS = Counter(
    "provisioning_slow_clients", "SSE clients dropped for taking no event for "
    "SLOW_CLIENT_TIMEOUT_SECONDS.", registry=REGISTRY)
BODY_READS = Gauge("provisioning_body_reads", "Request bodies being read now (at most "
                   "BODY_READ_MAX_CONCURRENCY).", registry=REGISTRY)
BODIES_REFUSED = Counter(
    "provisioning_bodies_refused", "Request bodies refused before they were read whole, by "
    "reason (timeout: 408, busy: 503).", ["reason"], registry=REGISTRY)


def scrape(extra: Sequence[Collector] = ()) -> tuple[bytes, str]:
    """The exposition (of every worker, in multiprocess mode) and its content type, with what
    ``extra`` collectors read at this scrape (figures of the database, not of a process)."""
    if not MULTIPROCESS and not extra:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    if MULTIPROCESS:
        MultiProcessCollector(registry)
    else:
        registry.register(_Each(REGISTRY))
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def backup_ages(ages: Iterable[tuple[str, str, str, float | None]]) -> Collector:
    """``provisioning_graph_backup_age_seconds{graph_id, tier, host_id}``: how old each live
    graph's newest backup is (graphs without one are counted in
    ``provisioning_graphs_without_backup{tier}``)."""
    found = list(ages)
    age = GaugeMetricFamily("provisioning_graph_backup_age_seconds", "Age of each live "
                            "graph's newest backup.", labels=["graph_id", "tier", "host_id"])
    none = GaugeMetricFamily("provisioning_graphs_without_backup", "Live graphs with no "
                             "backup yet, by tier.", labels=["tier"])
    missing: dict[str, int] = {}
    for graph_id, tier, host_id, seconds in found:
        if seconds is None:
            missing[tier] = missing.get(tier, 0) + 1
        else:
            age.add_metric([graph_id, tier, host_id], seconds)
    for tier, count in sorted(missing.items()):
        none.add_metric([tier], count)
    return _Fixed([age, none])


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


class _Each(Collector):
    """The process registry's metrics, inside a registry made for one scrape."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()
