"""Launching a flow's Dagster job through the webserver, for when direct provisioning is off.

The job is submitted over the webserver's GraphQL API, so it goes through the instance's run
coordinator (queued, one run per graph) like a UI launch. The run is tagged with the operation id:
its ``progress`` resource appends to the same operation's events (when both processes share the
Redis event store), and this launcher waits for the run's end and reports its outcome, so a
caller sees one interface whichever way the work ran.
"""

from __future__ import annotations

import time
from typing import Any, Protocol
from urllib.parse import urlparse

from dagster_graphql import DagsterGraphQLClient

from provisioning_pipelines.errors import ProvisioningError
from provisioning_pipelines.flows import Flow
from provisioning_pipelines.resources import OPERATION_TAG
from provisioning_pipelines.services import graphs
from provisioning_pipelines.storage.models import Graph, Subscription

TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


class JobLauncher(Protocol):
    def run(self, flow: Flow, config: Any, *, operation_id: str) -> dict[str, Any]: ...


class RunFailed(ProvisioningError):
    code = "run_failed"


def run_tags(flow: Flow, config: Any, operation_id: str) -> dict[str, str]:
    tags = {OPERATION_TAG: operation_id}
    if hasattr(config, "subscription_id"):
        tags["provisioning/subscription_id"] = config.subscription_id
        if flow.name == "graph":
            tags["provisioning/graph_id"] = graphs.graph_id_for_subscription(
                config.subscription_id)
    if hasattr(config, "parent_graph_id"):
        tags["provisioning/graph_id"] = config.parent_graph_id
        tags["provisioning/user_id"] = config.user_id
    return tags


def run_config(flow: Flow, config: Any) -> dict[str, Any]:
    values = {name: getattr(config, name) for name in type(config).model_fields}
    return {"ops": {flow.steps[0].name: {"config": values}}}


class GraphQLJobLauncher:
    def __init__(self, url: str, resources: dict[str, Any], *, poll_seconds: float = 0.5,
                 timeout_seconds: float = 900) -> None:
        parsed = urlparse(url)
        self.client = DagsterGraphQLClient(parsed.hostname or "127.0.0.1",
                                           port_number=parsed.port,
                                           use_https=parsed.scheme == "https")
        self.resources = resources
        self.poll_seconds = poll_seconds
        self.timeout_seconds = timeout_seconds

    def run(self, flow: Flow, config: Any, *, operation_id: str) -> dict[str, Any]:
        run_id = self.client.submit_job_execution(
            flow.job_name, run_config=run_config(flow, config),
            tags=run_tags(flow, config, operation_id),
        )
        deadline = time.monotonic() + self.timeout_seconds
        status = "QUEUED"
        while time.monotonic() < deadline:
            status = self.client.get_run_status(run_id).value
            if status in TERMINAL:
                break
            time.sleep(self.poll_seconds)
        result = self._result(flow, config)
        if status != "SUCCESS":
            raise RunFailed(f"Dagster run {run_id} ended {status}"
                            + (f": {result['error']}" if result.get("error") else ""))
        return {**result, "run_id": run_id}

    def _result(self, flow: Flow, config: Any) -> dict[str, Any]:
        """What the run left behind, read back from the database."""
        with self.resources["database"].get().session() as session:
            if hasattr(config, "subscription_id"):
                sub = session.get(Subscription, config.subscription_id)
                if sub is None:
                    return {"error": f"no subscription {config.subscription_id!r}"}
                return {"subscription_id": sub.id, "status": sub.status,
                        "resource_type": sub.resource_type, "resource_id": sub.resource_id,
                        "error": sub.last_error}
            graph = session.get(Graph, f"{config.parent_graph_id}_{config.name}")
            if graph is None:
                return {"error": "the subgraph was not created"}
            return {"graph_id": graph.id, "parent_graph_id": graph.parent_graph_id,
                    "database_path": graph.database_path,
                    "fork_status": (graph.details or {}).get("fork_status", "not_requested")}
