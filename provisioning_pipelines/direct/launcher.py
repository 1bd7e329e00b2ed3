"""Launching a flow's Dagster job through the webserver, for when direct provisioning is off.

The job is submitted over the webserver's GraphQL API, so it goes through the instance's run
coordinator (queued, one run per graph) like a UI launch. The run is tagged with the operation id:
its ``progress`` resource appends to the same operation's events (when both processes share the
Redis event store), and this launcher waits for the run's end and reports its outcome, so a
caller sees one interface whichever way the work ran. The run's tags, config and result come
from the flow's own description of its runs, as for every other trigger.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol
from urllib.parse import urlparse

from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from provisioning_pipelines.errors import ProvisioningError, ServiceUnavailable
from provisioning_pipelines.flows import Flow
from provisioning_pipelines.flows.steps import OPERATION_TAG
from provisioning_pipelines.services.provisioning.claims import RetryScheduled

logger = logging.getLogger("provisioning_pipelines.direct")

TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


class JobLauncher(Protocol):
    def run(self, flow: Flow, config: Any, *, operation_id: str) -> dict[str, Any]: ...


class RunFailed(ProvisioningError):
    code = "run_failed"


class GraphQLJobLauncher:
    def __init__(self, url: str, resources: dict[str, Any], *, poll_seconds: float = 0.5,
                 timeout_seconds: float = 900) -> None:
        self.url = url
        parsed = urlparse(url)
        self.client = DagsterGraphQLClient(parsed.hostname or "127.0.0.1",
                                           port_number=parsed.port,
                                           use_https=parsed.scheme == "https")
        self.resources = resources
        self.poll_seconds = poll_seconds
        self.timeout_seconds = timeout_seconds

    def run(self, flow: Flow, config: Any, *, operation_id: str) -> dict[str, Any]:
        with self._reachable():
            run_id = self.client.submit_job_execution(
                flow.job_name, run_config=flow.run_config(config),
                tags=flow.run_tags(config, **{OPERATION_TAG: operation_id}),
            )
        deadline = time.monotonic() + self.timeout_seconds
        status = "QUEUED"
        while time.monotonic() < deadline:
            with self._reachable():
                status = self.client.get_run_status(run_id).value
            if status in TERMINAL:
                break
            time.sleep(self.poll_seconds)
        result = flow.result(self.resources["database"].get(), config)
        if status != "SUCCESS" and result.get("status") == "provisioning":
            # The run's attempt failed with attempts left: the run said so on the operation,
            # and the sensor's next run continues it.
            raise RetryScheduled(result["subscription_id"], attempt=result.get("attempts") or 0,
                                 max_attempts=self.resources["policy"].get().max_attempts,
                                 reason=result.get("error") or f"the run ended {status}",
                                 reason_code="run_failed", retry_in=None)
        if status != "SUCCESS":
            raise RunFailed(f"Dagster run {run_id} ended {status}"
                            + (f": {result['error']}" if result.get("error") else ""))
        return {**result, "run_id": run_id}

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        """The webserver not answering is an outage a caller is told in one line."""
        try:
            yield
        except DagsterGraphQLClientError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            logger.info("the Dagster webserver at %s did not answer: %s", self.url,
                           first[:200])
            raise ServiceUnavailable("the Dagster webserver did not answer; try again "
                                     "shortly") from exc
