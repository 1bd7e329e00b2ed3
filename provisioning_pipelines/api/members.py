"""``/v1/graphs/{id}/members``: who may use a graph, and with which role (admin, writer,
reader). Any member lists them; an admin adds one by email (201), changes a role (200) or
removes one (204); the last admin stays. A subgraph's members are its parent's."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from provisioning_pipelines.api import pages
from provisioning_pipelines.api.context import ApiContext, guard
from provisioning_pipelines.api.idempotency import idempotent
from provisioning_pipelines.services.graphs import members


class MemberBody(BaseModel):
    """``POST /v1/graphs/{id}/members``: the user (by email) and their role."""

    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=3, max_length=320)
    role: Literal["admin", "writer", "reader"]


def routes(api: ApiContext) -> list[Route]:
    def list_members(request: Request) -> Response:
        user = api.user_of(request)
        page = pages.page_request(request, "members")
        with api.database.session() as session:
            found = members.members_page(session, request.path_params["graph_id"],
                                         user.user_id, after=page.after, limit=page.limit)
        return JSONResponse(pages.page_answer("members", found.items, "members",
                                              found.next_key))

    async def put_member(request: Request) -> Response:
        user = await run_in_threadpool(api.user_of, request)
        body = await api.bodies.read_model(request, MemberBody)

        def put() -> Response:
            with api.database.session() as session:
                member, new = members.put_member(session, request.path_params["graph_id"],
                                                 user.user_id, email=body.email,
                                                 role=body.role)
            return JSONResponse(member, status_code=201 if new else 200)

        return await run_in_threadpool(put)

    def remove_member(request: Request) -> Response:
        user = api.user_of(request)
        with api.database.session() as session:
            members.remove_member(session, request.path_params["graph_id"], user.user_id,
                                  request.path_params["user"])
        return Response(status_code=204)

    return [
        Route("/v1/graphs/{graph_id}/members", guard(list_members), methods=["GET"]),
        Route("/v1/graphs/{graph_id}/members", guard(idempotent(api, put_member)),
              methods=["POST"]),
        Route("/v1/graphs/{graph_id}/members/{user}", guard(remove_member),
              methods=["DELETE"]),
    ]
