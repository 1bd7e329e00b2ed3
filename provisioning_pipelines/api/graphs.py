"""``/v1/graphs``: the caller's graphs, one graph, and creating a subgraph of a graph the caller
administers."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from provisioning_pipelines.api.context import ApiContext, guard, read_json
from provisioning_pipelines.errors import InvalidRequest
from provisioning_pipelines.flows import SUBGRAPH_FLOW
from provisioning_pipelines.services import validation
from provisioning_pipelines.services.access.accounts import Identity
from provisioning_pipelines.services.graphs import graph_requests, subgraphs
from provisioning_pipelines.services.graphs import records as graphs


def routes(api: ApiContext) -> list[Route]:
    async def create_subgraph(request: Request) -> Response:
        graph_id = request.path_params["graph_id"]

        def visible() -> Identity:
            user = api.user_of(request)
            with api.database.session() as session:
                subgraphs.check_parent_active(
                    graphs.visible_graph(session, graph_id, user.user_id))
            return user

        user = await run_in_threadpool(visible)
        body = await read_json(request)
        name = subgraphs.validate_subgraph_name(body.get("name"))
        description = validation.text(body.get("description"), "description",
                                      max_length=graph_requests.MAX_DESCRIPTION_LENGTH,
                                      multiline=True, required=False)
        fork_parent = body.get("fork_parent", False)
        if not isinstance(fork_parent, bool):
            raise InvalidRequest("fork_parent: expected true or false", field="fork_parent")
        operation_id = await run_in_threadpool(api.executor.open_operation,
                                               SUBGRAPH_FLOW.operation_kind, user.user_id)
        api.start(api.executor.subgraph, user.user_id, graph_id, name, description=description,
                  fork_parent=fork_parent, operation_id=operation_id)
        return JSONResponse({"operation_id": operation_id}, status_code=202)

    def list_graphs(request: Request) -> Response:
        user = api.user_of(request)
        with api.database.session() as session:
            return JSONResponse({"graphs": graphs.graphs_of(session, user.user_id)})

    def show_graph(request: Request) -> Response:
        user = api.user_of(request)
        with api.database.session() as session:
            graph = graphs.visible_graph(session, request.path_params["graph_id"], user.user_id)
            return JSONResponse(graphs.describe(session, graph))

    return [
        Route("/v1/graphs", guard(list_graphs)),
        Route("/v1/graphs/{graph_id}", guard(show_graph)),
        Route("/v1/graphs/{graph_id}/subgraphs", guard(create_subgraph), methods=["POST"]),
    ]
