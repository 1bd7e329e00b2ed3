"""``/v1/graphs/{id}/members``: who may use a graph, and with which role (admin, writer,
reader). Any member lists them; an admin adds one by email (201), changes a role (200) or
removes one (204); the last admin stays. A subgraph's members are its parent's."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from provisioning_pipelines.api import pages
from provisioning_pipelines.api.context import ApiContext
from provisioning_pipelines.api.idempotency import idempotent
from provisioning_pipelines.api.models import IdempotencyKey, Page
from provisioning_pipelines.api.spec import Endpoint
from provisioning_pipelines.services.graphs import members


class MemberBody(BaseModel):
    """``POST /v1/graphs/{id}/members``: the user (by email) and their role."""

    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=3, max_length=320)
    role: Literal["admin", "writer", "reader"]


class Member(BaseModel):
    user_id: str
    email: str
    role: Literal["admin", "writer", "reader"]
    added_at: str = Field(json_schema_extra={"format": "date-time"})


class MemberList(BaseModel):
    members: list[Member]
    next_cursor: str | None = Field(description="the next page's cursor; null on the last")


def endpoints(api: ApiContext) -> list[Endpoint]:
    def list_members(request: Request) -> Response:
        user = api.user_of(request)
        graph_id = request.path_params["graph_id"]
        listed = f"members:{graph_id}"  # a cursor is one graph's: another graph's is a 422
        page = pages.page_request(request, listed)
        with api.database.session() as session:
            found = members.members_page(session, graph_id, user.user_id, after=page.after,
                                         limit=page.limit)
        return JSONResponse(pages.page_answer("members", found.items, listed, found.next_key))

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
        Endpoint("GET", "/v1/graphs/{graph_id}/members", list_members,
                 "A graph's members and their roles (any member may list)",
                 {200: MemberList}, errors=(422,), query=Page, tag="members"),
        Endpoint("POST", "/v1/graphs/{graph_id}/members", idempotent(api, put_member),
                 "Add a member by email (201), or set a member's role (200); admins only",
                 {200: Member, 201: Member}, errors=(403, 409, 422), body=MemberBody,
                 headers=IdempotencyKey, tag="members"),
        Endpoint("DELETE", "/v1/graphs/{graph_id}/members/{user}", remove_member,
                 "Remove a member (by user id or email); admins only; the last admin stays",
                 {204: None}, errors=(403, 409, 422), tag="members"),
    ]
