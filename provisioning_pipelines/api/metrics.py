"""``GET /metrics``: the server's counters in Prometheus' text format (see ``metrics.py``).

Unauthenticated, as scrapers expect; expose the port to the monitoring network only.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from provisioning_pipelines import metrics
from provisioning_pipelines.api.context import ApiContext, guard


def routes(api: ApiContext) -> list[Route]:
    async def scrape(request: Request) -> Response:
        body, content_type = metrics.scrape()
        return Response(body, media_type=content_type)

    return [Route("/metrics", guard(scrape))]
