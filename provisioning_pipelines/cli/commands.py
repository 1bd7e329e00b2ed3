"""One handler per subcommand of ``provisioning-pipelines`` (the parser is in ``parser.py``).

Each takes the parsed arguments and the settings and returns the exit status. Imports are local,
even of the settings, so that ``--help`` and light commands do not pay for what they do not use;
a command that reads no setting says so with ``@without_settings`` and is given ``None``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from provisioning_pipelines.errors import ProvisioningError

if TYPE_CHECKING:
    import subprocess

    from provisioning_pipelines.cli.dev_hosts import Started
    from provisioning_pipelines.settings import Settings

Command = TypeVar("Command", bound=Callable[..., int])


def without_settings(command: Command) -> Command:
    """Mark a command that reads no setting: the settings (pydantic, the storage defaults) are
    then not loaded for it, and an invalid variable does not stop it."""
    command.reads_settings = False  # type: ignore[attr-defined]
    return command


def reads_settings(command: Callable[..., int]) -> bool:
    return getattr(command, "reads_settings", True)


def db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.storage.migrate import upgrade

    upgrade(settings.resolved_database_url)
    print(f"database at head: {settings.resolved_database_url}")
    return 0


def users_create(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.services.access import accounts

    with database_of(settings).session() as session:
        made = accounts.create_user(session, email=args.email, org_name=args.org,
                                    invoice_billing=args.invoice_billing)
    answer = {"user_id": made.user_id, "org_id": made.org_id, "api_key": made.api_key}
    if args.json:
        print(json.dumps(answer))
    else:
        print(f"user {made.user_id} in {made.org_id}\napi key (shown once): {made.api_key}")
    return 0


def serve(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.cli.serving import serve as serve_

    return serve_(args.host, args.port, args.workers, settings)


def database_of(settings: Settings):  # type: ignore[no-untyped-def]
    """The app database, upgraded first when it is the embedded default; any other must be at
    the newest schema already (``DatabaseNotMigrated``, one line, otherwise)."""
    from provisioning_pipelines.storage.db import get_database
    from provisioning_pipelines.storage.migrate import require_current, upgrade_once

    if settings.database_url is None:
        upgrade_once(settings.resolved_database_url)
    require_current(settings.resolved_database_url)
    return get_database(settings.resolved_database_url)


def print_json(value: object) -> None:
    print(json.dumps(value, indent=2, default=str))


def subscriptions_create(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.services import requests as subscriptions
    from provisioning_pipelines.services.billing import subscriptions as billing

    if args.repository:
        body = {"resource_type": "repository", "plan_name": args.plan or "sec-starter",
                "repository": args.repository}
    else:
        body = {"resource_type": "graph", "plan_name": args.plan or "ladybug-standard",
                "graph": {"name": args.graph_name or "My graph",
                          "schema_extensions": args.extension or [],
                          "entity": {"name": args.entity} if args.entity else None}}
    with database_of(settings).session() as session:
        subscription = subscriptions.request_subscription(session, args.user, body)
        print_json(billing.summary(subscription))
    return 0


def subscriptions_list(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.services.billing import subscriptions as billing

    with database_of(settings).session() as session:
        rows = billing.list_subscriptions(session, user_id=args.user, status=args.status)
        for row in rows:
            print(f"{row.id}  {row.status:<16} {row.resource_type:<10} {row.plan_name:<18} "
                  f"{row.resource_id or '-'}")
    return 0


def subscriptions_show(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.services.billing import subscriptions as billing
    from provisioning_pipelines.services.provisioning import queue

    with database_of(settings).session() as session:
        print_json(queue.summary(session, billing.get_subscription(session,
                                                                   args.subscription_id)))
    return 0


def subscriptions_pay(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.services.billing import subscriptions as billing

    with database_of(settings).session() as session:
        if not billing.mark_paid(session, args.subscription_id):
            status = billing.get_subscription(session, args.subscription_id).status
            raise ProvisioningError(f"subscription {args.subscription_id!r} is {status}, not "
                                    "pending_payment; nothing to pay")
    print(f"{args.subscription_id} is paid and waits in provisioning: a sensor launches its "
          "Dagster run (or run: provisioning-pipelines provision ...)")
    return 0


def subscriptions_retry(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.services.billing import subscriptions as billing
    from provisioning_pipelines.services.provisioning import claims

    with database_of(settings).session() as session:
        if not claims.reset_failed(session, args.subscription_id, actor="cli"):
            status = billing.get_subscription(session, args.subscription_id).status
            raise ProvisioningError(f"subscription {args.subscription_id!r} is {status}, not "
                                    "failed; nothing to retry")
    print(f"{args.subscription_id} is back in provisioning; the next trigger starts a new "
          "attempt (or run: provisioning-pipelines provision ...)")
    return 0


def webhook_send(args: argparse.Namespace, settings: Settings) -> int:
    import time

    import httpx

    from provisioning_pipelines.services.billing.events import billing_event, signed_delivery

    event = billing_event(args.subscription, args.type,
                          event_id=args.event_id or f"evt_cli_{int(time.time() * 1000)}",
                          customer="cus_cli", subscription=f"stripe_{args.subscription}")
    payload, headers = signed_delivery(event, settings.billing_webhook_secret)
    answer = httpx.post(f"{args.url}/v1/webhooks/billing", content=payload, timeout=30,
                        headers=headers)
    print(answer.text)
    return 0 if answer.is_success else 2


def webhooks_list(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.services import webhooks

    with database_of(settings).session() as session:
        rows = webhooks.list_events(session, rejected_only=args.rejected, limit=args.limit)
    for row in rows:
        reason = f"  {row['reason']}" if row["reason"] else ""
        print(f"{row['received_at']:%Y-%m-%d %H:%M:%S}  {row['status']:<8} {row['event_id']}  "
              f"{row['type']}{reason}")
    return 0


def webhooks_replay(args: argparse.Namespace, settings: Settings) -> int:
    """Apply a recorded event again and start what it starts, as the webhook would have."""
    from provisioning_pipelines.direct import build_executor
    from provisioning_pipelines.flows import started_by
    from provisioning_pipelines.services import webhooks

    with database_of(settings).session() as session:
        applied = webhooks.replay(session, args.event_id)
    answer: dict[str, object] = {"event_id": args.event_id, "ignored": applied.ignored,
                                 "change": applied.change,
                                 "paid": applied.paid, "subscription_id": applied.subscription_id}
    then = started_by(applied)
    if then is not None and settings.direct_graph_provisioning_enabled:
        executor = build_executor(settings)
        try:
            made = executor.run(then.flow, then.config)
        finally:
            executor.close()
        answer.update(operation_id=made.operation_id, result=made.result)
    print_json(answer)
    return 1 if applied.ignored else 0


def provision(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.direct import build_executor

    if args.via_dagster:
        settings = settings.model_copy(update={"direct_graph_provisioning_enabled": False})
    database_of(settings)
    executor = build_executor(settings)
    call = executor.graph if args.kind == "graph" else executor.repository
    try:
        made = call(args.subscription, retry_failed=args.retry_failed)
    finally:
        executor.close()
    print_json({"operation_id": made.operation_id, **made.result})
    return 0


def subgraphs_create(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.direct import build_executor

    database_of(settings)
    executor = build_executor(settings)
    try:
        made = executor.subgraph(args.user, args.parent, args.name,
                                 description=args.description, fork_parent=args.fork)
    finally:
        executor.close()
    print_json({"operation_id": made.operation_id, **made.result})
    return 0


@without_settings
def operations_watch(args: argparse.Namespace, settings: Settings | None) -> int:
    from provisioning_pipelines.cli.watch import watch

    watched = watch(args.url, args.api_key, args.operation_id)
    if watched.status == "completed":
        print_json(watched.result)
        return 0
    print(f"operation {args.operation_id} {watched.status}: {watched.error}", file=sys.stderr)
    return 1


@without_settings
def bench(args: argparse.Namespace, settings: Settings | None) -> int:
    import subprocess

    from provisioning_pipelines.cli.dev import ROOT

    command = [sys.executable, "-m", "benchmarks.bench_flows", "--runs", str(args.runs),
               "--launched-runs", str(args.launched_runs)]
    if args.postgres:
        command += ["--postgres", args.postgres]
    return subprocess.call(command, cwd=ROOT)


def dev(args: argparse.Namespace, settings: Settings) -> int:
    """The API, the Dagster UI and its daemon, with ``--hosts N`` N graph host servers beside
    them; Ctrl-C or a SIGTERM stops them all, Dagster first, then the API, then the hosts, each
    letting its work in flight finish (a SIGTERM once ended this process alone and left the
    rest running). A second signal while they stop is ignored: stopping half would leave
    processes behind."""
    import os
    import signal
    import subprocess
    from pathlib import Path

    from provisioning_pipelines.cli.dev import dagster_servers, stop

    if args.host_tier and not args.hosts:
        from provisioning_pipelines.errors import InvalidRequest

        raise InvalidRequest("--host-tier: only with --hosts N", field="host_tier")

    def interrupt(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    home = settings.prepare_dagster_home()
    if settings.dagster_home is None:  # made before the webserver and the daemon share it
        from provisioning_pipelines.cli.instance import make_embedded_storage

        make_embedded_storage(home)
    logs = settings.data_dir.resolve()  # not DAGSTER_HOME, which may be deploy/ in the checkout
    # The Dagster processes run in the checkout, the API here: relative folders would name two
    # different places, so both get them resolved from here.
    folders = {"DATA_DIR": settings.data_dir, "GRAPH_DATA_DIR": settings.graph_data_dir,
               "BACKUP_DIR": settings.backup_dir}
    env = {name: str(Path(value).resolve()) for name, value in folders.items() if value}
    with contextlib.ExitStack() as started:
        try:
            hosts: Started | None = None
            if args.hosts:
                from provisioning_pipelines.cli.dev_hosts import dev_hosts

                hosts = started.enter_context(dev_hosts(settings, args.hosts,
                                                        args.host_tier or ()))
                env.update(hosts.env)
            api = subprocess.Popen([sys.executable, "-m", "provisioning_pipelines.cli",
                                    "serve", "--port", str(args.port)],
                                   start_new_session=True, env={**os.environ, **env})
            started.callback(stop, api)
            with dagster_servers(home, port=args.dagster_port, log_dir=logs, env=env) as url:
                print(f"Dagster UI     {url}\n"
                      f"API            http://127.0.0.1:{args.port}\n"
                      f"operations     http://127.0.0.1:{args.port}/ui/\n"
                      f"Dagster logs   {logs}/webserver.log, {logs}/daemon.log", flush=True)
                if hosts is not None:
                    _print_hosts(hosts)
                print("Ctrl-C stops all three." if hosts is None else
                      "Ctrl-C stops them all: Dagster, then the API, then the hosts.", flush=True)
                with contextlib.suppress(KeyboardInterrupt):
                    _wait_for(api, hosts)
        except KeyboardInterrupt:
            pass  # stopped while the servers were starting
    return 0


def _print_hosts(hosts: Started) -> None:
    for index, host in enumerate(hosts.hosts):
        print(f"{'graph hosts' if index == 0 else '':<15}{host.host_id:<25} {host.url:<23} "
              f"{host.data_root}", flush=True)
    print(f"host logs      {hosts.folder}/<host id>.log\n"
          "other commands LOCAL_GRAPH_HOSTS=false "
          f"GRAPH_HOST_TOKEN=\"$(cat '{hosts.folder}/token')\" provisioning-pipelines ...",
          flush=True)


def _wait_for(api: subprocess.Popen[bytes], hosts: Started | None) -> None:
    """Until the API ends; a host that ends meanwhile is said once (its graphs are unavailable
    until dev starts it again; the API's probes mark it unhealthy)."""
    import subprocess

    if hosts is None:
        api.wait()
        return
    said: set[str] = set()
    while True:
        try:
            api.wait(timeout=1)
            return
        except subprocess.TimeoutExpired:
            pass
        for host_id, code in hosts.exited().items():
            if host_id not in said:
                said.add(host_id)
                print(f"warning: graph host {host_id} exited with {code}; see "
                      f"{hosts.folder}/{host_id}.log", file=sys.stderr, flush=True)


def demo(args: argparse.Namespace, settings: Settings) -> int:
    from provisioning_pipelines.cli.demo import run_demo

    return run_demo(settings)
