"""The ``provisioning-pipelines`` command line: every subcommand, its options and their help.

A user's mistake (bad input, a missing record, an invalid setting, a wrong option) and a server
that cannot be reached (the API, the database, Redis, the Dagster webserver) are one line on
stderr and exit status 2, never a traceback. ``operations watch`` alone exits 1 for an operation
that failed.

Starting is cheap: this module and the command modules import only the standard library at the
top, each command imports what it uses when it runs, and the settings are read only for a
command that uses them. So ``--help`` loads no third-party package, and ``operations watch``
only httpx and rich (``tests/cli/test_startup.py`` keeps it so).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

from provisioning_pipelines.cli import commands, graph_host, hosts
from provisioning_pipelines.cli import graphs as lifecycle
from provisioning_pipelines.errors import ProvisioningError, SettingsError

if TYPE_CHECKING:
    from provisioning_pipelines.settings import Settings

API_URL = "http://127.0.0.1:8000"


class HelpWithDefaults(argparse.HelpFormatter):
    """Each option's help ends with its default, when it has one worth saying."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if action.default not in (None, False, [], "", argparse.SUPPRESS) and action.option_strings:
            help_text += " (default: %(default)s)"
        return help_text


class Parser(argparse.ArgumentParser):
    """Options' defaults shown in ``--help``; a usage mistake is one line, exit status 2."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", HelpWithDefaults)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> Parser:
    parser = Parser(prog="provisioning-pipelines",
                    description="Provision graph databases, subgraphs and repository access.")
    commands_ = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = commands_.add_parser("db", help="the app database").add_subparsers(
        dest="db_command", required=True, metavar="COMMAND")
    db.add_parser("upgrade", help="migrate the database to the newest schema").set_defaults(
        run=commands.db_upgrade)

    users = commands_.add_parser("users", help="users and API keys").add_subparsers(
        dest="users_command", required=True, metavar="COMMAND")
    create = users.add_parser("create", help="create a user (and organization) with an API key")
    create.add_argument("--email", required=True, help="the user's email address")
    create.add_argument("--org", help="organization name, joined if it exists (default: the "
                        "email's domain)")
    create.add_argument("--invoice-billing", action="store_true",
                        help="bill the new organization by invoice")
    create.add_argument("--json", action="store_true", help="print the answer as JSON")
    create.set_defaults(run=commands.users_create)

    subs = commands_.add_parser("subscriptions", help="subscriptions").add_subparsers(
        dest="subscriptions_command", required=True, metavar="COMMAND")
    sub_create = subs.add_parser("create", help="ask for a graph or a repository (unpaid)")
    sub_create.add_argument("--user", required=True, help="the subscriber's user id (usr_...)")
    sub_create.add_argument("--plan", help="ladybug-standard, ladybug-large (subgraphs: 10), "
                            "ladybug-xlarge (25), or <repository>-starter|advanced|unlimited "
                            "(default: ladybug-standard, or sec-starter with --repository)")
    sub_create.add_argument("--graph-name", default="My graph", help="name of the graph")
    sub_create.add_argument("--extension", action="append", default=[],
                            help="a schema extension to add (repeat): accounting, crm, "
                            "supply_chain, procurement")
    sub_create.add_argument("--entity", help="make an entity graph about this entity")
    sub_create.add_argument("--repository", help="ask for access to this shared repository "
                            "(sec) instead of a graph")
    sub_create.set_defaults(run=commands.subscriptions_create)
    sub_list = subs.add_parser("list", help="list subscriptions, oldest first")
    sub_list.add_argument("--user", help="only this user's")
    sub_list.add_argument("--status", help="only those in this status: pending_payment, "
                          "provisioning, queued, active, failed, canceled")
    sub_list.set_defaults(run=commands.subscriptions_list)
    sub_show = subs.add_parser("show", help="show one subscription")
    sub_show.add_argument("subscription_id", help="sub_...")
    sub_show.set_defaults(run=commands.subscriptions_show)
    sub_pay = subs.add_parser("pay", help="mark a subscription paid without provisioning it "
                              "(a sensor launches its Dagster run)")
    sub_pay.add_argument("subscription_id", help="sub_...")
    sub_pay.set_defaults(run=commands.subscriptions_pay)
    sub_retry = subs.add_parser("retry", help="put a failed subscription back to provisioning")
    sub_retry.add_argument("subscription_id", help="sub_...")
    sub_retry.set_defaults(run=commands.subscriptions_retry)

    webhook = commands_.add_parser("webhooks", aliases=["webhook"],
                                   help="billing webhooks: send, list, replay").add_subparsers(
        dest="webhook_command", required=True, metavar="COMMAND")
    listing = webhook.add_parser("list", help="the newest recorded billing events")
    listing.add_argument("--rejected", action="store_true",
                         help="only events that were genuine but could not be applied")
    listing.add_argument("--limit", type=int, default=100, help="how many events")
    listing.set_defaults(run=commands.webhooks_list)
    replay = webhook.add_parser("replay", help="apply a rejected event again (after a fix), "
                                "and provision what it pays for")
    replay.add_argument("event_id", help="the event's id, as webhooks list shows it")
    replay.set_defaults(run=commands.webhooks_replay)
    send = webhook.add_parser("send", help="sign an event with the configured secret and post it")
    send.add_argument("--subscription", required=True, help="the subscription it is about")
    send.add_argument("--type", default="checkout.session.completed", help="the event type")
    send.add_argument("--event-id", help="the event id (default: a new one)")
    send.add_argument("--url", default=API_URL, help="the API")
    send.set_defaults(run=commands.webhook_send)

    provision = commands_.add_parser("provision", help="provision a paid subscription now")
    provision.add_argument("kind", choices=["graph", "repository"], help="what it is for")
    provision.add_argument("--subscription", required=True, help="sub_...")
    provision.add_argument("--via-dagster", action="store_true",
                           help="launch the Dagster job through DAGSTER_WEBSERVER_URL instead")
    provision.add_argument("--retry-failed", action="store_true",
                           help="put a failed subscription back first")
    provision.set_defaults(run=commands.provision)

    subgraphs = commands_.add_parser("subgraphs", help="subgraphs").add_subparsers(
        dest="subgraphs_command", required=True, metavar="COMMAND")
    sg_create = subgraphs.add_parser("create", help="create a subgraph of a graph (its tier "
                                     "must allow subgraphs: ladybug-large or -xlarge)")
    sg_create.add_argument("--user", required=True, help="a user with the admin role on it")
    sg_create.add_argument("--parent", required=True, help="parent graph id (kg...)")
    sg_create.add_argument("--name", required=True, help="1 to 20 letters or digits")
    sg_create.add_argument("--description", help="what the subgraph is for")
    sg_create.add_argument("--fork", action="store_true", help="copy the parent's data")
    sg_create.set_defaults(run=commands.subgraphs_create)

    operations = commands_.add_parser("operations", help="operations").add_subparsers(
        dest="operations_command", required=True, metavar="COMMAND")
    op_watch = operations.add_parser("watch", help="follow an operation with a progress bar "
                                     "(exit 0 completed, 1 failed)")
    op_watch.add_argument("operation_id", help="op_...")
    op_watch.add_argument("--url", default=API_URL, help="the API")
    op_watch.add_argument("--api-key", required=True, help="the operation owner's API key")
    op_watch.set_defaults(run=commands.operations_watch)

    bench = commands_.add_parser("bench", help="run the flows benchmark")
    bench.add_argument("--runs", type=int, default=15, help="runs per flow and method")
    bench.add_argument("--launched-runs", type=int, default=0,
                       help="runs launched through a webserver and daemon (~3 s each)")
    bench.add_argument("--postgres", help="a PostgreSQL server URL, to measure on it "
                       "(default: SQLite)")
    bench.set_defaults(run=commands.bench)

    demo = commands_.add_parser("demo", help="the whole story on the embedded default")
    demo.set_defaults(run=commands.demo)

    dev = commands_.add_parser("dev", help="the API, the Dagster UI and the Dagster daemon "
                               "together, for trying things locally")
    dev.add_argument("--port", type=int, default=8000, help="the API's port")
    dev.add_argument("--dagster-port", type=int, default=3000, help="the Dagster UI's port")
    dev.add_argument("--hosts", type=int, default=0, metavar="N",
                     help="also N graph host servers on this machine (files and ports under "
                     "DATA_DIR/hosts), registered; the control plane then uses only them")
    dev.add_argument("--host-tier", action="append", metavar="TIER",
                     help="with --hosts: the hosts' tiers, round robin; repeat for several "
                     "(default: ladybug-standard, ladybug-large, ladybug-xlarge)")
    dev.set_defaults(run=commands.dev)

    lifecycle.add_commands(commands_, subgraphs, subs)
    hosts.add_commands(commands_)
    graph_host.add_commands(commands_)

    serve = commands_.add_parser("serve", help="run the HTTP API (webhooks, operations, SSE)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument("--workers", type=int, default=1,
                       help="API worker processes on one port (more than 1 needs DATABASE_URL "
                       "and REDIS_URL)")
    serve.set_defaults(run=commands.serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace, Settings | None], int] = args.run
    try:
        return run(args, _settings() if commands.reads_settings(run) else None)
    except BrokenPipeError:  # the reader went away (``| head``): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ProvisioningError, SettingsError) as exc:
        return _fail(getattr(exc, "message", str(exc)))
    except Exception as exc:
        reason = _unreachable(exc, args)
        if reason is None:
            raise  # a defect: the traceback is what whoever fixes it needs
        return _fail(reason)


def _unreachable(exc: Exception, args: argparse.Namespace) -> str | None:
    """One line for a server that cannot be reached, or None if it is something else."""
    httpx = sys.modules.get("httpx")  # not imported: the error cannot be one of its
    if httpx is not None and isinstance(exc, httpx.TransportError):
        url = getattr(args, "url", API_URL)
        return f"cannot reach the API at {url} ({type(exc).__name__}: {exc}); is it running?"

    from provisioning_pipelines.storage.errors import is_outage, what_is_down

    if is_outage(exc):
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return f"{what_is_down(exc)} unavailable: {detail[0] if detail else type(exc).__name__}"
    return None


def _settings() -> Settings:
    from provisioning_pipelines.settings import load_settings

    return load_settings()


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2
