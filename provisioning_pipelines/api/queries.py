"""``POST /v1/graphs/{graph_id}/query``: a customer's Cypher query on a graph or a subgraph.

The caller's role decides whether the query may write (``services/graphs/queries.py``); the
engine decides whether it does. The answer is ``{"columns", "rows", "row_count", "truncated",
"elapsed_ms"}``, values as JSON (docs/api.md). The checks and the query each run in the thread
pool, the query with no database session open.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from provisioning_pipelines.api.context import ApiContext, guard
from provisioning_pipelines.services.graphs import queries
from provisioning_pipelines.services.graphs.queries import QueryTarget
from provisioning_pipelines.storage.hosts.contract import GraphHost


class QueryBody(BaseModel):
    """The body of a query: its Cypher text and its parameters (``$name`` in the text)."""

    model_config = ConfigDict(extra="forbid")

    query: StrictStr = Field(min_length=1, description="Cypher; its length is bounded by the "
                             "graph's tier (QUERY_MAX_LENGTH)")
    parameters: dict[str, Any] = Field(default_factory=dict,
                                       description="values for the query's $parameters")


class QueryAnswer(BaseModel):
    """What a query answers."""

    columns: list[str]
    rows: list[list[Any]]
    row_count: int
    truncated: bool
    elapsed_ms: float


def routes(api: ApiContext) -> list[Route]:
    async def query(request: Request) -> Response:
        graph_id = request.path_params["graph_id"]

        def target() -> tuple[QueryTarget, GraphHost]:
            with api.database.session() as session:
                user = api.user_of(request, session)
                found = queries.query_target(session, graph_id, user.user_id)
                return found, queries.host_of(session, api.hosts, found)

        found, host = await run_in_threadpool(target)
        body = await api.bodies.read_model(request, QueryBody)
        limits = api.settings.query_limits(found.tier)
        result = await run_in_threadpool(queries.run, host, found, body.query,
                                         body.parameters, limits)
        return JSONResponse(result.to_dict())

    return [Route("/v1/graphs/{graph_id}/query", guard(query), methods=["POST"])]
