"""Reading request bodies, bounded in size, in time and in how many are read at once.

A body is held in memory while it arrives, so each bound closes a way to hold the server's
memory: over ``limit`` bytes is refused (413) without reading further; a body not received
whole within ``timeout_seconds`` (a client that sends part of it and stalls, or trickles it) is
refused (408) and what was read is dropped; and one process reads at most ``max_concurrent``
bodies at a time, so stalled bodies hold at most that many times the limit. One more is refused
at once (503 with ``Retry-After``) rather than queued: a queue would hold the connection and
its buffered bytes just the same, while a sender that is told to retry (Stripe does) loses
nothing. A refused body's connection is closed after the answer, since the rest of it may still
be on the wire.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from provisioning_pipelines import metrics
from provisioning_pipelines.errors import (
    Busy,
    InvalidRequest,
    PayloadTooLarge,
    ProvisioningError,
    RequestTimeout,
)
from provisioning_pipelines.services.validation import json_problem, type_name

Model = TypeVar("Model", bound=BaseModel)

#: The largest request body the API reads (a custom schema at its limits is ~0.5 MiB).
MAX_BODY_BYTES = 1024 * 1024
#: Refusals after which the connection is closed: the body's rest may still be on the wire.
UNREAD = (PayloadTooLarge, RequestTimeout, Busy)


class BodyReader:
    """Reads the bodies of one process within its bounds."""

    def __init__(self, *, timeout_seconds: float, max_concurrent: int) -> None:
        self.timeout_seconds = timeout_seconds
        self.max_concurrent = max_concurrent
        #: Bodies being read now (all on the one event loop, so a plain count).
        self.reading = 0

    async def read(self, request: Request, *, limit: int = MAX_BODY_BYTES) -> bytes:
        """The raw body, or 413 past ``limit`` bytes (announced or sent), 408 when it is not
        received whole within the timeout, 503 when too many are being read already."""
        announced = request.headers.get("content-length")
        if announced is not None and announced.isdigit() and int(announced) > limit:
            raise PayloadTooLarge(f"body: larger than {limit} bytes", field="body")
        if self.reading >= self.max_concurrent:
            metrics.BODIES_REFUSED.labels("busy").inc()
            raise Busy(f"body: {self.max_concurrent} request bodies are being read already; "
                       "try again shortly", field="body")
        self.reading += 1
        metrics.BODY_READS.inc()
        try:
            async with asyncio.timeout(self.timeout_seconds):
                return await _read(request, limit)
        except TimeoutError:
            metrics.BODIES_REFUSED.labels("timeout").inc()
            raise RequestTimeout(f"body: not received within {self.timeout_seconds:g} s "
                                 "(BODY_READ_TIMEOUT_SECONDS)", field="body") from None
        except ClientDisconnect:
            raise InvalidRequest("body: the client went away before sending all of it",
                                 field="body") from None
        finally:
            self.reading -= 1
            metrics.BODY_READS.dec()

    async def read_json(self, request: Request, *, optional: bool = False) -> dict[str, Any]:
        """The body as a JSON object, or 422 naming what is wrong with it (413, 408 or 503 as
        ``read``); an empty body is ``{}`` where the body is ``optional``."""
        raw = await self.read(request)
        if optional and not raw.strip():
            return {}
        try:
            body = json.loads(raw, parse_constant=_refuse_constant)
        except RecursionError:
            raise InvalidRequest("body: nested too deeply", field="body") from None
        except ValueError as exc:
            raise InvalidRequest(f"body: not valid JSON ({exc})"[:200], field="body") from None
        if not isinstance(body, dict):
            raise InvalidRequest(f"body: expected a JSON object, got {type_name(body)}",
                                 field="body")
        problem = json_problem(body)
        if problem:
            field, why = problem
            raise InvalidRequest(f"{field}: {why}", field=field)
        return body


    async def read_model(self, request: Request, model: type[Model], *,
                         optional: bool = False) -> Model:
        """The body checked against ``model`` (the schema the OpenAPI document shows), or 422
        naming the first field that is wrong and why."""
        _check_declared(request, model, optional)
        return validated(model, await self.read_json(request, optional=optional))

    async def read_checked(self, request: Request, model: type[BaseModel], *,
                           optional: bool = False) -> dict[str, Any]:
        """The body as sent, once its shape is checked against ``model`` (as ``read_model``):
        for a service that reads the JSON itself and names what is wrong beyond the shape."""
        _check_declared(request, model, optional)
        body = await self.read_json(request, optional=optional)
        validated(model, body)
        return body


def _check_declared(request: Request, model: type[BaseModel], optional: bool) -> None:
    """A body read as other than its endpoint declares (``api/spec.py``) is a defect: the
    document would describe a body the server does not read."""
    declared = getattr(request.scope.get("endpoint"), "declaration", None)
    if declared is not None and (declared.body is not model
                                 or declared.body_required == optional):
        raise TypeError(f"{declared.method} {declared.path} declares {declared.body} "
                        f"(required: {declared.body_required}), reads {model.__name__}")


def validated(model: type[Model], data: Any) -> Model:
    """``data`` as ``model``, or ``InvalidRequest`` naming the first wrong field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        field = field_path(first["loc"])
        raise InvalidRequest(f"{field}: {first['msg']}"[:300], field=field) from None


def field_path(location: tuple[int | str, ...]) -> str:
    """A field as the project names it: ``graph.tags[0]``, ``graph.name``."""
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path or "body"


def closes_connection(error: ProvisioningError) -> bool:
    return isinstance(error, UNREAD)


async def _read(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body: larger than {limit} bytes", field="body")
        chunks.append(chunk)
    return b"".join(chunks)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")
