"""The operator's commands for the rest of a resource's life: ``graphs`` (list, show, query,
delete, restore, backup, backups, restore-backup, move: ``cli/moves.py``), ``subgraphs
delete`` and ``subscriptions cancel``.

Each change runs its flow as one operation, in this process (or as a Dagster run with
``--via-dagster``), and prints the operation's result; the same checks as the API's come first.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from provisioning_pipelines.cli.commands import database_of, print_json
from provisioning_pipelines.cli.moves import add_move_command

if TYPE_CHECKING:
    from provisioning_pipelines.settings import Settings

OPERATOR = "operator"


def add_commands(commands_: Any, subgraphs: Any, subscriptions: Any) -> None:
    """Add ``graphs`` and the lifecycle subcommands of ``subgraphs`` and ``subscriptions``."""
    graphs = commands_.add_parser("graphs", help="graphs: list, delete, restore, back up"
                                  ).add_subparsers(dest="graph_command", required=True)
    listing = graphs.add_parser("list", help="top-level graphs, newest first")
    listing.add_argument("--user", help="only those this user owns or has a role on")
    listing.add_argument("--status", choices=["active", "suspended", "deleting", "deleted"],
                         help="only those in this status")
    listing.set_defaults(run=graphs_list)
    show = graphs.add_parser("show", help="one graph, with its subgraphs and backups")
    show.add_argument("graph_id", help="kg...")
    show.set_defaults(run=graphs_show)
    query = graphs.add_parser("query", help="run a Cypher query on a graph or subgraph "
                              "(read-only unless --write), within its tier's limits")
    query.add_argument("graph_id", help="kg... (or a subgraph's kg..._name)")
    query.add_argument("cypher", help='the query, e.g. "MATCH (e:Entity) RETURN e.name"')
    query.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                       help="a $parameter; its value is read as JSON when it is JSON (5, "
                       "true, [1,2], \"text\"), else taken as text; repeat for more")
    query.add_argument("--write", action="store_true", help="allow the query to write")
    query.add_argument("--json", action="store_true", help="print the answer as JSON")
    query.set_defaults(run=graphs_query)
    delete = graphs.add_parser("delete", help="suspend a graph (cancelling its subscription); "
                               "it is deleted after GRAPH_DELETION_GRACE_DAYS")
    delete.add_argument("graph_id", help="kg...")
    delete.add_argument("--now", action="store_true", help="delete it now, without the grace "
                        "(a final backup is still kept)")
    delete.add_argument("--reason", default="", help="why, for the audit log")
    delete.set_defaults(run=graphs_delete)
    restore = graphs.add_parser("restore", help="reactivate a suspended graph within its grace")
    restore.add_argument("graph_id", help="kg...")
    restore.set_defaults(run=graphs_restore)
    backup = graphs.add_parser("backup", help="back a graph up now")
    backup.add_argument("graph_id", help="kg...")
    backup.set_defaults(run=graphs_backup)
    backups = graphs.add_parser("backups", help="a graph's backups, newest first")
    backups.add_argument("graph_id", help="kg...")
    backups.set_defaults(run=graphs_backups)
    from_backup = graphs.add_parser("restore-backup", help="restore a backup into a paid graph, "
                                    "replacing its data (the backed-up graph by default)")
    from_backup.add_argument("graph_id", help="the graph the backup is of (kg...)")
    from_backup.add_argument("backup_id", help="bk_..., as graphs backups shows it")
    from_backup.add_argument("--into", dest="into_graph_id", metavar="GRAPH_ID",
                             help="restore into this graph of the same owner (active, paid "
                             "for); needed when the backed-up graph is deleted")
    from_backup.add_argument("--user", help="whose backup (default: the graph's owner, the "
                             "only one allowed)")
    from_backup.set_defaults(run=graphs_restore_backup)
    for command in (delete, restore, backup, from_backup):
        _via_dagster(command)
    add_move_command(graphs)

    sg_delete = subgraphs.add_parser("delete", help="delete a subgraph")
    sg_delete.add_argument("--user", required=True, help="a user with the admin role on it")
    sg_delete.add_argument("--parent", required=True, help="parent graph id (kg...)")
    sg_delete.add_argument("--name", required=True, help="the subgraph's name")
    sg_delete.set_defaults(run=subgraphs_delete)
    _via_dagster(sg_delete)

    cancel = subscriptions.add_parser("cancel", help="cancel a subscription now: its graph is "
                                      "suspended (deleted after the grace), its access revoked")
    cancel.add_argument("subscription_id", help="sub_...")
    cancel.add_argument("--reason", default="", help="why, for the audit log")
    cancel.set_defaults(run=subscriptions_cancel)
    _via_dagster(cancel)


def _via_dagster(command: argparse.ArgumentParser) -> None:
    command.add_argument("--via-dagster", action="store_true",
                         help="launch it as a Dagster run and wait for it")


def _run(args: argparse.Namespace, settings: Settings, flow: Any, config: Any) -> int:
    from provisioning_pipelines.direct import build_executor

    if args.via_dagster:
        settings = settings.model_copy(update={"direct_graph_provisioning_enabled": False})
    executor = build_executor(settings)
    try:
        made = executor.run(flow, config)
    finally:
        executor.close()
    print_json({"operation_id": made.operation_id, **made.result})
    return 0


def graphs_list(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.services.graphs import views

    with database_of(settings).session() as session:
        found = views.graphs_of(session, args.user) if args.user else \
            views.all_graphs(session)
    for graph in found:
        if args.status and graph["status"] != args.status:
            continue
        size = f"{graph['size_bytes']:,}" if graph["size_bytes"] is not None else "-"
        due = f"  deleted after {graph['delete_after'][:16]}" if graph["delete_after"] \
            and graph["status"] == "suspended" else ""
        print(f"{graph['graph_id']}  {graph['status']:<10} {graph['tier']:<16} "
              f"{size:>14} B  {graph['host_id']:<22} {len(graph['subgraphs'])} subgraph(s)"
              f"{due}")
    return 0


def graphs_show(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.services.graphs import backups, views
    from provisioning_pipelines.services.graphs import records as graphs

    with database_of(settings).session() as session:
        graph = graphs.top_level_graph(session, args.graph_id)
        shown = views.describe(session, graph)
        shown["backups"] = [backups.describe(b) for b in backups.backups_of(session, graph.id)]
    print_json(shown)
    return 0


def parse_params(given: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs: a value is JSON when it parses as JSON, else text."""
    import json

    from provisioning_pipelines.errors import InvalidRequest

    found: dict[str, Any] = {}
    for pair in given:
        name, equals, text = pair.partition("=")
        if not equals or not name:
            raise InvalidRequest(f"--param: {pair[:60]!r} is not NAME=VALUE", field="param")
        try:
            found[name] = json.loads(text, parse_constant=_no_constant)
        except ValueError:
            found[name] = text
    return found


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def graphs_query(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.errors import Forbidden
    from provisioning_pipelines.runtime.resources import build_resources
    from provisioning_pipelines.services.graphs import queries

    parameters = parse_params(args.param)
    with database_of(settings).session() as session:
        target = queries.operator_target(session, args.graph_id, write=args.write)
        host = queries.host_of(session, build_resources(settings)["graph_engine"].hosts(),
                               target)
    try:
        answer = queries.run(host, target, args.cypher, parameters,
                             settings.query_limits(target.tier))
    except Forbidden as exc:
        if args.write:
            raise
        raise Forbidden(f"{exc.message}; run it with --write to let it write",
                        field=exc.field) from None
    if args.json:
        print_json(answer.to_dict())
        return 0
    print_table(answer.columns, answer.rows)
    more = " (truncated: more rows than the tier's QUERY_MAX_ROWS)" if answer.truncated else ""
    print(f"{answer.row_count} row(s) in {answer.elapsed_ms:g} ms{more}")
    return 0


def print_table(columns: list[str], rows: list[list[Any]]) -> None:
    """Columns padded to their widest cell; a value that is not text is shown as JSON."""
    import json

    def cell(value: Any) -> str:
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        return shown if len(shown) <= 60 else shown[:57] + "..."

    cells = [[cell(value) for value in row] for row in rows]
    widths = [max([len(name), *(len(row[i]) for row in cells)]) for i, name in
              enumerate(columns)]
    if not columns:
        return
    print("  ".join(name.ljust(width) for name, width in zip(columns, widths, strict=True))
          .rstrip())
    print("  ".join("-" * width for width in widths))
    for row in cells:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True))
              .rstrip())


def graphs_delete(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.flows import (
        DELETION_FLOW,
        SUSPENSION_FLOW,
        DeletionConfig,
        LifecycleConfig,
    )

    _checked_graph(settings, args.graph_id, "delete_now" if args.now else "delete")
    if args.now:
        return _run(args, settings, DELETION_FLOW, DeletionConfig(
            graph_id=args.graph_id, at_once=True, actor=OPERATOR,
            reason=args.reason or "deleted at once by an operator"))
    return _run(args, settings, SUSPENSION_FLOW, LifecycleConfig(
        graph_id=args.graph_id, actor=OPERATOR, reason=args.reason or "deleted by an operator"))


def graphs_restore(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.flows import REACTIVATION_FLOW, LifecycleConfig

    _checked_graph(settings, args.graph_id, "reactivate")
    return _run(args, settings, REACTIVATION_FLOW, LifecycleConfig(
        graph_id=args.graph_id, actor=OPERATOR, reason="restored by an operator"))


def graphs_backup(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.flows import BACKUP_FLOW, BackupConfig
    from provisioning_pipelines.services.graphs import backups

    _checked_graph(settings, args.graph_id, "back_up")
    return _run(args, settings, BACKUP_FLOW, BackupConfig(
        graph_id=args.graph_id, backup_id=backups.backup_id_for("on_demand", args.graph_id),
        actor=OPERATOR))


def graphs_backups(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.services.graphs import backups
    from provisioning_pipelines.services.graphs import records as graphs

    with database_of(settings).session() as session:
        graph = graphs.top_level_graph(session, args.graph_id)
        found = [backups.describe(b) for b in backups.backups_of(session, graph.id)]
    for backup in found:
        print(f"{backup['backup_id']}  {backup['kind']:<9} {backup['created_at'][:19]}  "
              f"{backup['size_bytes']:>14,} B  sha256 {backup['checksum'][:12]}  "
              f"kept until {(backup['expires_at'] or '-')[:10]}")
    return 0


def graphs_restore_backup(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.flows import RESTORE_FLOW, RestoreConfig
    from provisioning_pipelines.services.graphs import records as graphs
    from provisioning_pipelines.services.graphs import restores

    with database_of(settings).session() as session:
        user_id = args.user or graphs.top_level_graph(session, args.graph_id).owner_user_id
        restores.plan_restore(session, user_id=user_id, graph_id=args.graph_id,
                              backup_id=args.backup_id, into_graph_id=args.into_graph_id)
    return _run(args, settings, RESTORE_FLOW, RestoreConfig(
        user_id=user_id, graph_id=args.graph_id, backup_id=args.backup_id,
        into_graph_id=args.into_graph_id))


def subgraphs_delete(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.flows import SUBGRAPH_DELETION_FLOW, SubgraphDeletionConfig
    from provisioning_pipelines.services.graphs import subgraphs

    with database_of(settings).session() as session:
        subgraphs.deletable_subgraph(session, user_id=args.user, parent_graph_id=args.parent,
                                     name=args.name)
    return _run(args, settings, SUBGRAPH_DELETION_FLOW, SubgraphDeletionConfig(
        user_id=args.user, parent_graph_id=args.parent, name=args.name))


def subscriptions_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.flows import SUSPENSION_FLOW, LifecycleConfig
    from provisioning_pipelines.services.billing import subscriptions as billing
    from provisioning_pipelines.services.graphs import lifecycle

    with database_of(settings).session() as session:
        lifecycle.check_cancellable(billing.get_subscription(session, args.subscription_id))
    return _run(args, settings, SUSPENSION_FLOW, LifecycleConfig(
        subscription_id=args.subscription_id, actor=OPERATOR,
        reason=args.reason or "cancelled by an operator"))


def _checked_graph(settings: Settings, graph_id: str, action: str) -> None:
    """Refuse, as the API does, what the graph's state does not allow."""
    from provisioning_pipelines.services.graphs import lifecycle
    from provisioning_pipelines.services.graphs import records as graphs

    with database_of(settings).session() as session:
        lifecycle.check_status(graphs.top_level_graph(session, graph_id), action)
