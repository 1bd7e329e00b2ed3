"""The whole story on the embedded default, over real HTTP: ``make demo``.

A user asks for a graph, a signed ``checkout.session.completed`` reaches the real app, the
provisioning is followed live on the SSE stream, then a subgraph forks the graph's data and is
queried over HTTP (Cypher), the user gets access to the ``sec`` repository, and the graph is
backed up, the backup restored into it, and the graph deleted (suspended for the grace). The
materializations land in the local Dagster instance (``.data/dagster``), so ``dagster dev``
shows them. Every run makes a new user, so it can be run again and again.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from typing import Any

import httpx
import uvicorn
from rich.console import Console

from provisioning_pipelines.api.app import create_app
from provisioning_pipelines.cli.watch import watch
from provisioning_pipelines.direct import build_executor
from provisioning_pipelines.services.access import accounts
from provisioning_pipelines.services.billing.events import billing_event, signed_delivery
from provisioning_pipelines.settings import Settings
from provisioning_pipelines.storage.db import get_database
from provisioning_pipelines.storage.migrate import upgrade_once


def run_demo(settings: Settings) -> int:
    console = Console(soft_wrap=True)  # piped output keeps whole lines
    upgrade_once(settings.resolved_database_url)
    home = settings.prepare_dagster_home()
    executor = build_executor(settings)
    server, url = _serve(create_app(settings, executor))
    try:
        with get_database(settings.resolved_database_url).session() as session:
            user = accounts.create_user(session, email=f"demo-{uuid.uuid4().hex[:6]}@example.com",
                                        org_name="Demo Org")
        console.print(f"[bold]1.[/] user {user.user_id} (API key {user.api_key[:10]}…)")
        api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {user.api_key}"},
                           timeout=30)

        graph_sub = _subscribe(api, {"resource_type": "graph", "plan_name": "ladybug-large",
                                     "graph": {"name": "Acme knowledge graph",
                                               "schema_extensions": ["accounting", "crm"],
                                               "entity": {"name": "Acme Corp",
                                                          "website": "https://acme.example"}}})
        console.print(f"[bold]2.[/] graph subscription {graph_sub} (pending payment); "
                      "delivering a signed checkout.session.completed")
        operation = _pay(url, settings, graph_sub)
        graph = _follow(console, url, user.api_key, operation)
        where, tables = _placed(executor, graph["graph_id"])  # the API shows no server paths
        console.print(f"   graph [bold green]{graph['graph_id']}[/] at {where}")
        console.print(f"   {len(tables)} tables: {', '.join(tables)}")

        console.print("[bold]3.[/] subgraph 'analysis' forking the parent's data")
        answer = api.post(f"/v1/graphs/{graph['graph_id']}/subgraphs",
                          json={"name": "analysis", "fork_parent": True})
        answer.raise_for_status()
        child = _follow(console, url, user.api_key, answer.json()["operation_id"])
        copied = {t: n for t, n in (child.get("rows_copied") or {}).items() if n}
        console.print(f"   subgraph [bold green]{child['graph_id']}[/], fork "
                      f"{child['fork_status']}, rows copied: {copied}")
        cypher = "MATCH (e:Entity) RETURN e.name AS name, e.website AS website"
        asked = api.post(f"/v1/graphs/{child['graph_id']}/query", json={"query": cypher})
        asked.raise_for_status()
        found = asked.json()
        console.print(f"   queried over HTTP (POST /v1/graphs/{child['graph_id']}/query): "
                      f"{cypher} -> {found['columns']} {found['rows']} in "
                      f"{found['elapsed_ms']:g} ms", markup=False)

        repo_sub = _subscribe(api, {"resource_type": "repository", "plan_name": "sec-starter",
                                    "repository": "sec"})
        console.print(f"[bold]4.[/] access to the sec repository ({repo_sub})")
        access = _follow(console, url, user.api_key, _pay(url, settings, repo_sub))
        console.print(f"   {access['access_level']} access to {access['repository']}, "
                      f"{access['credits_added']} credits")
        graph_id = graph["graph_id"]
        console.print(f"[bold]5.[/] a backup of {graph_id}, restored into it (its data "
                      "replaced by the backup's), then its deletion (suspended for the grace)")
        made = api.post(f"/v1/graphs/{graph_id}/backups")
        made.raise_for_status()
        backup = _follow(console, url, user.api_key, made.json()["operation_id"])
        console.print(f"   backup {backup['backup_id']}: {backup['size_bytes']:,} bytes, "
                      f"sha256 {backup['checksum'][:12]}…, kept until {backup['expires_at'][:10]}")
        restore = api.post(f"/v1/graphs/{graph_id}/backups/{backup['backup_id']}/restore")
        restore.raise_for_status()
        copy = _follow(console, url, user.api_key, restore.json()["operation_id"])
        console.print(f"   {copy['graph_id']} ({copy['status']}) restored from "
                      f"{backup['backup_id']}: {len(copy['tables'])} tables")
        deleted = api.delete(f"/v1/graphs/{graph_id}")
        deleted.raise_for_status()
        gone = _follow(console, url, user.api_key, deleted.json()["operation_id"])
        console.print(f"   {graph_id} is {gone['status']}; deleted after "
                      f"{gone['delete_after'][:16]} unless restored (POST /v1/graphs/{graph_id}"
                      "/restore)")
        executor.reporter.wait_idle(settings.dagster_materialization_timeout)
        scrape = api.get("/metrics").text
    finally:
        server.should_exit = True
        executor.close()  # waits for the background reports to Dagster
    reports = executor.reporter.outcomes if executor.reporter else {}
    console.print(f"[bold]6.[/] reported to the Dagster instance in {home}: {reports}")
    console.print("   see them with: make dev (the Dagster UI at http://127.0.0.1:3000)")
    saved = settings.data_dir / "demo-metrics.txt"
    saved.write_text(scrape)
    console.print(f"[bold]7.[/] the API's /metrics after the demo: {saved}")
    return 0


def _serve(app: Any) -> tuple[uvicorn.Server, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server, f"http://127.0.0.1:{port}"


def _placed(executor: Any, graph_id: str) -> tuple[str, list[str]]:
    """Where the graph lives and its tables, asked of its host."""
    from provisioning_pipelines.services.capacity import hosts
    from provisioning_pipelines.services.graphs import records

    with executor.resources["database"].get().session() as session:
        graph = records.top_level_graph(session, graph_id)
        host = hosts.graph_host(session, executor.resources["graph_engine"].hosts(),
                                graph.host_id)
        where = graph.database_path
    return where, [name for name, _ in host.tables(graph_id)]


def _subscribe(api: httpx.Client, body: dict[str, Any]) -> str:
    answer = api.post("/v1/subscriptions", json=body)
    answer.raise_for_status()
    return answer.json()["subscription_id"]


def _pay(url: str, settings: Settings, subscription_id: str) -> str:
    event = billing_event(subscription_id, event_id=f"evt_demo_{uuid.uuid4().hex[:12]}",
                          customer="cus_demo")
    payload, headers = signed_delivery(event, settings.billing_webhook_secret)
    answer = httpx.post(f"{url}/v1/webhooks/billing", content=payload, headers=headers)
    answer.raise_for_status()
    return answer.json()["operation_id"]


def _follow(console: Console, url: str, api_key: str, operation_id: str) -> dict[str, Any]:
    watched = watch(url, api_key, operation_id, console=console)
    if watched.status != "completed" or watched.result is None:
        raise RuntimeError(f"operation {operation_id} {watched.status}: {watched.error}")
    return watched.result
