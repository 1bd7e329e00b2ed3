"""``/ui/``: the operations page, static files served by the API itself (no build step).

A customer signs in with an API key (``/v1/session`` sets the cookie), sees their subscriptions,
graphs and operations, starts a subgraph, and follows an operation live through ``EventSource``;
a graph's panel queries it (or a subgraph), manages its members, takes, lists and restores its
backups, deletes it and restores it within the grace; a subscription can be cancelled. The page
only uses the public ``/v1`` API, and writes what it answers as text, never as markup.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from provisioning_pipelines.api.context import ApiContext

STATIC = Path(__file__).parent / "static"
#: The page loads only its own files; nothing inline, nothing from elsewhere.
POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
          "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def routes(api: ApiContext) -> list[BaseRoute]:
    def to_page(request: Request) -> Response:
        return RedirectResponse("/ui/", status_code=307)

    def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={
            "Content-Security-Policy": POLICY, "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-cache"})

    return [
        Route("/", to_page),
        Route("/ui", to_page),
        Route("/ui/", page),
        Mount("/ui/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
