"""``GET /metrics``: the server's counters in Prometheus' text format (see ``metrics.py``).

Unauthenticated, as scrapers expect; expose the port to the monitoring network only.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from provisioning_pipelines import metrics
from provisioning_pipelines.api.context import ApiContext
from provisioning_pipelines.api.spec import Content, Endpoint


def endpoints(api: ApiContext) -> list[Endpoint]:
    async def scrape(request: Request) -> Response:
        body, content_type = metrics.scrape()
        return Response(body, media_type=content_type)

    return [Endpoint("GET", "/metrics", scrape, "The server's counters (Prometheus' text format)",
                     {200: Content("text/plain", {"type": "string"},
                                   "Prometheus' text exposition format, version 0.0.4")},
                     auth="none", tag="health", uses_stores=False)]
