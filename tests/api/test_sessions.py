"""Browser sessions end when they are ended: signing out ends the token on every API worker, a
token cannot outlive the session's lifetime, and no shared deployment signs them with a key
anyone could know."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from dagster import DagsterInstance

from provisioning_pipelines.api.app import create_app
from provisioning_pipelines.direct import DirectExecutor
from provisioning_pipelines.errors import SettingsError
from provisioning_pipelines.services.access.sessions import SESSION_SECONDS
from provisioning_pipelines.settings import load_settings
from provisioning_pipelines.storage.db import Database
from tests.api.helpers import SESSION_SECRET, Api, make_api, serve
from tests.api.test_workers import children_of, wait_for
from tests.conftest import POSTGRES_URL, REDIS_URL
from tests.factories import new_customer
from tests.serving import CLI, api_process, server_env


def worker_of(answer: httpx.Response, workers: list[int]) -> int | None:
    """The worker process holding the server's end of the connection ``answer`` came on: the
    socket whose addresses are that connection's (``/proc/net/tcp``), among the workers' fds."""
    client_port = answer.extensions["network_stream"].get_extra_info("client_addr")[1]
    server_port = answer.url.port
    inodes = {fields[9] for fields in (line.split() for line in
                                       Path("/proc/net/tcp").read_text().splitlines()[1:])
              if fields[1].endswith(f":{server_port:04X}")
              and fields[2].endswith(f":{client_port:04X}")}
    for pid in workers:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) in {f"socket:[{inode}]" for inode in inodes}:
                    return pid
    return None


def resign(token: str, expires: int, secret: str) -> str:
    """The token with another expiry, signed as the server signs: what a leaked key makes."""
    first = token.split(".")[0]
    body = f"{first}.{expires}"
    return f"{body}.{hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()}"


@pytest.mark.postgres
@pytest.mark.redis
def test_signing_out_ends_the_session_on_every_worker(
    postgres_database: Database, postgres_app_url: str, redis_prefix: str, tmp_path: Path,
) -> None:
    user = new_customer(postgres_database)
    env = server_env(tmp_path, DATABASE_URL=postgres_app_url, REDIS_URL=REDIS_URL,
                     REDIS_KEY_PREFIX=redis_prefix)
    with api_process(env, tmp_path / "serve.log", workers=2) as server:
        wait_for(lambda: len(children_of(server.process.pid)) == 2, 60,
                 "the workers did not start")
        workers = children_of(server.process.pid)
        origin = {"Origin": server.url}
        signed = httpx.post(f"{server.url}/v1/session", json={"api_key": user.api_key},
                            headers=origin, timeout=30)
        token = signed.cookies["pp_session"]

        def answered(status: int) -> set[int]:
            """Which workers answered the token with ``status``: a new connection each time
            (the kernel spreads them over the workers' sockets), until both have."""
            seen: set[int] = set()
            for _ in range(200):
                with httpx.Client(timeout=30) as client:
                    answer = client.get(f"{server.url}/v1/subscriptions",
                                        headers={"Cookie": f"pp_session={token}"})
                    assert answer.status_code == status
                    seen.add(worker_of(answer, workers))
                if seen >= set(workers):
                    break
            return seen

        assert answered(200) == set(workers)
        out = httpx.delete(f"{server.url}/v1/session", cookies={"pp_session": token},
                           headers=origin, timeout=30)
        assert out.status_code == 204
        assert answered(401) == set(workers)


def test_a_token_cannot_live_longer_than_a_session(api: Api) -> None:
    user = new_customer(api.database)
    with httpx.Client(base_url=api.url, headers={"Origin": api.url}) as client:
        token = client.post("/v1/session", json={"api_key": user.api_key}).cookies["pp_session"]
    now = int(time.time())
    cases = {"genuine": token,
             "year 2100": resign(token, 4102444800, SESSION_SECRET),
             "an hour too long": resign(token, now + SESSION_SECONDS + 3600, SESSION_SECRET),
             "just expired": resign(token, now - 1, SESSION_SECRET)}
    answers = {}
    for name, value in cases.items():
        with httpx.Client(base_url=api.url, cookies={"pp_session": value}) as client:
            answers[name] = client.get("/v1/subscriptions").status_code
    assert answers == {"genuine": 200, "year 2100": 401, "an hour too long": 401,
                       "just expired": 401}


def test_a_rotated_session_secret_keeps_browsers_signed_in_while_the_previous_is_given(
        api: Api, resources: dict[str, Any], dagster_instance: DagsterInstance) -> None:
    user = new_customer(api.database)
    with httpx.Client(base_url=api.url, headers={"Origin": api.url}) as client:
        old_token = client.post("/v1/session", json={"api_key": user.api_key}).cookies[
            "pp_session"]
    rotating, rotated_executor = make_api(api.database, resources, dagster_instance,
                                          SESSION_SECRET="a-new-session-secret",
                                          SESSION_SECRET_PREVIOUS=SESSION_SECRET)
    rotated, done_executor = make_api(api.database, resources, dagster_instance,
                                      SESSION_SECRET="a-new-session-secret")
    try:
        with serve(rotating) as during, serve(rotated) as after:
            def status(url: str, token: str) -> int:
                with httpx.Client(base_url=url, cookies={"pp_session": token}) as client:
                    return client.get("/v1/subscriptions").status_code

            with httpx.Client(base_url=during, headers={"Origin": during}) as client:
                new_token = client.post("/v1/session", json={"api_key": user.api_key}
                                        ).cookies["pp_session"]
            assert (status(during, old_token), status(during, new_token)) == (200, 200)
            assert (status(after, old_token), status(after, new_token)) == (401, 200)
    finally:
        rotated_executor.close()
        done_executor.close()


def embedded_executor(tmp_path: Path) -> DirectExecutor:
    from provisioning_pipelines.direct.executor import build_executor

    return build_executor(load_settings(DATA_DIR=str(tmp_path)))


@pytest.mark.parametrize("shared", [{"DATABASE_URL": POSTGRES_URL}, {"REDIS_URL": REDIS_URL}],
                         ids=["postgres", "redis"])
def test_no_server_starts_on_development_secrets_outside_the_embedded_default(
    shared: dict[str, str], tmp_path: Path, dagster_instance: DagsterInstance,
) -> None:
    executor = embedded_executor(tmp_path)
    try:
        with pytest.raises(SettingsError, match="BILLING_WEBHOOK_SECRET: the local development"):
            create_app(load_settings(DATA_DIR=str(tmp_path), **shared), executor)
        own_webhook_secret = load_settings(DATA_DIR=str(tmp_path), **shared,
                                           BILLING_WEBHOOK_SECRET="whsec_of_our_own")
        with pytest.raises(SettingsError, match="SESSION_SECRET: required"):
            create_app(own_webhook_secret, executor)
        with pytest.raises(SettingsError, match="SESSION_SECRET"):
            own_webhook_secret.resolved_session_secret  # noqa: B018  (never derived there)
        create_app(load_settings(DATA_DIR=str(tmp_path), **shared,
                                 BILLING_WEBHOOK_SECRET="whsec_of_our_own",
                                 SESSION_SECRET="of our own"), executor)
        # The embedded default still starts with nothing set.
        embedded = load_settings(DATA_DIR=str(tmp_path))
        create_app(embedded, executor, dagster_instance=lambda: dagster_instance)
        assert embedded.resolved_session_secret
    finally:
        executor.close()


def test_serve_on_postgres_with_the_development_secret_stops_with_one_line(
    tmp_path: Path, postgres_app_url: str,
) -> None:
    env: dict[str, Any] = server_env(tmp_path, DATABASE_URL=postgres_app_url)
    del env["BILLING_WEBHOOK_SECRET"], env["SESSION_SECRET"]
    done = subprocess.run([CLI, "serve", "--port", "0"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: invalid settings: BILLING_WEBHOOK_SECRET")
    assert "Traceback" not in done.stderr
