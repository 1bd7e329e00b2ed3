"""``hosts``: an operator's capacity. Add a host, list them, drain one, take it back.

Adding capacity (or taking a drained host back) releases the tier's queue at once: as many
queued subscriptions as there are new free slots, oldest first, are provisioned here, in that
order, each continuing the operation its customer watches.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provisioning_pipelines.cli.commands import database_of, print_json

if TYPE_CHECKING:
    from provisioning_pipelines.settings import Settings


def add_commands(commands_: Any) -> None:
    hosts = commands_.add_parser("hosts", help="graph hosts: capacity per tier").add_subparsers(
        dest="hosts_command", required=True)
    listing = hosts.add_parser("list", help="every host, its health, slots used and free, and "
                               "each tier's queue")
    listing.add_argument("--json", action="store_true", help="one JSON document")
    listing.set_defaults(run=hosts_list)
    add = hosts.add_parser("add", help="register a host: more slots for a tier; the tier's "
                           "queue is provisioned into them at once")
    add.add_argument("--url", help="a graph host server (host serve), http://addr:port: "
                     "registered with the graphs it holds, if it answers with GRAPH_HOST_TOKEN")
    add.add_argument("--tier", help="ladybug-standard, ladybug-large or ladybug-xlarge "
                     "(required without --url; with it, the host's own by default)")
    add.add_argument("--capacity", type=int, help="how many graphs it holds (required "
                     "without --url; with it, the host's own by default)")
    add.add_argument("--data-root", help="folder of its graph files (default: "
                     "GRAPH_DATA_DIR/<host id>); with --url, where the host server keeps them, "
                     "as shown (never opened here)")
    add.add_argument("--id", help="the host's id (default: <tier>-<n>; required with --url)")
    add.set_defaults(run=hosts_add)
    drain = hosts.add_parser("drain", help="place no new graph on a host (its graphs stay, "
                             "or go to the tier's other hosts with --move)")
    drain.add_argument("host_id", help="as hosts list shows it")
    drain.add_argument("--move", action="store_true", help="then move each of its graphs, "
                       "with their subgraphs, to the other hosts of its tier")
    drain.set_defaults(run=hosts_drain)
    resume = hosts.add_parser("resume", help="take a drained host back; the tier's queue is "
                              "provisioned into its free slots")
    resume.add_argument("host_id", help="as hosts list shows it")
    resume.set_defaults(run=hosts_resume)
    replace = hosts.add_parser("replace", help="a lost host: rebuild each of its graphs on a "
                               "healthy host from its newest backup (its row is kept, marked)")
    replace.add_argument("host_id", help="the lost host, as hosts list shows it")
    replace.add_argument("--to", dest="to_host_id", help="the host its graphs go to (default: "
                         "the healthy host of their tier with the most free slots, each)")
    replace.add_argument("--force", action="store_true", help="replace it even though it "
                         "answers its probes")
    replace.set_defaults(run=hosts_replace)
    clear = hosts.add_parser("clear", help="take a replaced host back, empty: what it holds "
                             "is quarantined on it")
    clear.add_argument("host_id", help="a host marked replaced")
    clear.set_defaults(run=hosts_clear)


def hosts_list(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.services.capacity import hosts
    from provisioning_pipelines.services.graphs import backups

    with database_of(settings).session() as session:
        _ensure_local_hosts(session, settings)
        ages = backups.backup_ages(session)
        found = [_shown(host, [age for age in ages if age.host_id == host.id])
                 for host in hosts.list_hosts(session)]
        waiting = hosts.queue_lengths(session)
    if args.json:
        print_json({"hosts": found, "queues": dict(sorted(waiting.items()))})
        return 0
    for host in found:
        print(f"{host['host_id']:<28} {host['tier']:<17} {host['status']:<10} "
              f"{host['health']:<9} {host['slots_used']:>7} used {host['slots_free']:>7} free "
              f"of {host['capacity']:<7} {host['url'] or host['data_root']} "
              f"last seen {host['last_seen_at'] or '-'}")
        print(f"{'':<28} backups: {_backups_line(host['backups'])}")
    for tier, count in sorted(waiting.items()):
        print(f"queue {tier}: {count} waiting")
    return 0


def _ensure_local_hosts(session: Any, settings: Settings) -> None:
    """A fresh install's local hosts, unless ``LOCAL_GRAPH_HOSTS=false``: else a control plane
    on host servers would get local hosts from a mere ``hosts list``, and place graphs there."""
    from provisioning_pipelines.services.capacity import hosts

    if settings.local_graph_hosts:
        hosts.ensure_local_hosts(session, settings.resolved_graph_data_dir,
                                 settings.local_host_capacity)


def _shown(host: Any, ages: list[Any] | None = None) -> dict[str, Any]:
    return {"host_id": host.id, "tier": host.tier, "url": host.url, "health": host.health,
            "last_seen_at": host.last_seen_at.isoformat() if host.last_seen_at else None,
            "slots_used": host.slots_used, "slots_free": max(0, host.capacity - host.slots_used),
            "capacity": host.capacity, "status": host.status,
            "draining": host.status == "draining", "data_root": host.data_root,
            # The age of each of its live graphs' newest backup, stalest first.
            "backups": [{"graph_id": age.graph_id, "age_seconds": age.age_seconds,
                         "stale": age.stale} for age in ages or []]}


def _backups_line(ages: list[dict[str, Any]]) -> str:
    """The host's graphs' newest backups in a few words: how many are stale, the oldest."""
    if not ages:
        return "no live graph"
    without = sum(1 for age in ages if age["age_seconds"] is None)
    timed = [age for age in ages if age["age_seconds"] is not None]
    stale = sum(1 for age in ages if age["stale"])
    parts = [f"{len(ages)} graph(s), {stale} stale"]
    if timed:
        oldest = max(timed, key=lambda age: age["age_seconds"])
        parts.append(f"oldest newest-backup {oldest['age_seconds'] / 3600:.1f} h "
                     f"({oldest['graph_id']})")
    if without:
        parts.append(f"{without} without a backup yet")
    return ", ".join(parts)


def hosts_add(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.errors import InvalidRequest
    from provisioning_pipelines.services.capacity import hosts, remote
    from provisioning_pipelines.storage.hosts.client import HostClient

    if args.url is None and (args.tier is None or args.capacity is None):
        raise InvalidRequest("--tier and --capacity are required without --url")
    if args.url is not None and not args.id:
        raise InvalidRequest("--id is required with --url: the host's own id")
    with database_of(settings).session() as session:
        _ensure_local_hosts(session, settings)
        if args.url is not None:
            # The refusal is one line naming the host; the client's own log of it is not
            # repeated on the terminal.
            logging.getLogger(HostClient.__module__).setLevel(logging.ERROR)
            host = remote.add_remote_host(
                session, host_id=args.id, url=args.url, token=settings.graph_host_token,
                graph_data_dir=settings.resolved_graph_data_dir, tier=args.tier,
                capacity=args.capacity,
                data_root=Path(args.data_root) if args.data_root else None)  # the host's path
        else:
            host = hosts.add_host(session, tier=args.tier, capacity=args.capacity,
                                  data_root=Path(args.data_root).resolve() if args.data_root
                                  else None, graph_data_dir=settings.resolved_graph_data_dir,
                                  host_id=args.id)
        added = {"host_id": host.id, "tier": host.tier, "capacity": host.capacity,
                 "slots_used": host.slots_used, "url": host.url, "data_root": host.data_root}
    print_json({**added, "provisioned": _drain_queue(settings, added["tier"])})
    return 0


def hosts_drain(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.services.capacity import hosts

    with database_of(settings).session() as session:
        host = hosts.set_status(session, args.host_id, "draining")
        held, tier = host.slots_used, host.tier
    if not args.move:
        print(f"{args.host_id} drains: its {held} graph(s) stay, no new one is placed on it")
        return 0
    from provisioning_pipelines.cli.moves import drain_and_move

    moved = drain_and_move(settings, args.host_id, tier)
    print_json({"host_id": args.host_id, "status": "draining", **moved})
    return 1 if moved["failed"] else 0


def hosts_resume(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.services.capacity import hosts

    with database_of(settings).session() as session:
        tier = hosts.set_status(session, args.host_id, "available").tier
    print_json({"host_id": args.host_id, "status": "available",
                "provisioned": _drain_queue(settings, tier)})
    return 0


def hosts_replace(args: argparse.Namespace, settings: Settings) -> int:
    """Mark the host replaced, then rebuild its graphs one by one, each as an operation its
    owner sees; run again after a failure, it continues where it stopped."""
    from provisioning_pipelines.direct import build_executor
    from provisioning_pipelines.errors import ProvisioningError
    from provisioning_pipelines.flows import REPLACEMENT_FLOW, ReplacementConfig
    from provisioning_pipelines.services.upkeep import replacement

    with database_of(settings).session() as session:
        replacement.mark_replaced(session, args.host_id, force=args.force)
        graph_ids = replacement.graphs_on(session, args.host_id)
    executor = build_executor(settings)
    done, failed = [], []
    try:
        for graph_id in graph_ids:
            try:
                made = executor.run(REPLACEMENT_FLOW, ReplacementConfig(
                    graph_id=graph_id, lost_host_id=args.host_id, to_host_id=args.to_host_id))
            except ProvisioningError as exc:
                failed.append({"graph_id": graph_id, "error": exc.message})
                continue
            done.append({"graph_id": graph_id, "operation_id": made.operation_id,
                         "host_id": made.result.get("host_id"),
                         "replaced_from": made.result.get("replaced_from")})
    finally:
        executor.close()
    print_json({"host_id": args.host_id, "status": "replaced", "graphs": done,
                "failed": failed})
    return 1 if failed else 0


def hosts_clear(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.runtime.resources import build_resources
    from provisioning_pipelines.services.upkeep import replacement

    directory = build_resources(settings)["graph_engine"].hosts()
    with database_of(settings).session() as session:
        moved = replacement.clear(session, directory, args.host_id)
    print_json({"host_id": args.host_id, "status": "available", "quarantined": moved})
    return 0


def _drain_queue(settings: Settings, tier: str) -> list[dict[str, Any]]:
    """Provision, in order, what the tier's queue gets of the free slots."""
    from provisioning_pipelines.direct import build_executor
    from provisioning_pipelines.flows import GRAPH_FLOW, SubscriptionConfig
    from provisioning_pipelines.services.provisioning import claims, queue

    with database_of(settings).session() as session:
        released = queue.release(session, tier)
    if not released:
        return []
    executor = build_executor(settings)
    done = []
    try:
        for due in released:
            try:
                made = executor.run(GRAPH_FLOW, SubscriptionConfig(
                    subscription_id=due.subscription_id),
                    operation_id=executor.live_operation(due.operation_id),
                    wait_for_holder=False)
                done.append({"subscription_id": due.subscription_id,
                             "operation_id": made.operation_id,
                             "status": made.result.get("status"),
                             "graph_id": made.result.get("resource_id")})
            except claims.ClaimHeld:
                done.append({"subscription_id": due.subscription_id,
                             "status": "taken by another worker"})
    finally:
        executor.close()
    return done
