"""kill -9 with provisionings in flight, then a restart: how long until every paid subscription
is active, and what is left behind. The fault table in docs/reliability.md comes from this.

    python -m benchmarks.bench_recovery [--in-flight 40] [--postgres URL] [--redis URL]

A real ``provisioning-pipelines serve`` process on PostgreSQL and Redis gets ``--in-flight``
signed payments at once (``DIRECT_MAX_CONCURRENCY`` as large, so all of them start), is killed
with SIGKILL as soon as every payment was acknowledged, and a second server is started on the
same database, Redis and graph folder with the default settings otherwise. Printed: what each
subscription was doing when the first server died, the seconds from the kill until all were
active and until every operation a client was given had ended, and the stray files left.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from sqlalchemy import select

from benchmarks.scratch import ScratchDatabases, delete_redis_prefix
from provisioning_pipelines.services import requests as subscriptions
from provisioning_pipelines.services.access import accounts
from provisioning_pipelines.services.billing.events import billing_event, signed_delivery
from provisioning_pipelines.storage.db import get_database
from provisioning_pipelines.storage.migrate import upgrade
from provisioning_pipelines.storage.models import Subscription

CLI = str(Path(sys.executable).parent / "provisioning-pipelines")
SECRET = "whsec_bench_recovery"


def start(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with log.open("ab") as out:
        process = subprocess.Popen([CLI, "serve", "--port", str(port)], env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            httpx.get(f"{url}/healthz", timeout=5)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.1)


def pay(url: str, subscription_id: str) -> str:
    payload, headers = signed_delivery(
        billing_event(subscription_id, event_id=f"evt_{subscription_id}"), SECRET)
    answer = httpx.post(f"{url}/v1/webhooks/billing", content=payload, timeout=60,
                        headers=headers)
    answer.raise_for_status()
    return answer.json()["operation_id"]


def states(database_url: str, ids: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    with get_database(database_url).session() as session:
        for row in session.scalars(select(Subscription).where(Subscription.id.in_(ids))):
            state = row.status if row.status != "provisioning" else (
                "provisioning, claimed" if row.claim_token else "provisioning, unclaimed")
            counts[state] = counts.get(state, 0) + 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--in-flight", type=int, default=40)
    parser.add_argument("--postgres", default="postgresql+psycopg2://postgres@127.0.0.1:5432/"
                        "postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    name = f"pp_bench_recovery_{uuid.uuid4().hex[:8]}"
    scratch = ScratchDatabases(args.postgres)
    database_url = scratch.create(name)
    folder = Path(tempfile.mkdtemp(prefix="bench-recovery-"))
    try:
        upgrade(database_url)
        with get_database(database_url).session() as session:
            user = accounts.create_user(session, email=f"{name}@example.com")
            ids = [subscriptions.request_graph(session, user_id=user.user_id,
                                               plan_name="ladybug-standard",
                                               graph={"name": f"g{i}"}).id
                   for i in range(args.in_flight)]
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(folder),
               "DATA_DIR": str(folder / "data"), "GRAPH_DATA_DIR": str(folder / "graphs"),
               "DATABASE_URL": database_url, "REDIS_URL": args.redis,
               "REDIS_KEY_PREFIX": f"{name}:", "BILLING_WEBHOOK_SECRET": SECRET,
               "SESSION_SECRET": "session secret of the benchmark",
               "DIRECT_MAX_CONCURRENCY": str(args.in_flight)}
        first, url = start(env, folder / "first.log")
        with ThreadPoolExecutor(args.in_flight) as pool:
            operations = list(pool.map(lambda sub: pay(url, sub), ids))
        first.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        first.wait()
        at_kill = states(database_url, ids)
        leftovers = [p.name for p in (folder / "graphs").rglob(".*.tmp")]
        second, url = start(env, folder / "second.log")
        restarted = time.monotonic() - killed
        while states(database_url, ids).get("active", 0) < len(ids):
            time.sleep(0.1)
        all_active = time.monotonic() - killed
        key = {"Authorization": f"Bearer {user.api_key}"}
        ended: dict[str, int] = {}
        while sum(ended.values()) < len(ids) or set(ended) != {"completed"}:
            ended = {}
            for operation_id in operations:
                status = httpx.get(f"{url}/v1/operations/{operation_id}", headers=key,
                                   timeout=10).json()["status"]
                ended[status] = ended.get(status, 0) + 1
            if time.monotonic() - killed > 300:
                break
            time.sleep(0.2)
        all_ended = time.monotonic() - killed
        time.sleep(1)
        strays = [p.name for p in (folder / "graphs").rglob("*") if p.is_file()
                  and p.name.startswith(".") and ".templates" not in p.parts]
        second.send_signal(signal.SIGTERM)
        second.wait(60)
        print(f"{args.in_flight} paid subscriptions acknowledged, then kill -9")
        print(f"  at the kill: {at_kill}; temp files on disk: {len(leftovers)}")
        print(f"  second server answering after {restarted:.1f} s")
        print(f"  all {len(ids)} active {all_active:.1f} s after the kill")
        print(f"  operations: {ended}, all ended {all_ended:.1f} s after the kill")
        print(f"  stray files left (temp files are swept when older than "
              f"HOUSEKEEPING_STRAY_AGE_SECONDS): {len(strays)}")
    finally:
        scratch.drop_all()
        delete_redis_prefix(args.redis, f"{name}:")
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
