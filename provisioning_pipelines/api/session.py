"""``/v1/session``: a browser signs in with its API key and gets a session cookie.

``EventSource`` cannot send an ``Authorization`` header, so the page authenticates with a
cookie: ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page sends it,
which is the CSRF defence), ``Secure`` over HTTPS, holding a signed, expiring token that names
the user, never the key itself.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from provisioning_pipelines.api.context import SESSION_COOKIE, ApiContext, guard
from provisioning_pipelines.errors import Unauthorized
from provisioning_pipelines.services import validation
from provisioning_pipelines.services.access import accounts


def routes(api: ApiContext) -> list[Route]:
    async def sign_in(request: Request) -> Response:
        body = await api.bodies.read_json(request)
        key = validation.text(body.get("api_key"), "api_key", max_length=200)

        def check() -> accounts.Identity:
            with api.database.session() as session:
                user = accounts.authenticate(session, key)
            if user is None:
                raise Unauthorized("api_key: not a valid API key", field="api_key")
            return user

        user = await run_in_threadpool(check)
        answer = JSONResponse({"user_id": user.user_id, "email": user.email})
        answer.set_cookie(SESSION_COOKIE,
                          accounts.session_token(user, api.settings.resolved_session_secret),
                          max_age=accounts.SESSION_SECONDS, httponly=True, samesite="strict",
                          secure=request.url.scheme == "https", path="/")
        return answer

    def sign_out(request: Request) -> Response:
        answer = Response(status_code=204)
        answer.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return answer

    def current(request: Request) -> Response:
        """Who this browser is signed in as; nulls (not 401) when nobody, as a page asks this
        first and a failed request would be an error in its console."""
        try:
            user = api.user_of(request)
        except Unauthorized:
            return JSONResponse({"user_id": None, "email": None})
        return JSONResponse({"user_id": user.user_id, "email": user.email})

    return [
        Route("/v1/session", guard(current), methods=["GET"]),
        Route("/v1/session", guard(sign_in), methods=["POST"]),
        Route("/v1/session", guard(sign_out), methods=["DELETE"]),
    ]
