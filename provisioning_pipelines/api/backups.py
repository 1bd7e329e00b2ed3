"""``/v1/graphs/{id}/backups``: back a graph up now, list its backups, and restore one.

A backup and a restore answer ``202 {"operation_id", ...}`` once checked
(``ApiContext.launch``); the flow runs in the background.
"""

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
    BACKUP_FLOW,
    RESTORE_FLOW,
    BackupConfig,
    Flow,
    RestoreConfig,
)
from provisioning_pipelines.services.access.accounts import Identity
from provisioning_pipelines.services.capacity import hosts
from provisioning_pipelines.services.graphs import backups, lifecycle
from provisioning_pipelines.services.graphs import records as graphs


def routes(api: ApiContext) -> list[Route]:
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
        page = pages.page_request(request, "backups")
        with api.database.session() as session:
            graph = graphs.visible_graph(session, request.path_params["graph_id"], user.user_id)
            found = backups.backups_page(session, graph.id, after=page.after, limit=page.limit)
            return JSONResponse(pages.page_answer(
                "backups", [backups.describe(backup) for backup in found.items], "backups",
                found.next_key))


    async def restore_backup(request: Request) -> Response:
        """Restore into the backed-up graph, or ``{"into_graph_id": ...}`` (the body is
        optional): a graph of the same owner that an active subscription pays for."""
        graph_id = request.path_params["graph_id"]
        backup_id = request.path_params["backup_id"]
        await run_in_threadpool(api.user_of, request)  # who asks, before reading their body
        body = await api.bodies.read_json(request, optional=True)
        into = body.get("into_graph_id")
        if into is not None and not isinstance(into, str):
            raise InvalidRequest("into_graph_id: expected a graph id (kg…)",
                                 field="into_graph_id")

        def check(session: Session, user: Identity) -> tuple[Flow, Any, dict[str, Any]]:
            plan = backups.plan_restore(session, user_id=user.user_id, graph_id=graph_id,
                                        backup_id=backup_id, into_graph_id=into)
            backups.check_restorable_here(session, plan)
            hosts.check_serving(session, plan.graph_id)
            config = RestoreConfig(user_id=user.user_id, graph_id=graph_id,
                                   backup_id=backup_id, into_graph_id=into)
            return RESTORE_FLOW, config, {"graph_id": plan.graph_id}

        return await api.launch(request, check)


    return [
        Route("/v1/graphs/{graph_id}/backups", guard(list_backups), methods=["GET"]),
        Route("/v1/graphs/{graph_id}/backups", guard(idempotent(api, back_up_graph)),
              methods=["POST"]),
        Route("/v1/graphs/{graph_id}/backups/{backup_id}/restore",
              guard(idempotent(api, restore_backup)), methods=["POST"]),
    ]
