"""``graphs move`` and ``hosts drain --move``: graphs taken to another host of their tier, each
as one operation its owner sees (``flows/move.py``), in this process or as a Dagster run."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from provisioning_pipelines.cli.commands import database_of, print_json

if TYPE_CHECKING:
    from provisioning_pipelines.settings import Settings


def add_move_command(graphs: Any) -> None:
    move = graphs.add_parser("move", help="move a graph, with its subgraphs, to another host "
                             "of its tier; writes wait a few seconds, reads go on")
    move.add_argument("graph_id", help="kg... (a top-level graph)")
    move.add_argument("--to", dest="to_host_id", help="the host it goes to, as hosts list "
                      "shows it (omitted: the host a move cut short was going to)")
    move.add_argument("--cancel", action="store_true", help="give up a move that has not "
                      "switched: the graph stays, and takes writes, where it was")
    move.add_argument("--via-dagster", action="store_true",
                      help="launch it as a Dagster run and wait for it")
    move.set_defaults(run=graphs_move)


def _executor(settings: Settings, via_dagster: bool) -> Any:
    from provisioning_pipelines.direct import build_executor

    if via_dagster:
        settings = settings.model_copy(update={"direct_graph_provisioning_enabled": False})
    return build_executor(settings)


def graphs_move(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.flows import MOVE_FLOW, MoveConfig

    if args.cancel:
        return _cancel(args, settings)
    executor = _executor(settings, args.via_dagster)
    try:
        made = executor.run(MOVE_FLOW, MoveConfig(graph_id=args.graph_id,
                                                  to_host_id=args.to_host_id))
    finally:
        executor.close()
    print_json({"operation_id": made.operation_id, **made.result})
    return 0


def _cancel(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.runtime.resources import build_resources
    from provisioning_pipelines.services.upkeep import moves

    directory = build_resources(settings)["graph_engine"].hosts()
    with database_of(settings).session() as session:
        move = moves.cancel(session, directory, args.graph_id,
                            lease_seconds=settings.claim_lease_seconds)
    print_json({"graph_id": args.graph_id, "moving": False, "host_id": move.source.host_id,
                "given_up_host_id": move.target.host_id})
    return 0


def drain_and_move(settings: Settings, host_id: str, tier: str) -> dict[str, Any]:
    """Move every graph of a draining host to the other hosts of its tier, the one with the
    most free slots first, each; one that fails is named and the rest go on."""
    from provisioning_pipelines.errors import ProvisioningError
    from provisioning_pipelines.flows import MOVE_FLOW, MoveConfig
    from provisioning_pipelines.services.upkeep import moves

    database = database_of(settings)
    with database.session() as session:
        graph_ids = moves.graphs_of(session, host_id)
    executor = _executor(settings, False)
    done, failed = [], []
    try:
        for graph_id in graph_ids:
            try:
                with database.session() as session:
                    to_host_id = moves.least_used_other(session, tier, host_id)
                made = executor.run(MOVE_FLOW, MoveConfig(graph_id=graph_id,
                                                          to_host_id=to_host_id))
            except ProvisioningError as exc:
                failed.append({"graph_id": graph_id, "error": exc.message})
                continue
            done.append({"graph_id": graph_id, "operation_id": made.operation_id,
                         "host_id": made.result.get("host_id"),
                         "write_window_seconds": made.result.get("write_window_seconds")})
    finally:
        executor.close()
    return {"moved": done, "failed": failed}
