"""The OpenAPI 3.1 document (``GET /openapi.json``) and its rendered reference (``GET /docs``).

The document is assembled from the endpoints' declarations (``api/spec.py``): components are
the pydantic models' JSON Schemas (OpenAPI 3.1 speaks JSON Schema 2020-12, which pydantic
writes), every error is the one shape ``{"error", "message", "field"}``, and authentication is a
bearer API key or the browser's session cookie. The reference is Swagger UI from the
``swagger-ui-bundle-v2`` package, served from this process: nothing is loaded from elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from provisioning_pipelines.api.context import SESSION_COOKIE, ApiContext
from provisioning_pipelines.api.idempotency import NOT_KEPT
from provisioning_pipelines.api.models import ErrorAnswer, IdempotencyKey
from provisioning_pipelines.api.spec import Content, Endpoint

STATIC = Path(__file__).parent / "static"
REF = "#/components/schemas/{model}"
#: The reference page loads only this server's files; Swagger UI sets some styles inline.
DOCS_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
               "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
               "base-uri 'none'; form-action 'self'")
SECURITY = {
    "user": [{"bearer": []}, {"session": []}],
    "optional": [{"bearer": []}, {"session": []}, {}],
    "none": [],
}


def _version() -> str:
    try:
        return metadata.version("provisioning-pipelines")
    except metadata.PackageNotFoundError:  # a checkout that is not installed
        return "0"


def document(endpoints: Iterable[Endpoint]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of these endpoints."""
    endpoints = list(endpoints)
    schemas = _Schemas(endpoints)
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint,
                                                                                   schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": "provisioning_pipelines", "version": _version(),
                 "description": "Graph databases, subgraphs and repository access for paying "
                                "customers: subscriptions, the billing webhook, graphs and "
                                "their lifecycle, backups, and operations with their "
                                "Server-Sent Events."},
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "an API key (`provisioning-pipelines users create`)"},
                "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
                            "description": "the browser's session (`POST /v1/session`)"},
            },
        },
    }


class _Schemas:
    """Every model's JSON Schema under components, referenced by ``$ref``: bodies and
    parameters as validated, answers as serialized."""

    def __init__(self, endpoints: list[Endpoint]) -> None:
        wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {
            (ErrorAnswer, "serialization"): None}
        for endpoint in endpoints:
            for model in (endpoint.body, endpoint.query, endpoint.headers):
                if model is not None:
                    wanted[(model, "validation")] = None
            for answer in endpoint.answers.values():
                if isinstance(answer, type):
                    wanted[(answer, "serialization")] = None
        refs, top = models_json_schema(list(wanted), ref_template=REF)
        self.refs = refs
        self.components: dict[str, Any] = dict(sorted(top.get("$defs", {}).items()))

    def ref(self, model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        return dict(self.refs[(model, mode)])

    def fields(self, model: type[BaseModel]) -> dict[str, Any]:
        """A parameter model's properties (name to schema) and which are required."""
        name = self.ref(model, "validation")["$ref"].rsplit("/", 1)[-1]
        return self.components[name]


def _operation(endpoint: Endpoint, schemas: _Schemas) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": endpoint.operation_id,
                                 "summary": endpoint.summary}
    if endpoint.tag:
        operation["tags"] = [endpoint.tag]
    if endpoint.description:
        operation["description"] = endpoint.description
    parameters = [{"name": name, "in": "path", "required": True,
                   "schema": {"type": "string", **endpoint.path_schemas.get(name, {})}}
                  for name in endpoint.path_parameters]
    for model, where in ((endpoint.query, "query"), (endpoint.headers, "header")):
        if model is None:
            continue
        component = schemas.fields(model)
        required = set(component.get("required", ()))
        for name, schema in component.get("properties", {}).items():
            parameter = {"name": name, "in": where, "required": name in required,
                         "schema": _not_null({key: value for key, value in schema.items()
                                              if key not in ("title", "description")})}
            if schema.get("description"):
                parameter["description"] = schema["description"]
            parameters.append(parameter)
    if parameters:
        operation["parameters"] = parameters
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": endpoint.body_required,
            "content": {"application/json": {"schema": schemas.ref(endpoint.body,
                                                                   "validation")}}}
    operation["responses"] = _responses(endpoint, schemas)
    operation["security"] = SECURITY[endpoint.auth]
    return operation


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter left out is absent, never null: ``str | None`` is a string (one that may
    be left out), and its default ``null`` is no default."""
    branches = [branch for branch in schema.get("anyOf", ()) if branch != {"type": "null"}]
    if len(branches) == 1:
        schema = {**{k: v for k, v in schema.items() if k != "anyOf"}, **branches[0]}
    if schema.get("default", 0) is None:
        schema = {k: v for k, v in schema.items() if k != "default"}
    return schema


def _responses(endpoint: Endpoint, schemas: _Schemas) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, answer in sorted(endpoint.answers.items()):
        response: dict[str, Any] = {"description": HTTPStatus(status).phrase}
        if isinstance(answer, Content):
            response["description"] = answer.description or response["description"]
            response["content"] = {answer.media_type: {"schema": dict(answer.schema)}}
        elif answer is not None:
            response["content"] = {"application/json": {
                "schema": schemas.ref(answer, "serialization")}}
        responses[str(status)] = response
    error = {"application/json": {"schema": schemas.ref(ErrorAnswer, "serialization")}}
    for status in endpoint.error_statuses():
        if status not in endpoint.answers:
            responses[str(status)] = {"description": HTTPStatus(status).phrase,
                                      "content": error}
    for status, headers in endpoint.answer_headers.items():
        responses[str(status)]["headers"] = {
            name: {"description": description, "schema": dict(schema)}
            for name, (description, schema) in headers.items()}
    if endpoint.headers is IdempotencyKey:  # the answers a repeated key gets again
        for status, response in responses.items():
            if int(status) < 500 and int(status) not in NOT_KEPT:
                response.setdefault("headers", {})["Idempotent-Replayed"] = {
                    "description": "true when this is the first answer to the same "
                                   "Idempotency-Key, replayed (nothing was done again)",
                    "schema": {"type": "string", "enum": ["true"]}}
    for status in ("429", "503"):
        if status in responses and "Retry-After" not in responses[status].get("headers", {}):
            responses[status].setdefault("headers", {})["Retry-After"] = {
                "description": "seconds to wait before trying again",
                "schema": {"type": "string"}}
    return responses


def docs_endpoints(api: ApiContext, endpoints: list[Endpoint]) -> list[Endpoint]:
    """``/openapi.json``, the document of ``endpoints`` and of itself."""
    made: dict[str, Any] = {}

    def openapi_document(request: Request) -> Response:
        if not made:
            made.update(document([*endpoints, *own]))
        return JSONResponse(made)

    own = [Endpoint("GET", "/openapi.json", openapi_document,
                    "This document: every path, body, answer and error of the API",
                    {200: Content("application/json", {"type": "object"},
                                  "the OpenAPI 3.1 document")},
                    auth="none", tag="reference", uses_stores=False)]
    return own


def docs_routes() -> list[BaseRoute]:
    """``/docs``: the reference, Swagger UI rendering ``/openapi.json`` (not in the document:
    HTML for people, like the operations page)."""

    def reference(request: Request) -> Response:
        return FileResponse(STATIC / "docs.html", headers={
            "Content-Security-Policy": DOCS_POLICY, "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-cache"})

    return [Route("/docs", reference, methods=["GET"]),
            Mount("/docs/swagger-ui", app=StaticFiles(directory=str(swagger_ui_path)),
                  name="swagger-ui")]
