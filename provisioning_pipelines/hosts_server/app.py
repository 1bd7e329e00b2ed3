"""The graph host's HTTP API: the ``GraphHost`` contract of one ``LocalHost``, behind a token.

Every path but ``GET /healthz`` needs ``Authorization: Bearer <token>``, the current token or
the previous one during a rotation, compared in constant time; anything else is 401 before the
path is even looked at, so an unauthenticated caller learns nothing of what exists. ``/healthz``
says ok, the tier, the capacity and the slots used, and nothing else. Errors are the API's
``{"error", "message", "field"}``: an id that is not a graph id is a 404 (no file has that
name), a bad body a 422, so a client's mistake is never a 5xx. Bodies are bounded in size and
in the time they take to arrive. The engine's calls block, so they run in the thread pool; the
server knows nothing of billing, users or the app database.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from provisioning_pipelines.errors import (
    InvalidRequest,
    PayloadTooLarge,
    ProvisioningError,
    RequestTimeout,
    Unauthorized,
)
from provisioning_pipelines.storage.hosts.contract import (
    HostAddress,
    check_backup_name,
    check_graph_id,
)
from provisioning_pipelines.storage.hosts.local import LocalHost
from provisioning_pipelines.storage.ladybug.queries import QueryLimits

logger = logging.getLogger("provisioning_pipelines.hosts_server")

#: The largest body read (a schema's DDL at its limits is ~0.5 MiB).
MAX_BODY_BYTES = 1024 * 1024
OPEN_PATHS = frozenset({"/healthz"})


def _error(exc: ProvisioningError) -> JSONResponse:
    headers = {"Connection": "close"} if isinstance(exc, PayloadTooLarge | RequestTimeout) \
        else None
    return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=headers)


class TokenGate:
    """401 for every path but the open ones unless the bearer token is one of ``tokens``."""

    def __init__(self, app: ASGIApp, tokens: Sequence[str]) -> None:
        self.app = app
        self.tokens = [token.encode() for token in tokens if token]
        if not self.tokens:
            raise ValueError("a graph host needs a token")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS and \
                not self._allowed(scope):
            error = Unauthorized("Authorization: a valid bearer token is required",
                                 field="Authorization")
            await _error(error)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        given = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                given = value
        scheme, _, token = given.partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        # Every token compared, whichever matches: the time taken says nothing.
        matches = [hmac.compare_digest(token.strip(), wanted) for wanted in self.tokens]
        return any(matches)


async def read_json(request: Request, *, timeout: float) -> dict[str, Any]:
    """The body as a JSON object: 413 past ``MAX_BODY_BYTES``, 408 when not whole within
    ``timeout`` seconds, 422 when it is not a JSON object; an empty body is ``{}``."""
    announced = request.headers.get("content-length", "")
    if announced.isdigit() and int(announced) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"body: larger than {MAX_BODY_BYTES} bytes", field="body")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise PayloadTooLarge(f"body: larger than {MAX_BODY_BYTES} bytes",
                                          field="body")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(f"body: not received within {timeout:g} s", field="body") from None
    except ClientDisconnect:
        raise InvalidRequest("body: the client went away before sending all of it",
                             field="body") from None
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"body: not JSON ({exc})", field="body") from None
    if not isinstance(body, dict):
        raise InvalidRequest("body: must be a JSON object", field="body")
    return body


def _strings(body: dict[str, Any], key: str, *, optional: bool = False) -> list[str] | None:
    value = body.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidRequest(f"{key}: must be a list of strings", field=key)
    return value


def create_app(host: LocalHost, tokens: Sequence[str], *, body_timeout: float = 10.0
               ) -> ASGIApp:
    """The server of ``host``; ``tokens`` are the current token and any previous one."""

    def endpoint(work: Callable[[Request, dict[str, Any]], Any], *, body: bool = False
                 ) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            try:
                payload = await read_json(request, timeout=body_timeout) if body else {}
                answer = await run_in_threadpool(work, request, payload)
            except ProvisioningError as exc:
                if exc.status_code >= 500:
                    logger.warning("graph host %s: %s %s: %s", host.host_id, request.method,
                                   request.url.path, exc)
                return _error(exc)
            return JSONResponse(answer, status_code=200)
        return handle

    def graph_id(request: Request) -> str:
        return check_graph_id(request.path_params["graph_id"])

    def create(request: Request, body: dict[str, Any]) -> Any:
        return asdict(host.create(graph_id(request), _strings(body, "ddl") or []))

    def delete(request: Request, _: dict[str, Any]) -> Any:
        return {"deleted": host.delete(graph_id(request))}

    def fork(request: Request, body: dict[str, Any]) -> Any:
        child = graph_id(request)
        parent = body.get("parent_id")
        if not isinstance(parent, str):
            raise InvalidRequest("parent_id: required, a graph id", field="parent_id")
        copied = host.fork(child, parent, tables=_strings(body, "tables", optional=True),
                           exclude=_strings(body, "exclude", optional=True) or ())
        return {"copied": copied}

    def checkpoint(request: Request, _: dict[str, Any]) -> Any:
        host.checkpoint(graph_id(request))
        return {"checkpointed": True}

    def back_up(request: Request, body: dict[str, Any]) -> Any:
        expires = body.get("expires_at")
        try:
            expires_at = datetime.fromisoformat(expires) if expires is not None else None
        except (TypeError, ValueError):
            raise InvalidRequest("expires_at: an ISO 8601 time, or null",
                                 field="expires_at") from None
        return asdict(host.back_up(graph_id(request), request.path_params["name"],
                                   expires_at=expires_at))

    def restore(request: Request, body: dict[str, Any]) -> Any:
        source, name, sha256 = (body.get(key) for key in ("source_graph_id", "name", "sha256"))
        if not isinstance(sha256, str) or len(sha256) != 64:
            raise InvalidRequest("sha256: the backup's sha256, 64 hex digits", field="sha256")
        host.restore(graph_id(request), check_graph_id(source, field_name="source_graph_id"),
                     check_backup_name(name), sha256)
        return {"restored": True}

    def checksum(request: Request, _: dict[str, Any]) -> Any:
        return {"sha256": host.checksum(graph_id(request))}

    def freeze(request: Request, _: dict[str, Any]) -> Any:
        return {"sha256": host.freeze(graph_id(request))}

    def thaw(request: Request, _: dict[str, Any]) -> Any:
        return {"thawed": host.thaw(graph_id(request))}

    def copy_from(request: Request, body: dict[str, Any]) -> Any:
        source, sha256 = body.get("source"), body.get("sha256")
        if not isinstance(sha256, str) or len(sha256) != 64:
            raise InvalidRequest("sha256: the source file's sha256, 64 hex digits",
                                 field="sha256")
        if not isinstance(source, dict) or not all(
                isinstance(source.get(key), str) for key in ("host_id", "url", "data_root")):
            raise InvalidRequest("source: required, the host_id, url and data_root of a host "
                                 "server (a host server copies only from another)",
                                 field="source")
        if not source["url"].startswith(("http://", "https://")):
            raise InvalidRequest("source.url: an http:// or https:// address", field="source")
        host.copy_from(graph_id(request), HostAddress(source["host_id"], source["url"],
                                                      source["data_root"]), sha256)
        return {"copied": True}

    async def file(request: Request) -> Response:
        """The graph's file as it is on disk, for a peer copying it (``copy_from``)."""
        try:
            path = await run_in_threadpool(host.file_of, graph_id(request))
        except ProvisioningError as exc:
            return _error(exc)
        return FileResponse(path, media_type="application/octet-stream")

    def delete_backup(request: Request, _: dict[str, Any]) -> Any:
        return {"deleted": host.delete_backup(graph_id(request), request.path_params["name"])}

    def listing(_request: Request, _: dict[str, Any]) -> Any:
        held = host.list()
        return {"graphs": list(held.graphs), "unknown": list(held.unknown)}

    def query(request: Request, body: dict[str, Any]) -> Any:
        cypher, params = body.get("cypher"), body.get("params") or {}
        read_only = body.get("read_only", True)
        if not isinstance(cypher, str):
            raise InvalidRequest("cypher: required, a string", field="cypher")
        if not isinstance(params, dict):
            raise InvalidRequest("params: must be a JSON object", field="params")
        if not isinstance(read_only, bool):
            raise InvalidRequest("read_only: must be true or false", field="read_only")
        found = host.query(graph_id(request), cypher, params, read_only=read_only)
        # Values JSON has no type for (dates, decimals, ...) travel as their text.
        return json.loads(json.dumps({"rows": found}, default=str))

    def run_query(request: Request, body: dict[str, Any]) -> Any:
        query, params = body.get("query"), body.get("parameters") or {}
        read_only = body.get("read_only", True)
        if not isinstance(query, str):
            raise InvalidRequest("query: required, a string", field="query")
        if not isinstance(params, dict):
            raise InvalidRequest("parameters: must be a JSON object", field="parameters")
        if not isinstance(read_only, bool):
            raise InvalidRequest("read_only: must be true or false", field="read_only")
        limits = body.get("limits")
        if not isinstance(limits, dict):
            raise InvalidRequest("limits: required, an object", field="limits")
        found = host.run_query(graph_id(request), query, params, read_only=read_only,
                               limits=QueryLimits.from_dict(limits))
        return found.to_dict()

    def tables(request: Request, _: dict[str, Any]) -> Any:
        return {"tables": host.tables(graph_id(request))}

    def quarantine(request: Request, _: dict[str, Any]) -> Any:
        return {"quarantined": host.quarantine(graph_id(request))}

    def size(request: Request, _: dict[str, Any]) -> Any:
        return {"size_bytes": host.size(graph_id(request))}

    def healthz(_request: Request, _: dict[str, Any]) -> Any:
        health = host.health()
        return {"ok": True, "tier": health.tier, "capacity": health.capacity,
                "used": health.used}

    graph = "/v1/graphs/{graph_id}"
    routes = [
        Route("/healthz", endpoint(healthz), methods=["GET"]),
        Route("/v1/databases", endpoint(listing), methods=["GET"]),
        Route("/v1/graphs", endpoint(listing), methods=["GET"]),
        Route(graph, endpoint(create, body=True), methods=["PUT"]),
        Route(graph, endpoint(delete), methods=["DELETE"]),
        Route(f"{graph}/fork", endpoint(fork, body=True), methods=["POST"]),
        Route(f"{graph}/checkpoint", endpoint(checkpoint), methods=["POST"]),
        Route(f"{graph}/backups/{{name}}", endpoint(back_up, body=True), methods=["PUT"]),
        Route(f"{graph}/restore", endpoint(restore, body=True), methods=["POST"]),
        Route(f"{graph}/checksum", endpoint(checksum), methods=["GET"]),
        Route(f"{graph}/file", file, methods=["GET"]),
        Route(f"{graph}/freeze", endpoint(freeze), methods=["POST"]),
        Route(f"{graph}/thaw", endpoint(thaw), methods=["POST"]),
        Route(f"{graph}/copy", endpoint(copy_from, body=True), methods=["POST"]),
        Route(f"{graph}/backups/{{name}}", endpoint(delete_backup), methods=["DELETE"]),
        Route(f"{graph}/query", endpoint(query, body=True), methods=["POST"]),
        Route(f"{graph}/run", endpoint(run_query, body=True), methods=["POST"]),
        Route(f"{graph}/size", endpoint(size), methods=["GET"]),
        Route(f"{graph}/tables", endpoint(tables), methods=["GET"]),
        Route(f"{graph}/quarantine", endpoint(quarantine), methods=["POST"]),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = "not_found" if exc.status_code == 404 else "invalid_request"
        if exc.status_code == 405:
            code = "method_not_allowed"
        return JSONResponse({"error": code, "message": f"{request.method} {request.url.path}: "
                             f"{exc.detail}", "field": None}, status_code=exc.status_code)

    async def failure(request: Request, exc: Exception) -> Response:
        logger.exception("graph host %s: %s %s failed", host.host_id, request.method,
                         request.url.path)
        return JSONResponse({"error": "internal_error", "message": "the graph host failed "
                             "this request; see its log", "field": None}, status_code=500)

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error,
                                                       Exception: failure})
    app.router.redirect_slashes = False  # "/v1/graphs/%2F" is a 404, not a redirect
    return TokenGate(app, tokens)
