"""``/v1/graphs/{id}/backups``: back a graph up now, list its backups, and restore one.

A backup and a restore answer ``202 {"operation_id", ...}`` once checked
(``ApiContext.launch``); the flow runs in the background.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
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
    BACKUP_FLOW,
    RESTORE_FLOW,
    BackupConfig,
    Flow,
    RestoreConfig,
)
from provisioning_pipelines.services.access.accounts import Identity
from provisioning_pipelines.services.capacity import hosts
from provisioning_pipelines.services.graphs import backups, lifecycle, restores
from provisioning_pipelines.services.graphs import records as graphs

DATE_TIME = {"format": "date-time"}


class BackupView(BaseModel):
    backup_id: str
    kind: Literal["on_demand", "daily", "final"]
    created_at: str = Field(json_schema_extra=DATE_TIME)
    size_bytes: int | None
    checksum: str | None = Field(description="sha256 of the backup's file")
    expires_at: str | None = Field(json_schema_extra=DATE_TIME)


class BackupList(BaseModel):
    backups: list[BackupView]
    next_cursor: str | None = Field(description="the next page's cursor; null on the last")


class BackupStarted(OperationStarted):
    backup_id: str


class RestoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is named, not ignored

    into_graph_id: str | None = Field(None, description="a top-level graph of the same owner "
                                                        "(default: the backed-up graph)")


class RestoreStarted(OperationStarted):
    graph_id: str = Field(description="the graph restored into")


def endpoints(api: ApiContext) -> list[Endpoint]:
    async def back_up_graph(request: Request) -> Response:
        graph_id = request.path_params["graph_id"]

        def check(session: Session, user: Identity) -> tuple[Flow, Any, dict[str, Any]]:
            graph = lifecycle.managed_graph(session, graph_id, user.user_id)
            lifecycle.check_status(graph, "back_up")
            hosts.check_serving(session, graph_id)
            backup_id = backups.backup_id_for("on_demand", graph_id)
            config = BackupConfig(graph_id=graph_id, kind="on_demand", backup_id=backup_id,
                                  actor=user.user_id)
            return BACKUP_FLOW, config, {"backup_id": backup_id}

        return await api.launch(request, check)


    def list_backups(request: Request) -> Response:
        user = api.user_of(request)
        graph_id = request.path_params["graph_id"]
        listed = f"backups:{graph_id}"  # a cursor is one graph's: another graph's is a 422
        page = pages.page_request(request, listed)
        with api.database.session() as session:
            graph = graphs.visible_graph(session, graph_id, user.user_id)
            found = backups.backups_page(session, graph.id, after=page.after, limit=page.limit)
            return JSONResponse(pages.page_answer(
                "backups", [backups.describe(backup) for backup in found.items], listed,
                found.next_key))


    async def restore_backup(request: Request) -> Response:
        """Restore into the backed-up graph, or ``{"into_graph_id": ...}`` (the body is
        optional): a graph of the same owner that an active subscription pays for."""
        graph_id = request.path_params["graph_id"]
        backup_id = request.path_params["backup_id"]
        await run_in_threadpool(api.user_of, request)  # who asks, before reading their body
        body = await api.bodies.read_model(request, RestoreRequest, optional=True)
        into = body.into_graph_id

        def check(session: Session, user: Identity) -> tuple[Flow, Any, dict[str, Any]]:
            plan = restores.plan_restore(session, user_id=user.user_id, graph_id=graph_id,
                                        backup_id=backup_id, into_graph_id=into)
            restores.check_restorable_here(session, plan)
            hosts.check_serving(session, plan.graph_id)
            restores.check_kept(api.executor.resources["backups"].get().store, plan)
            config = RestoreConfig(user_id=user.user_id, graph_id=graph_id,
                                   backup_id=backup_id, into_graph_id=into)
            return RESTORE_FLOW, config, {"graph_id": plan.graph_id}

        return await api.launch(request, check)


    return [
        Endpoint("GET", "/v1/graphs/{graph_id}/backups", list_backups,
                 "A graph's backups, newest first (a deleted graph's too)", {200: BackupList},
                 query=Page, tag="backups"),
        Endpoint("POST", "/v1/graphs/{graph_id}/backups", idempotent(api, back_up_graph),
                 "Back a graph up now", {202: BackupStarted}, errors=(403, 409, 429),
                 headers=IdempotencyKey, tag="backups"),
        Endpoint("POST", "/v1/graphs/{graph_id}/backups/{backup_id}/restore",
                 idempotent(api, restore_backup),
                 "Restore a backup: it replaces the data and schema of the graph restored into",
                 {202: RestoreStarted}, errors=(402, 403, 409, 429), body=RestoreRequest,
                 body_required=False, headers=IdempotencyKey, tag="backups"),
    ]
