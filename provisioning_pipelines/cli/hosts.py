"""``hosts``: an operator's capacity. Add a host, list them, drain one, take it back.

Adding capacity (or taking a drained host back) releases the tier's queue at once: as many
queued subscriptions as there are new free slots, oldest first, are provisioned here, in that
order, each continuing the operation its customer watches.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provisioning_pipelines.cli.commands import database_of, print_json

if TYPE_CHECKING:
    from provisioning_pipelines.settings import Settings


def add_commands(commands_: Any) -> None:
    hosts = commands_.add_parser("hosts", help="graph hosts: capacity per tier").add_subparsers(
        dest="hosts_command", required=True)
    listing = hosts.add_parser("list", help="every host, its slots used and free, and each "
                               "tier's queue")
    listing.set_defaults(run=hosts_list)
    add = hosts.add_parser("add", help="register a host: more slots for a tier; the tier's "
                           "queue is provisioned into them at once")
    add.add_argument("--tier", required=True, help="ladybug-standard, ladybug-large or "
                     "ladybug-xlarge")
    add.add_argument("--capacity", type=int, required=True, help="how many graphs it holds")
    add.add_argument("--data-root", help="folder of its graph files (default: "
                     "GRAPH_DATA_DIR/<host id>)")
    add.add_argument("--id", help="the host's id (default: <tier>-<n>)")
    add.set_defaults(run=hosts_add)
    drain = hosts.add_parser("drain", help="place no new graph on a host (its graphs stay)")
    drain.add_argument("host_id", help="as hosts list shows it")
    drain.set_defaults(run=hosts_drain)
    resume = hosts.add_parser("resume", help="take a drained host back; the tier's queue is "
                              "provisioned into its free slots")
    resume.add_argument("host_id", help="as hosts list shows it")
    resume.set_defaults(run=hosts_resume)


def hosts_list(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.services.capacity import hosts

    with database_of(settings).session() as session:
        hosts.ensure_local_hosts(session, settings.resolved_graph_data_dir,
                                 settings.local_host_capacity)
        found = hosts.list_hosts(session)
        waiting = hosts.queue_lengths(session)
        for host in found:
            print(f"{host.id:<28} {host.tier:<17} {host.status:<10} {host.slots_used:>7} used "
                  f"{host.capacity - host.slots_used:>7} free of {host.capacity:<7} "
                  f"{host.data_root}")
    for tier, count in sorted(waiting.items()):
        print(f"queue {tier}: {count} waiting")
    return 0


def hosts_add(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.services.capacity import hosts

    with database_of(settings).session() as session:
        hosts.ensure_local_hosts(session, settings.resolved_graph_data_dir,
                                 settings.local_host_capacity)
        host = hosts.add_host(session, tier=args.tier, capacity=args.capacity,
                              data_root=Path(args.data_root).resolve() if args.data_root
                              else None, graph_data_dir=settings.resolved_graph_data_dir,
                              host_id=args.id)
        added = {"host_id": host.id, "tier": host.tier, "capacity": host.capacity,
                 "data_root": host.data_root}
    print_json({**added, "provisioned": _drain_queue(settings, args.tier)})
    return 0


def hosts_drain(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.services.capacity import hosts

    with database_of(settings).session() as session:
        host = hosts.set_status(session, args.host_id, "draining")
        print(f"{host.id} drains: its {host.slots_used} graph(s) stay, no new one is placed "
              "on it")
    return 0


def hosts_resume(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.services.capacity import hosts

    with database_of(settings).session() as session:
        tier = hosts.set_status(session, args.host_id, "available").tier
    print_json({"host_id": args.host_id, "status": "available",
                "provisioned": _drain_queue(settings, tier)})
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
