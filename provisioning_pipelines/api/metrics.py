"""``GET /metrics``: the server's counters in Prometheus' text format (see ``metrics.py``).

Unauthenticated, as scrapers expect; expose the port to the monitoring network only.
"""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from provisioning_pipelines import metrics
from provisioning_pipelines.api.context import ApiContext
from provisioning_pipelines.api.spec import Content, Endpoint
from provisioning_pipelines.services.graphs import backups

logger = logging.getLogger("provisioning_pipelines.api")


def endpoints(api: ApiContext) -> list[Endpoint]:
    def ages() -> list[tuple[str, str, str, float | None]]:
        """Each live graph's newest backup's age, from the app database; none while it is
        down (a scrape must answer: the outage is counted in ``provisioning_store_outages``)."""
        try:
            with api.database.session() as session:
                return [(age.graph_id, age.tier, age.host_id, age.age_seconds)
                        for age in backups.backup_ages(session)]
        except Exception as exc:  # the other figures still answer
            logger.warning("metrics: backup ages unreadable: %s", exc)
            return []

    async def scrape(request: Request) -> Response:
        found = await run_in_threadpool(ages)
        body, content_type = metrics.scrape([metrics.backup_ages(found)])
        return Response(body, media_type=content_type)

    return [Endpoint("GET", "/metrics", scrape, "The server's counters (Prometheus' text format)",
                     {200: Content("text/plain", {"type": "string"},
                                   "Prometheus' text exposition format, version 0.0.4")},
                     auth="none", tag="health", uses_stores=False)]
