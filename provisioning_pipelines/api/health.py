"""``GET /healthz``: can this process reach its database (at the newest schema), Redis and the
Dagster instance?

Open to anyone (load balancers ask it without a key), so a failing check says *what* is down,
never where it is: a driver's message names hosts, ports and sockets, and those go to the log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from provisioning_pipelines.api.context import ApiContext, logger
from provisioning_pipelines.api.spec import Endpoint
from provisioning_pipelines.errors import DatabaseNotMigrated
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.migrate import schema_problem


class Check(BaseModel):
    ok: bool
    detail: str | None = None


class Health(BaseModel):
    """What this process reaches; ``detail`` says what is down, never where."""

    ok: bool
    database: Check
    redis: Check
    dagster: Check


def endpoints(api: ApiContext) -> list[Endpoint]:
    def healthz(request: Request) -> Response:
        checks = {"database": _check("database",
                                     lambda: api.database.ping() and _migrated(api.database))}
        checks["redis"] = (_check("event store", api.store.ping) if api.settings.redis_url
                           else {"ok": True, "detail": "in-memory operation store"})
        checks["dagster"] = _check("Dagster instance",
                                   lambda: api.dagster_instance().get_runs_count() >= 0)
        healthy = all(check["ok"] for check in checks.values())
        return JSONResponse({"ok": healthy, **checks}, status_code=200 if healthy else 503)

    return [Endpoint("GET", "/healthz", healthz,
                     "Can this process reach its database, Redis and the Dagster instance?",
                     {200: Health, 503: Health}, auth="none", tag="health")]


def _check(what: str, probe: Callable[[], Any]) -> dict[str, Any]:
    """A probe passes only by returning a true value; raising or answering no is a failure."""
    try:
        answer = probe()
    except DatabaseNotMigrated as exc:  # its revisions and the fix; it names no host
        return {"ok": False, "detail": exc.message}
    except Exception as exc:
        logger.warning("healthz: %s unreachable: %s: %s", what, type(exc).__name__, exc)
        return {"ok": False, "detail": f"{what} unreachable"}
    return {"ok": True} if answer else {"ok": False, "detail": f"{what} unreachable"}


def _migrated(database: Database) -> bool:
    """A database behind the newest schema is reachable, yet fails every request."""
    problem = schema_problem(database)
    if problem is not None:
        raise DatabaseNotMigrated(problem)
    return True
