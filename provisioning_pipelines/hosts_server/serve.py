"""``host serve``: one graph host server on one machine, until SIGTERM.

Its token comes from the environment (``GRAPH_HOST_TOKEN``, and ``GRAPH_HOST_TOKEN_PREVIOUS``
while a rotation is under way), never from the command line, where ``ps`` would show it. On
SIGTERM uvicorn stops accepting connections and lets requests in flight finish (up to
``GRAPH_HOST_SHUTDOWN_GRACE_SECONDS``, 30 by default) before the process ends. A request body
not received whole within ``GRAPH_HOST_BODY_TIMEOUT_SECONDS`` (10) is answered 408. Before
serving, it removes what calls cut short by its last death (SIGKILL, power loss) left half-made
on its disk (``LocalHost.remove_leftovers``): no call of this process runs yet. Its backups go
to ``BACKUP_STORE_URL`` (an S3 store every host shares, so a backup taken here can be restored on
any host) or, unset, to a folder on its own disk.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from provisioning_pipelines.errors import SettingsError
from provisioning_pipelines.storage.backup_store import build_backup_store
from provisioning_pipelines.storage.hosts.contract import HOST_FOLDER

TOKEN = "GRAPH_HOST_TOKEN"
PREVIOUS_TOKEN = "GRAPH_HOST_TOKEN_PREVIOUS"
GRACE = "GRAPH_HOST_SHUTDOWN_GRACE_SECONDS"
BODY_TIMEOUT = "GRAPH_HOST_BODY_TIMEOUT_SECONDS"
#: Where its backups are kept (the same settings as the control plane's; credentials from
#: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``); unset: a folder under its data root.
STORE_URL, STORE_ENDPOINT = "BACKUP_STORE_URL", "BACKUP_STORE_ENDPOINT_URL"
STORE_CLASS = "BACKUP_STORE_STORAGE_CLASS"
#: A token shorter than this is refused at start: it could be guessed.
MIN_TOKEN_LENGTH = 16


def tokens_from(environ: Mapping[str, str]) -> list[str]:
    """The current token and the previous one (if given), or ``SettingsError``."""
    current = environ.get(TOKEN, "").strip()
    if len(current) < MIN_TOKEN_LENGTH:
        raise SettingsError(f"{TOKEN}: required, at least {MIN_TOKEN_LENGTH} characters "
                            "(the bearer token every caller of the host sends)")
    previous = environ.get(PREVIOUS_TOKEN, "").strip()
    if previous and len(previous) < MIN_TOKEN_LENGTH:
        raise SettingsError(f"{PREVIOUS_TOKEN}: at least {MIN_TOKEN_LENGTH} characters")
    return [current, previous] if previous else [current]


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    try:
        value = float(environ.get(name, default))
    except ValueError:
        value = -1.0
    if not value > 0:
        raise SettingsError(f"{name}: must be a positive number of seconds")
    return value


def serve(*, host_id: str, tier: str, capacity: int, data_root: Path, address: str,
          port: int, environ: Mapping[str, str] | None = None) -> int:
    import uvicorn

    from provisioning_pipelines.hosts_server.app import create_app
    from provisioning_pipelines.storage.hosts.local import LocalHost

    environ = os.environ if environ is None else environ
    tokens = tokens_from(environ)
    grace = _seconds(environ, GRACE, 30.0)
    body_timeout = _seconds(environ, BODY_TIMEOUT, 10.0)
    if capacity < 1:
        raise SettingsError("--capacity: must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    store = build_backup_store(environ.get(STORE_URL) or None,
                               data_root.resolve() / HOST_FOLDER / "backups",
                               endpoint_url=environ.get(STORE_ENDPOINT) or None,
                               storage_class=environ.get(STORE_CLASS) or None)
    local = LocalHost(host_id, data_root.resolve(), tier=tier, capacity=capacity, store=store,
                      peer_token=tokens[0])
    removed = local.remove_leftovers()  # nothing runs yet: what is half-made was cut short
    if removed:
        logging.getLogger("provisioning_pipelines.hosts_server").warning(
            "graph host %s: removed %d half-made files left by calls cut short: %s", host_id,
            len(removed), ", ".join(removed))
    app = create_app(local, tokens, body_timeout=body_timeout)
    config = uvicorn.Config(app, host=address, port=port, log_level="info", access_log=False,
                            lifespan="off", timeout_graceful_shutdown=max(1, int(grace)))
    uvicorn.Server(config).run()
    return 0
