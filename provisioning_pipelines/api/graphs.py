"""``/v1/graphs``: the caller's graphs, one graph, creating a subgraph of a graph the caller
administers, and the graph's life: delete (suspended, then deleted after the grace), restore
within the grace, delete a subgraph. Each change answers ``202 {"operation_id"}`` once checked
(``ApiContext.launch``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from provisioning_pipelines.api import pages
from provisioning_pipelines.api.context import ApiContext
from provisioning_pipelines.api.idempotency import idempotent
from provisioning_pipelines.api.models import IdempotencyKey, OperationStarted, Page
from provisioning_pipelines.api.spec import Endpoint
from provisioning_pipelines.flows import (
    REACTIVATION_FLOW,
    SUBGRAPH_DELETION_FLOW,
    SUBGRAPH_FLOW,
    SUSPENSION_FLOW,
    Flow,
    LifecycleConfig,
    SubgraphConfig,
    SubgraphDeletionConfig,
)
from provisioning_pipelines.services import validation
from provisioning_pipelines.services.access.accounts import Identity
from provisioning_pipelines.services.capacity import hosts
from provisioning_pipelines.services.graphs import graph_requests, lifecycle, subgraphs, views
from provisioning_pipelines.services.graphs import records as graphs

GraphStatus = str  # active, suspended, deleting or deleted
DATE_TIME = {"format": "date-time"}


class SubgraphView(BaseModel):
    graph_id: str
    name: str
    status: GraphStatus
    tier: str
    size_bytes: int | None = Field(description="on disk; null while its host does not answer")
    host_id: str | None
    available: bool = Field(description="false while the graph's host does not answer")
    parent_graph_id: str | None
    created_at: str = Field(json_schema_extra=DATE_TIME)
    delete_after: str | None = Field(json_schema_extra=DATE_TIME)
    deleted_at: str | None = Field(json_schema_extra=DATE_TIME)


class GraphView(SubgraphView):
    """A graph as its owner sees it, with its subgraphs."""

    subgraphs: list[SubgraphView]
    my_role: Literal["admin", "writer", "reader"] | None = Field(
        description="the caller's role on the graph (its subgraphs share it): an admin changes "
                    "its life, members and backups, a writer's queries may write, a reader's "
                    "only read; null for the owner of a deleted graph")


class GraphList(BaseModel):
    graphs: list[GraphView]
    next_cursor: str | None = Field(description="the next page's cursor; null on the last")


SUBGRAPH_NAME = "^[a-zA-Z0-9]{1,20}$"


class SubgraphRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is named, not ignored

    # The pattern is the document's; the service checks it, with its own message.
    name: str = Field(json_schema_extra={"pattern": SUBGRAPH_NAME},
                      description="1 to 20 letters or digits; the subgraph's id is "
                                  "{graph_id}_{name}")
    description: str | None = Field(None, max_length=2000)
    fork_parent: StrictBool = Field(False, description="copy the parent's data into it")


def endpoints(api: ApiContext) -> list[Endpoint]:
    async def create_subgraph(request: Request) -> Response:
        graph_id = request.path_params["graph_id"]

        def visible() -> Identity:
            user = api.user_of(request)
            with api.database.session() as session:
                parent = graphs.visible_graph(session, graph_id, user.user_id)
                subgraphs.check_can_add_subgraph(session, parent, user.user_id)
                hosts.check_serving(session, graph_id)
                lifecycle.check_not_moving(session, graph_id)
            return user

        user = await run_in_threadpool(visible)
        body = await api.bodies.read_model(request, SubgraphRequest)
        name = subgraphs.validate_subgraph_name(body.name)
        description = validation.text(body.description, "description",
                                      max_length=graph_requests.MAX_DESCRIPTION_LENGTH,
                                      multiline=True, required=False)
        fork_parent = body.fork_parent
        operation_id = await api.limits.open(SUBGRAPH_FLOW.operation_kind, user.user_id)
        await api.start(SUBGRAPH_FLOW, SubgraphConfig(
            user_id=user.user_id, parent_graph_id=graph_id, name=name, description=description,
            fork_parent=fork_parent), operation_id=operation_id)
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
            lifecycle.check_payer(graph, user.user_id)
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
            found = views.graphs_page(session, user.user_id, api.hosts, after=page.after,
                                       limit=page.limit)
        return JSONResponse(pages.page_answer("graphs", found.items, "graphs",
                                              found.next_key))

    def show_graph(request: Request) -> Response:
        user = api.user_of(request)
        with api.database.session() as session:
            graph = graphs.visible_graph(session, request.path_params["graph_id"], user.user_id)
            return JSONResponse(views.describe(session, graph, api.hosts,
                                                viewer=user.user_id))

    return [
        Endpoint("GET", "/v1/graphs", list_graphs,
                 "The top-level graphs I own or have a role on, newest first",
                 {200: GraphList}, query=Page, tag="graphs"),
        Endpoint("GET", "/v1/graphs/{graph_id}", show_graph, "One graph, with its subgraphs",
                 {200: GraphView}, tag="graphs"),
        Endpoint("DELETE", "/v1/graphs/{graph_id}", delete_graph,
                 "Delete: suspended now, deleted after the grace", {202: OperationStarted},
                 errors=(403, 409, 429), tag="graphs"),
        Endpoint("POST", "/v1/graphs/{graph_id}/restore", idempotent(api, restore_graph),
                 "Make a suspended graph active again, within the grace",
                 {202: OperationStarted}, errors=(403, 409, 429), headers=IdempotencyKey,
                 tag="graphs"),
        Endpoint("POST", "/v1/graphs/{graph_id}/subgraphs", idempotent(api, create_subgraph),
                 "Make a subgraph (the operation fails when the plan does not allow it)",
                 {202: OperationStarted}, errors=(403, 409, 429), body=SubgraphRequest,
                 headers=IdempotencyKey, tag="graphs"),
        Endpoint("DELETE", "/v1/graphs/{graph_id}/subgraphs/{name}", delete_subgraph,
                 "Delete a subgraph", {202: OperationStarted}, errors=(403, 409, 422, 429),
                 tag="graphs", path_schemas={"name": {"pattern": SUBGRAPH_NAME}}),
    ]
