"""The rest of a graph's life over HTTP: delete (suspend, then delete after the grace), restore
within the grace, back up, restore a backup as a new graph, delete a subgraph, cancel a
subscription.

Each answers ``202 {"operation_id"}`` once the request has been checked (who asks, and whether
the graph's state allows it: a refusal is a 4xx now, not a failed operation later); the flow runs
in the background and its progress is the operation's event stream.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from provisioning_pipelines.api.context import ApiContext, guard
from provisioning_pipelines.flows import (
    BACKUP_FLOW,
    REACTIVATION_FLOW,
    RESTORE_FLOW,
    SUBGRAPH_DELETION_FLOW,
    SUSPENSION_FLOW,
    BackupConfig,
    Flow,
    LifecycleConfig,
    RestoreConfig,
    SubgraphDeletionConfig,
)
from provisioning_pipelines.services.access.accounts import Identity
from provisioning_pipelines.services.billing import subscriptions as billing
from provisioning_pipelines.services.graphs import backups, lifecycle, subgraphs
from provisioning_pipelines.services.graphs import records as graphs

Check = Callable[[Session, Identity], tuple[Flow, Any, dict[str, Any]]]


def routes(api: ApiContext) -> list[Route]:
    async def launch(request: Request, check: Check) -> Response:
        """Check the request, then run the flow it asks for in the background."""

        def checked() -> tuple[Identity, Flow, Any, dict[str, Any]]:
            user = api.user_of(request)
            with api.database.session() as session:
                flow, config, extra = check(session, user)
            return user, flow, config, extra

        user, flow, config, extra = await run_in_threadpool(checked)
        operation_id = await run_in_threadpool(api.executor.open_operation,
                                               flow.operation_kind, user.user_id)
        api.start(api.executor.run, flow, config, operation_id=operation_id)
        return JSONResponse({"operation_id": operation_id, **extra}, status_code=202)

    async def delete_graph(request: Request) -> Response:
        graph_id = request.path_params["graph_id"]

        def check(session: Session, user: Identity) -> tuple[Flow, Any, dict[str, Any]]:
            graph = lifecycle.managed_graph(session, graph_id, user.user_id)
            lifecycle.check_status(graph, "delete")
            return SUSPENSION_FLOW, LifecycleConfig(
                graph_id=graph_id, actor=user.user_id, reason="deleted by the user"), {}

        return await launch(request, check)

    async def restore_graph(request: Request) -> Response:
        graph_id = request.path_params["graph_id"]

        def check(session: Session, user: Identity) -> tuple[Flow, Any, dict[str, Any]]:
            graph = lifecycle.managed_graph(session, graph_id, user.user_id)
            lifecycle.check_status(graph, "reactivate")
            return REACTIVATION_FLOW, LifecycleConfig(
                graph_id=graph_id, actor=user.user_id, reason="restored by the user"), {}

        return await launch(request, check)

    async def back_up_graph(request: Request) -> Response:
        graph_id = request.path_params["graph_id"]

        def check(session: Session, user: Identity) -> tuple[Flow, Any, dict[str, Any]]:
            graph = lifecycle.managed_graph(session, graph_id, user.user_id)
            lifecycle.check_status(graph, "back_up")
            backup_id = backups.backup_id_for("on_demand", graph_id)
            config = BackupConfig(graph_id=graph_id, kind="on_demand", backup_id=backup_id,
                                  actor=user.user_id)
            return BACKUP_FLOW, config, {"backup_id": backup_id}

        return await launch(request, check)

    def list_backups(request: Request) -> Response:
        user = api.user_of(request)
        with api.database.session() as session:
            graph = graphs.visible_graph(session, request.path_params["graph_id"], user.user_id)
            found = backups.backups_of(session, graph.id)
            return JSONResponse({"backups": [backups.describe(backup) for backup in found]})

    async def restore_backup(request: Request) -> Response:
        graph_id = request.path_params["graph_id"]
        backup_id = request.path_params["backup_id"]

        def check(session: Session, user: Identity) -> tuple[Flow, Any, dict[str, Any]]:
            restore_id = uuid.uuid4().hex
            plan = backups.plan_restore(session, user_id=user.user_id, graph_id=graph_id,
                                        backup_id=backup_id, restore_id=restore_id)
            config = RestoreConfig(user_id=user.user_id, graph_id=graph_id,
                                   backup_id=backup_id, restore_id=restore_id)
            return RESTORE_FLOW, config, {"graph_id": plan.graph_id}

        return await launch(request, check)

    async def delete_subgraph(request: Request) -> Response:
        parent_id = request.path_params["graph_id"]
        name = request.path_params["name"]

        def check(session: Session, user: Identity) -> tuple[Flow, Any, dict[str, Any]]:
            subgraphs.deletable_subgraph(session, user_id=user.user_id,
                                         parent_graph_id=parent_id, name=name)
            return SUBGRAPH_DELETION_FLOW, SubgraphDeletionConfig(
                user_id=user.user_id, parent_graph_id=parent_id, name=name), {}

        return await launch(request, check)

    async def cancel_subscription(request: Request) -> Response:
        subscription_id = request.path_params["subscription_id"]

        def check(session: Session, user: Identity) -> tuple[Flow, Any, dict[str, Any]]:
            subscription = billing.subscription_of_user(session, subscription_id, user.user_id)
            lifecycle.check_cancellable(subscription)
            return SUSPENSION_FLOW, LifecycleConfig(
                subscription_id=subscription_id, actor=user.user_id,
                reason="cancelled by the user"), {}

        return await launch(request, check)

    return [
        Route("/v1/graphs/{graph_id}", guard(delete_graph), methods=["DELETE"]),
        Route("/v1/graphs/{graph_id}/restore", guard(restore_graph), methods=["POST"]),
        Route("/v1/graphs/{graph_id}/backups", guard(list_backups), methods=["GET"]),
        Route("/v1/graphs/{graph_id}/backups", guard(back_up_graph), methods=["POST"]),
        Route("/v1/graphs/{graph_id}/backups/{backup_id}/restore", guard(restore_backup),
              methods=["POST"]),
        Route("/v1/graphs/{graph_id}/subgraphs/{name}", guard(delete_subgraph),
              methods=["DELETE"]),
        Route("/v1/subscriptions/{subscription_id}", guard(cancel_subscription),
              methods=["DELETE"]),
    ]
