"""What a browser's write must show before its session cookie counts: where it comes from, and
a JSON body.

``SameSite=Strict`` keeps other *sites'* pages from sending the cookie, but a site is a
registrable domain (or an IP address), not an origin: a page on another port of the same host,
or on a sibling subdomain, is the same site, and the browser sends the cookie with its requests.
Such a page can send a "simple" request (a form, or ``fetch`` with a ``text/plain`` body)
without any preflight. So a request that changes something and is authenticated by the cookie
(or asks for one: signing in) must also

- come from this server's own origin or one named in ``CORS_ALLOW_ORIGINS``: by its ``Origin``
  header, or, without one, by ``Sec-Fetch-Site: same-origin``. A request with neither is not
  from a browser page that can be trusted (every current browser sends ``Origin`` on a
  ``POST``), and is refused: scripts authenticate with ``Authorization: Bearer <api key>``,
  which no other page can make a browser send;
- send its body as ``application/json``, which no page of another origin can send without a
  preflight that the CORS rules answer.

Refusals are 403 naming the header (``field`` is ``Origin`` or ``Sec-Fetch-Site``) and 415 for
the content type. Requests with a Bearer key are not browser sessions and are not checked here.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.requests import Request

from provisioning_pipelines.errors import Forbidden, UnsupportedMediaType
from provisioning_pipelines.settings import normalized_origin

#: The methods that change something; the others must not (and are not checked).
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def own_origin(request: Request) -> str | None:
    """The origin this request was addressed to: its scheme and ``Host``. Behind a proxy that
    ends TLS, the scheme is the proxy's if uvicorn trusts its ``X-Forwarded-Proto``; otherwise
    name the public origin in ``CORS_ALLOW_ORIGINS``."""
    host = request.headers.get("host")
    return normalized_origin(f"{request.url.scheme}://{host}") if host else None


def check_browser_write(request: Request, allowed: Collection[str]) -> None:
    """Refuse a cookie-authenticated write that does not come from an allowed origin or whose
    body is not JSON; ``allowed`` are the normalized ``CORS_ALLOW_ORIGINS``."""
    if request.method not in WRITES:
        return
    origin = request.headers.get("origin")
    if origin is not None:
        trusted = {own_origin(request), *allowed} - {None}
        if normalized_origin(origin) not in trusted:
            raise Forbidden(f"Origin: {origin[:200]!r} is neither this server's origin nor in "
                            "CORS_ALLOW_ORIGINS; the session cookie is accepted only from the "
                            "app's own pages", field="Origin")
    else:
        site = request.headers.get("sec-fetch-site")
        if site is None:
            raise Forbidden("Origin: missing, and so is Sec-Fetch-Site; a request signed in by "
                            "the session cookie must say where it comes from (browsers do); "
                            "scripts use 'Authorization: Bearer <api key>'", field="Origin")
        if site.strip().lower() != "same-origin":
            raise Forbidden(f"Sec-Fetch-Site: {site[:50]!r}; without an Origin header only "
                            "same-origin requests may use the session cookie",
                            field="Sec-Fetch-Site")
    if has_body(request):
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            given = repr(media[:100]) if media else "missing"
            raise UnsupportedMediaType(f"Content-Type: {given}; a body sent with the session "
                                       "cookie must be application/json", field="Content-Type")


def has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() != "0"
    return "transfer-encoding" in request.headers
