"""``/v1/graphs``: the caller's graphs, one graph, creating a subgraph of a graph the caller
administers, and the graph's life: delete (suspended, then deleted after the grace), restore
within the grace, delete a subgraph. Each change answers ``202 {"operation_id"}`` once checked
(``ApiContext.launch``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from provisioning_pipelines.api import pages
from provisioning_pipelines.api.context import ApiContext, guard
from provisioning_pipelines.api.idempotency import idempotent
from provisioning_pipelines.errors import InvalidRequest
from provisioning_pipelines.flows import (
    REACTIVATION_FLOW,
    SUBGRAPH_DELETION_FLOW,
    SUBGRAPH_FLOW,
    SUSPENSION_FLOW,
    Flow,
    LifecycleConfig,
    SubgraphDeletionConfig,
)
from provisioning_pipelines.services import validation
from provisioning_pipelines.services.access.accounts import Identity
from provisioning_pipelines.services.capacity import hosts
from provisioning_pipelines.services.graphs import graph_requests, lifecycle, subgraphs
from provisioning_pipelines.services.graphs import records as graphs


def routes(api: ApiContext) -> list[Route]:
    async def create_subgraph(request: Request) -> Response:
        graph_id = request.path_params["graph_id"]

        def visible() -> Identity:
            user = api.user_of(request)
            with api.database.session() as session:
                parent = graphs.visible_graph(session, graph_id, user.user_id)
                subgraphs.check_can_add_subgraph(session, parent, user.user_id)
                hosts.check_serving(session, graph_id)
            return user

        user = await run_in_threadpool(visible)
        body = await api.bodies.read_json(request)
        name = subgraphs.validate_subgraph_name(body.get("name"))
        description = validation.text(body.get("description"), "description",
                                      max_length=graph_requests.MAX_DESCRIPTION_LENGTH,
                                      multiline=True, required=False)
        fork_parent = body.get("fork_parent", False)
        if not isinstance(fork_parent, bool):
            raise InvalidRequest("fork_parent: expected true or false", field="fork_parent")
        operation_id = await api.limits.open(SUBGRAPH_FLOW.operation_kind, user.user_id)
        api.start(api.executor.subgraph, user.user_id, graph_id, name, description=description,
                  fork_parent=fork_parent, operation_id=operation_id)
        return JSONResponse({"operation_id": operation_id}, status_code=202)

    async def delete_graph(request: Request) -> Response:
        graph_id = request.path_params["graph_id"]

        def check(session: Session, user: Identity) -> tuple[Flow, Any, dict[str, Any]]:
            graph = lifecycle.managed_graph(session, graph_id, user.user_id)
            lifecycle.check_status(graph, "delete")
            return SUSPENSION_FLOW, LifecycleConfig(
                graph_id=graph_id, actor=user.user_id, reason="deleted by the user"), {}

        return await api.launch(request, check)


    async def restore_graph(request: Request) -> Response:
        graph_id = request.path_params["graph_id"]

        def check(session: Session, user: Identity) -> tuple[Flow, Any, dict[str, Any]]:
            graph = lifecycle.managed_graph(session, graph_id, user.user_id)
            lifecycle.check_status(graph, "reactivate")
            return REACTIVATION_FLOW, LifecycleConfig(
                graph_id=graph_id, actor=user.user_id, reason="restored by the user"), {}

        return await api.launch(request, check)


    async def delete_subgraph(request: Request) -> Response:
        parent_id = request.path_params["graph_id"]
        name = request.path_params["name"]

        def check(session: Session, user: Identity) -> tuple[Flow, Any, dict[str, Any]]:
            subgraphs.deletable_subgraph(session, user_id=user.user_id,
                                         parent_graph_id=parent_id, name=name)
            hosts.check_serving(session, parent_id)  # a subgraph lives on its parent's host
            return SUBGRAPH_DELETION_FLOW, SubgraphDeletionConfig(
                user_id=user.user_id, parent_graph_id=parent_id, name=name), {}

        return await api.launch(request, check)


    def list_graphs(request: Request) -> Response:
        user = api.user_of(request)
        page = pages.page_request(request, "graphs")
        with api.database.session() as session:
            found = graphs.graphs_page(session, user.user_id, api.hosts, after=page.after,
                                       limit=page.limit)
        return JSONResponse(pages.page_answer("graphs", found.items, "graphs",
                                              found.next_key))

    def show_graph(request: Request) -> Response:
        user = api.user_of(request)
        with api.database.session() as session:
            graph = graphs.visible_graph(session, request.path_params["graph_id"], user.user_id)
            return JSONResponse(graphs.describe(session, graph, api.hosts))

    return [
        Route("/v1/graphs", guard(list_graphs)),
        Route("/v1/graphs/{graph_id}", guard(show_graph)),
        Route("/v1/graphs/{graph_id}", guard(delete_graph), methods=["DELETE"]),
        Route("/v1/graphs/{graph_id}/restore", guard(idempotent(api, restore_graph)),
              methods=["POST"]),
        Route("/v1/graphs/{graph_id}/subgraphs", guard(idempotent(api, create_subgraph)),
              methods=["POST"]),
        Route("/v1/graphs/{graph_id}/subgraphs/{name}", guard(delete_subgraph),
              methods=["DELETE"]),
    ]
