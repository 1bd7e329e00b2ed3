"""The ``provisioning-pipelines`` command.

A user's mistake (bad input, a missing record, an invalid setting) is one line on stderr and exit
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

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
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info")
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
