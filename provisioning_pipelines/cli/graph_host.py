"""``host serve``: run this machine's graph host server (``provisioning_pipelines.hosts_server``).

Reads no app setting: a graph host knows nothing of the app database or billing, and takes its
token from ``GRAPH_HOST_TOKEN`` (``GRAPH_HOST_TOKEN_PREVIOUS`` during a rotation).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from provisioning_pipelines.cli.commands import without_settings


def add_commands(commands_: Any) -> None:
    host = commands_.add_parser("host", help="this machine's graph host server").add_subparsers(
        dest="host_command", required=True, metavar="COMMAND")
    serve = host.add_parser("serve", help="serve the graph files under --data-root over HTTP "
                            "(token in GRAPH_HOST_TOKEN); SIGTERM lets requests finish")
    serve.add_argument("--id", required=True, dest="host_id", help="the host's id")
    serve.add_argument("--tier", required=True, help="ladybug-standard, ladybug-large or "
                       "ladybug-xlarge")
    serve.add_argument("--capacity", type=int, required=True, help="how many graphs it holds")
    serve.add_argument("--data-root", required=True, help="folder of its graph files")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8100, help="port to listen on")
    serve.set_defaults(run=host_serve)


@without_settings
def host_serve(args: argparse.Namespace, _settings: None) -> int:
    from provisioning_pipelines.hosts_server.serve import serve

    return serve(host_id=args.host_id, tier=args.tier, capacity=args.capacity,
                 data_root=Path(args.data_root), address=args.host, port=args.port)
