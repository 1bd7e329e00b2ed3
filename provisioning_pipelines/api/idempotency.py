"""``Idempotency-Key`` on the POSTs that create something: one wrapper those endpoints share.

With the header, the caller's first request under the key runs and its answer is kept; a retry
of the same request (method, path and body, compared as JSON) gets that answer again, status
and body, with ``Idempotent-Replayed: true``, and nothing is done twice (a 202's operation is
the first one). Another request under the key is 409 ``idempotency_key_reused``; a retry while
the first still runs is 409 ``idempotency_key_in_use`` with ``Retry-After``.

Which answers are kept follows Stripe's: every answer of a request that was looked at and
decided (2xx, and a refusal such as 403, 404 or 409: asked again, it would be decided the same
way until something changes, and a client must not read a replay as a new decision), but not
one that says nothing was decided: a body that was not valid (422, 413, 408), too much work in
flight (429), and our failures and outages (5xx). Those release the key, and a retry with it
runs afresh. Without the header nothing changes.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from provisioning_pipelines.api.context import ApiContext, error_response
from provisioning_pipelines.errors import InvalidRequest
from provisioning_pipelines.services import idempotency

Endpoint = Callable[[Request], Awaitable[Response] | Response]
HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
#: Answers that decided nothing: not kept, so a retry under the key runs again.
NOT_KEPT = frozenset({408, 413, 422, 429})


def idempotent(api: ApiContext, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    """``endpoint`` honouring ``Idempotency-Key`` (to be wrapped by ``guard`` as usual)."""

    async def run(request: Request) -> Response:
        if inspect.iscoroutinefunction(endpoint):
            return await endpoint(request)
        return await run_in_threadpool(endpoint, request)  # type: ignore[arg-type]

    async def wrapped(request: Request) -> Response:
        key = request.headers.get(HEADER)
        if key is None:
            return await run(request)
        check_key(key)
        user = await run_in_threadpool(api.user_of, request)
        raw = await api.bodies.read(request)
        request._body = raw  # the endpoint reads the body again, from here
        fingerprint = fingerprint_of(request.method, request.url.path, raw)
        try:
            got = await run_in_threadpool(
                idempotency.begin, api.database, user_id=user.user_id, key=key,
                fingerprint=fingerprint, hours=api.settings.idempotency_key_hours)
        except idempotency.KeyInUse as exc:
            answer = error_response(exc)
            answer.headers["Retry-After"] = str(exc.retry_after)
            return answer
        if isinstance(got, idempotency.Answer):
            return Response(got.body, status_code=got.status, media_type="application/json",
                            headers={"Idempotent-Replayed": "true"})
        try:
            response = await run(request)
        except Exception as exc:
            response = error_response(exc)
        status = response.status_code
        if status < 500 and status not in NOT_KEPT:
            body = bytes(response.body).decode()
            await run_in_threadpool(idempotency.finish, api.database, user_id=user.user_id,
                                    key=key, token=got.token, status=status, body=body)
        else:
            await run_in_threadpool(idempotency.release, api.database, user_id=user.user_id,
                                    key=key, token=got.token)
        return response

    return wrapped


def check_key(key: str) -> None:
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in key):
        raise InvalidRequest(f"{HEADER}: expected 1 to {MAX_KEY_LENGTH} printable ASCII "
                             "characters", field=HEADER)


def fingerprint_of(method: str, path: str, raw: bytes) -> str:
    """The request a key was first used with: method, path and body (as JSON when it is, so
    that spacing and the order of keys do not make a retry another request)."""
    try:
        body = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, RecursionError):
        body = raw
    digest = hashlib.sha256(f"{method} {path}\n".encode())
    digest.update(body)
    return digest.hexdigest()
