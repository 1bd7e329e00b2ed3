"""The ``provisioning-pipelines`` command: its parser and one handler per subcommand.

A user's mistake (bad input, a missing record, an invalid setting) is one line on stderr and exit
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from provisioning_pipelines.errors import ProvisioningError
from provisioning_pipelines.settings import Settings, SettingsError, load_settings


def _db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.storage.migrate import upgrade

    upgrade(settings.resolved_database_url)
    print(f"database at head: {settings.resolved_database_url}")
    return 0


def _users_create(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.services import accounts
    from provisioning_pipelines.storage.db import get_database
    from provisioning_pipelines.storage.migrate import upgrade_once

    if settings.database_url is None:
        upgrade_once(settings.resolved_database_url)
    with get_database(settings.resolved_database_url).session() as session:
        made = accounts.create_user(session, email=args.email, org_name=args.org,
                                    invoice_billing=args.invoice_billing)
    answer = {"user_id": made.user_id, "org_id": made.org_id, "api_key": made.api_key}
    if args.json:
        print(json.dumps(answer))
    else:
        print(f"user {made.user_id} in {made.org_id}\napi key (shown once): {made.api_key}")
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from provisioning_pipelines.api.app import create_app
    from provisioning_pipelines.storage.migrate import upgrade_once

    if settings.database_url is None:
        upgrade_once(settings.resolved_database_url)
    settings.prepare_dagster_home()
    logging.basicConfig(level=logging.INFO, format="%(levelname)-9s %(name)s: %(message)s")
    app = create_app(settings)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.should_exit and sig == signal.SIGTERM:
                self.force_exit = True  # uvicorn forces only on a second SIGINT
            super().handle_exit(sig, frame)

    server = Server(uvicorn.Config(
        app, host=args.host, port=args.port, log_level="info",
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_seconds))))
    app.state.api.server = server  # so a second SIGTERM cuts the grace short
    server.run()
    if app.state.api.unfinished:
        # Their claims were given back; the threads still in them must not hold up the exit.
        os._exit(0)
    return 0


def _database(settings: Settings):  # type: ignore[no-untyped-def]
    from provisioning_pipelines.storage.db import get_database
    from provisioning_pipelines.storage.migrate import upgrade_once

    if settings.database_url is None:
        upgrade_once(settings.resolved_database_url)
    return get_database(settings.resolved_database_url)


def _print(value: object) -> None:
    print(json.dumps(value, indent=2, default=str))


def _subscriptions_create(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.services import billing, subscriptions

    if args.repository:
        body = {"resource_type": "repository", "plan_name": args.plan or "sec-starter",
                "repository": args.repository}
    else:
        body = {"resource_type": "graph", "plan_name": args.plan or "ladybug-standard",
                "graph": {"name": args.graph_name or "My graph",
                          "schema_extensions": args.extension or [],
                          "entity": {"name": args.entity} if args.entity else None}}
    with _database(settings).session() as session:
        subscription = subscriptions.request_subscription(session, args.user, body)
        _print(billing.summary(subscription))
    return 0


def _subscriptions_list(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.services import billing

    with _database(settings).session() as session:
        rows = billing.list_subscriptions(session, user_id=args.user, status=args.status)
        for row in rows:
            print(f"{row.id}  {row.status:<16} {row.resource_type:<10} {row.plan_name:<18} "
                  f"{row.resource_id or '-'}")
    return 0


def _subscriptions_show(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.services import billing

    with _database(settings).session() as session:
        _print(billing.summary(billing.get_subscription(session, args.subscription_id)))
    return 0


def _subscriptions_retry(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.services import billing, claims

    with _database(settings).session() as session:
        if not claims.reset_failed(session, args.subscription_id, actor="cli"):
            status = billing.get_subscription(session, args.subscription_id).status
            raise ProvisioningError(f"subscription {args.subscription_id!r} is {status}, not "
                                    "failed; nothing to retry")
    print(f"{args.subscription_id} is back in provisioning; the next trigger starts a new "
          "attempt (or run: provisioning-pipelines provision ...)")
    return 0


def _webhook_send(args: argparse.Namespace, settings: Settings) -> int:
    import time

    import httpx

    from provisioning_pipelines.services import webhooks

    event = {"id": args.event_id or f"evt_cli_{int(time.time() * 1000)}",
             "type": args.type, "created": int(time.time()),
             "data": {"object": {"payment_status": "paid", "customer": "cus_cli",
                                 "subscription": f"stripe_{args.subscription}",
                                 "metadata": {"subscription_id": args.subscription}}}}
    payload = json.dumps(event).encode()
    answer = httpx.post(f"{args.url}/v1/webhooks/billing", content=payload, timeout=30,
                        headers={"Stripe-Signature": webhooks.sign(
                            payload, settings.billing_webhook_secret),
                            "Content-Type": "application/json"})
    print(answer.text)
    return 0 if answer.is_success else 1


def _webhooks_list(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.services import webhooks

    with _database(settings).session() as session:
        rows = webhooks.list_events(session, rejected_only=args.rejected, limit=args.limit)
    for row in rows:
        reason = f"  {row['reason']}" if row["reason"] else ""
        print(f"{row['received_at']:%Y-%m-%d %H:%M:%S}  {row['status']:<8} {row['event_id']}  "
              f"{row['type']}{reason}")
    return 0


def _webhooks_replay(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.direct import build_executor
    from provisioning_pipelines.flows import SUBSCRIPTION_FLOWS, SubscriptionConfig
    from provisioning_pipelines.services import webhooks

    with _database(settings).session() as session:
        applied = webhooks.replay(session, args.event_id)
    answer: dict[str, object] = {"event_id": args.event_id, "ignored": applied.ignored,
                                 "paid": applied.paid, "subscription_id": applied.subscription_id}
    if applied.paid and settings.direct_graph_provisioning_enabled:
        executor = build_executor(settings)
        try:
            made = executor.run(SUBSCRIPTION_FLOWS[str(applied.resource_type)],
                                SubscriptionConfig(subscription_id=str(applied.subscription_id)))
        finally:
            executor.close()
        answer.update(operation_id=made.operation_id, result=made.result)
    _print(answer)
    return 1 if applied.ignored else 0


def _provision(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.direct import build_executor

    if args.via_dagster:
        settings = settings.model_copy(update={"direct_graph_provisioning_enabled": False})
    _database(settings)
    executor = build_executor(settings)
    call = executor.graph if args.kind == "graph" else executor.repository
    try:
        made = call(args.subscription, retry_failed=args.retry_failed)
    finally:
        executor.close()
    _print({"operation_id": made.operation_id, **made.result})
    return 0


def _subgraphs_create(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.direct import build_executor

    _database(settings)
    executor = build_executor(settings)
    try:
        made = executor.subgraph(args.user, args.parent, args.name,
                                 description=args.description, fork_parent=args.fork)
    finally:
        executor.close()
    _print({"operation_id": made.operation_id, **made.result})
    return 0


def _operations_watch(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.cli.watch import watch

    watched = watch(args.url, args.api_key, args.operation_id)
    if watched.status == "completed":
        _print(watched.result)
        return 0
    print(f"operation {args.operation_id} {watched.status}: {watched.error}", file=sys.stderr)
    return 1


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    import subprocess

    from provisioning_pipelines.cli.dev import ROOT

    command = [sys.executable, "-m", "benchmarks.bench_flows", "--runs", str(args.runs),
               "--launched-runs", str(args.launched_runs)]
    if args.postgres:
        command += ["--postgres", args.postgres]
    return subprocess.call(command, cwd=ROOT)


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.cli.demo import run_demo

    return run_demo(settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="provisioning-pipelines", description=__doc__.split(
        "\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    db = commands.add_parser("db", help="the app database").add_subparsers(dest="db_command",
                                                                           required=True)
    db.add_parser("upgrade", help="migrate the database to the newest schema").set_defaults(
        run=_db_upgrade)

    users = commands.add_parser("users", help="users and API keys").add_subparsers(
        dest="users_command", required=True)
    create = users.add_parser("create", help="create a user (and organization) with an API key")
    create.add_argument("--email", required=True)
    create.add_argument("--org", help="organization name (joined if it exists)")
    create.add_argument("--invoice-billing", action="store_true",
                        help="bill the new organization by invoice")
    create.add_argument("--json", action="store_true", help="print JSON")
    create.set_defaults(run=_users_create)

    subs = commands.add_parser("subscriptions", help="subscriptions").add_subparsers(
        dest="subscriptions_command", required=True)
    sub_create = subs.add_parser("create", help="ask for a graph or a repository (unpaid)")
    sub_create.add_argument("--user", required=True, help="user id (usr_...)")
    sub_create.add_argument("--plan", help="ladybug-standard|large|xlarge, or sec-starter ...")
    sub_create.add_argument("--graph-name", help="name of the graph to make")
    sub_create.add_argument("--extension", action="append", help="schema extension (repeat)")
    sub_create.add_argument("--entity", help="make an entity graph about this entity")
    sub_create.add_argument("--repository", help="ask for repository access instead (sec)")
    sub_create.set_defaults(run=_subscriptions_create)
    sub_list = subs.add_parser("list", help="list subscriptions")
    sub_list.add_argument("--user")
    sub_list.add_argument("--status")
    sub_list.set_defaults(run=_subscriptions_list)
    sub_show = subs.add_parser("show", help="show one subscription")
    sub_show.add_argument("subscription_id")
    sub_show.set_defaults(run=_subscriptions_show)
    sub_retry = subs.add_parser("retry", help="put a failed subscription back to provisioning")
    sub_retry.add_argument("subscription_id")
    sub_retry.set_defaults(run=_subscriptions_retry)

    webhook = commands.add_parser("webhooks", aliases=["webhook"],
                                  help="billing webhooks: send, list, replay").add_subparsers(
        dest="webhook_command", required=True)
    listing = webhook.add_parser("list", help="the newest recorded billing events")
    listing.add_argument("--rejected", action="store_true",
                         help="only events that were genuine but could not be applied")
    listing.add_argument("--limit", type=int, default=100, help="how many (default 100)")
    listing.set_defaults(run=_webhooks_list)
    replay = webhook.add_parser("replay", help="apply a rejected event again (after a fix), "
                                "and provision what it pays for")
    replay.add_argument("event_id")
    replay.set_defaults(run=_webhooks_replay)
    send = webhook.add_parser("send", help="sign an event with the configured secret and post it")
    send.add_argument("--subscription", required=True)
    send.add_argument("--type", default="checkout.session.completed")
    send.add_argument("--event-id")
    send.add_argument("--url", default="http://127.0.0.1:8000")
    send.set_defaults(run=_webhook_send)

    provision = commands.add_parser("provision", help="provision a paid subscription now")
    provision.add_argument("kind", choices=["graph", "repository"])
    provision.add_argument("--subscription", required=True)
    provision.add_argument("--via-dagster", action="store_true",
                           help="launch the Dagster job through the webserver instead")
    provision.add_argument("--retry-failed", action="store_true",
                           help="put a failed subscription back first")
    provision.set_defaults(run=_provision)

    subgraphs = commands.add_parser("subgraphs", help="subgraphs").add_subparsers(
        dest="subgraphs_command", required=True)
    sg_create = subgraphs.add_parser("create", help="create a subgraph of a graph")
    sg_create.add_argument("--user", required=True)
    sg_create.add_argument("--parent", required=True, help="parent graph id (kg...)")
    sg_create.add_argument("--name", required=True, help="1 to 20 letters or digits")
    sg_create.add_argument("--description")
    sg_create.add_argument("--fork", action="store_true", help="copy the parent's data")
    sg_create.set_defaults(run=_subgraphs_create)

    operations = commands.add_parser("operations", help="operations").add_subparsers(
        dest="operations_command", required=True)
    op_watch = operations.add_parser("watch", help="follow an operation with a progress bar")
    op_watch.add_argument("operation_id")
    op_watch.add_argument("--url", default="http://127.0.0.1:8000")
    op_watch.add_argument("--api-key", required=True)
    op_watch.set_defaults(run=_operations_watch)

    bench = commands.add_parser("bench", help="run the flows benchmark")
    bench.add_argument("--runs", type=int, default=15)
    bench.add_argument("--launched-runs", type=int, default=0)
    bench.add_argument("--postgres")
    bench.set_defaults(run=_bench)

    demo = commands.add_parser("demo", help="the whole story on the embedded default")
    demo.set_defaults(run=_demo)

    serve = commands.add_parser("serve", help="run the HTTP API (webhooks, operations, SSE)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(run=_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace, Settings], int] = args.run
    try:
        return run(args, load_settings())
    except (ProvisioningError, SettingsError) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2


