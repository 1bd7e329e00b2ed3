"""Declaring an endpoint once: the Starlette route it serves and the OpenAPI operation it is.

Each api module lists its endpoints as ``Endpoint``s: method, path, handler, summary, the
pydantic models of its body, query and header parameters and of each answer, the error statuses
it can give, and who may call it. ``Endpoint.route`` builds the route (wrapped in ``guard``) and
``api/openapi.py`` builds the document from the same list, so the two cannot drift apart; a
test checks that every route the app serves is in the document and the other way round.

Why not FastAPI: its routes parse and validate bodies themselves, before our code runs. Ours are
read by ``api/bodies.py`` within bounds of size, time and concurrency (413, 408, 503) and only
after the caller is authenticated; errors are mapped once by ``context.guard`` to the project's
``{"error", "message", "field"}``; and the SSE stream is a response class of its own. A framework
that owns the body would bypass each of these contracts. Starlette stays; this module is the
small part of such a framework we need, a declaration from which both sides are built.

Handlers still read their body themselves, with ``api.bodies.read_model(request, Model)``; a
model other than the declaration's ``body`` is a defect that ``read_model`` refuses.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from provisioning_pipelines.api.context import guard

Handler = Callable[[Request], Awaitable[Response] | Response]
#: ``user``: an API key (``Authorization: Bearer``) or the browser's session cookie;
#: ``optional``: either, or nobody (the answer says so); ``none``: open to anyone.
Auth = Literal["user", "optional", "none"]

PATH_PARAMETER = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)}")


@dataclass(frozen=True)
class Content:
    """An answer that is not a JSON model: its media type, its schema and an example."""

    media_type: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})
    description: str = ""


#: What one status answers: a JSON model, other content, or nothing (``None``: no body).
Answer = type[BaseModel] | Content | None


@dataclass(frozen=True)
class Endpoint:
    """One operation of the API, declared once."""

    method: Literal["GET", "POST", "DELETE"]
    path: str
    handler: Handler
    summary: str
    #: Status to what it answers (2xx and 3xx; errors go in ``errors``).
    answers: Mapping[int, Answer]
    #: Error statuses this operation can give, each with the error shape. 401 comes with
    #: ``auth="user"``; 408, 413, 422 and 503 come with a body; 503 with every operation that
    #: reaches a store.
    errors: tuple[int, ...] = ()
    body: type[BaseModel] | None = None
    body_required: bool = True
    query: type[BaseModel] | None = None
    #: Request headers the operation reads, as a model whose field aliases are header names.
    headers: type[BaseModel] | None = None
    auth: Auth = "user"
    tag: str = ""
    description: str = ""
    #: False for an operation that reaches no store (``/metrics``): no 503 for an outage.
    uses_stores: bool = True
    #: Response headers per status: name to (description, JSON schema).
    answer_headers: Mapping[int, Mapping[str, tuple[str, Mapping[str, Any]]]] = field(
        default_factory=dict)
    #: JSON Schema keywords of path parameters beyond ``type: string`` (a pattern, a length).
    path_schemas: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Whether the answer is made by ``guard`` (every API route) or by the handler alone.
    guarded: bool = True

    @property
    def operation_id(self) -> str:
        """The handler's name (under any wrapper that keeps it, as ``functools.wraps`` does)."""
        return getattr(self.handler, "__wrapped__", self.handler).__name__

    @property
    def path_parameters(self) -> list[str]:
        return PATH_PARAMETER.findall(self.path)

    def error_statuses(self) -> list[int]:
        """Every error status the operation can answer, those it implies included."""
        statuses = set(self.errors)
        if self.auth == "user":
            statuses.add(401)
            if self.method != "GET":  # a write with the session cookie: origin and media type
                statuses.update((403, 415))
        if self.body is not None:
            statuses.update((408, 413, 422, 503))
        if self.query is not None or self.headers is not None:
            statuses.add(422)
        if self.uses_stores:
            statuses.add(503)
        if self.path_parameters:
            statuses.add(404)
        return sorted(statuses)

    def route(self) -> Route:
        endpoint = guard(self.handler) if self.guarded else self.handler
        # ``read_model`` finds the declaration here and refuses any other body model.
        endpoint.declaration = self  # type: ignore[attr-defined]
        return Route(self.path, endpoint, methods=[self.method], name=self.operation_id)


def routes(endpoints: list[Endpoint]) -> list[Route]:
    return [endpoint.route() for endpoint in endpoints]
