"""``/v1/session``: a browser signs in with its API key and gets a session cookie.

``EventSource`` cannot send an ``Authorization`` header, so the page authenticates with a
cookie: ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page sends it),
``Secure`` over HTTPS, holding a signed, expiring token that names a session row, never the key
itself. SameSite is per site, not per origin, so the CSRF defence is the origin check every
cookie write gets (``same_origin.py``); signing in gets it too, so that no other page can sign
a browser in as someone else. Signing out deletes the row: the token then fails on every worker.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from provisioning_pipelines.api.context import SESSION_COOKIE, ApiContext
from provisioning_pipelines.api.spec import Endpoint
from provisioning_pipelines.errors import Unauthorized
from provisioning_pipelines.services import validation
from provisioning_pipelines.services.access import accounts, sessions


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is named, not ignored

    api_key: str = Field(max_length=200, description="the key `users create` showed (ppk_…)")


class SignedIn(BaseModel):
    """Who the browser is signed in as; both null when nobody is."""

    user_id: str | None
    email: str | None


def endpoints(api: ApiContext) -> list[Endpoint]:
    async def sign_in(request: Request) -> Response:
        api.check_browser(request)
        body = await api.bodies.read_model(request, SignIn)
        key = validation.text(body.api_key, "api_key", max_length=200)

        def start() -> tuple[accounts.Identity, str]:
            with api.database.session() as session:
                user = accounts.authenticate(session, key)
                if user is None:
                    raise Unauthorized("api_key: not a valid API key", field="api_key")
                return user, sessions.sign_in(session, user, api.settings.resolved_session_secret)

        user, token = await run_in_threadpool(start)
        answer = JSONResponse({"user_id": user.user_id, "email": user.email})
        answer.set_cookie(SESSION_COOKIE, token, max_age=sessions.SESSION_SECONDS, httponly=True,
                          samesite="strict", secure=request.url.scheme == "https", path="/")
        return answer

    def sign_out(request: Request) -> Response:
        """204 whether or not the browser was signed in; its session, if any, ends everywhere."""
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            api.check_browser(request)
            with api.database.session() as session:
                sessions.sign_out(session, token, api.settings.session_secrets)
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

    cookie = {"Set-Cookie": (f"{SESSION_COOKIE}=<token>; HttpOnly; SameSite=Strict; Path=/",
                             {"type": "string"})}
    return [
        Endpoint("GET", "/v1/session", current, "Who this browser is signed in as",
                 {200: SignedIn}, auth="optional", tag="session"),
        Endpoint("POST", "/v1/session", sign_in,
                 "Sign a browser in with an API key: sets the session cookie",
                 {200: SignedIn}, errors=(401, 403, 415), body=SignIn, auth="none",
                 tag="session", answer_headers={200: cookie}),
        Endpoint("DELETE", "/v1/session", sign_out,
                 "Sign out: the session ends on every worker", {204: None},
                 errors=(403, 415), auth="none", tag="session"),
    ]
