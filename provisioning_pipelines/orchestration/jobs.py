"""Dagster jobs built from the flows: one op per step, chained in the flow's order.

Adding a step to a flow's list is the whole change: the job and the direct executor both pick it
up. Each op is a thin adapter over the step runner (``flows/runner.py``): a transient error comes
back as ``RetryLater`` and becomes Dagster's ``RetryRequested`` (so the UI shows the retry, with
the delay Dagster itself would compute); a final error, already undone by the runner, becomes
a one-line ``Failure``. Steps shared by two flows (``claim_subscription``,
``activate_subscription``) become one op definition, as Dagster requires op names to be unique
in a code location.
"""

# No ``from __future__ import annotations``: Dagster reads the ops' parameter annotations
# (config class, resources) as real objects.

from typing import Any

from dagster import (
    Failure,
    GraphDefinition,
    In,
    JobDefinition,
    OpDefinition,
    OpExecutionContext,
    Out,
    RetryRequested,
    graph,
    op,
)

from provisioning_pipelines.errors import ProvisioningError
from provisioning_pipelines.flows import (
    FLOWS,
    Flow,
    Outcome,
    RetryLater,
    Step,
    materialization,
    run_step,
)
from provisioning_pipelines.flows.public import detail
from provisioning_pipelines.flows.steps import FLOW_TAG, OPERATION_TAG, USER_TAG
from provisioning_pipelines.runtime.progress import end_on_error
from provisioning_pipelines.runtime.resources import (
    BackupsResource,
    DatabaseResource,
    GraphEngineResource,
    PolicyResource,
    ProgressResource,
    step_context,
)

_ops: dict[str, OpDefinition] = {}


def run_step_in_op(step: Step, context: OpExecutionContext, value: Any,
                   resources: dict[str, Any]) -> Any:
    """Run one step inside an op and log its outcome as the asset's materialization."""
    progress: ProgressResource = resources["progress"]
    ctx = step_context(resources, method="dagster", log=context.log,
                       operation_id=context.run.tags.get(OPERATION_TAG))
    operation = progress.reporter(context.log, ctx.operation_id)
    if step.config_cls is not None:  # the flow's first step: the run has begun
        operation.start(f"Dagster run {context.run_id} started ({context.job_name})")
    try:
        output = run_step(step, ctx, value, retries_done=context.retry_number,
                          hand_over_retries=True)
    except RetryLater as retry:
        raise RetryRequested(max_retries=retry.max_retries,
                             seconds_to_wait=retry.delay) from retry.cause
    except Exception as exc:
        end_on_error(operation, exc, made_here=False)  # a run continues its launcher's operation
        metadata = {"error": type(exc).__name__, "step": step.name}
        if isinstance(exc, ProvisioningError) and exc.__cause__ is None:
            # A refusal (unpaid, over a limit, ...) is one line and its field, not a trace.
            raise Failure(description=f"{step.name}: {exc.message}",
                          metadata={**metadata, "field": exc.field or ""},
                          allow_retries=False) from None
        # The operator's view (the run's log) keeps the raw cause; the customer's never does.
        cause = f" ({detail(exc.__cause__)})" if isinstance(exc, ProvisioningError) \
            and exc.__cause__ is not None else ""
        raise Failure(description=f"{step.name}: {detail(exc)}{cause}", metadata=metadata,
                      allow_retries=False) from exc
    if isinstance(output, Outcome):
        if output.materialize:
            context.log_event(materialization(output, "dagster"))
        context.add_output_metadata({"result": output.result})
        if not output.pending:
            operation.complete({**output.result, "run_id": context.run_id})
    return output


def label_run(context: OpExecutionContext, config: Any, database: DatabaseResource) -> None:
    """Add the flow's tags (and the owner's) that a run lacks: a UI launch carries only what
    the operator typed.

    Every other trigger (sensor, launcher) sets them at launch, where the run queue's per-graph
    limit sees them; this only makes a UI-launched run findable by subscription, graph and user.
    """
    flow = next((f for f in FLOWS if f.job_name == context.job_name), None)
    if flow is None:
        return
    tags = flow.run_tags(config)
    if USER_TAG not in context.run.tags:
        owner = flow.owner(database.get(), config)
        if owner is not None:
            tags[USER_TAG] = owner
    missing = {key: value for key, value in tags.items() if key not in context.run.tags}
    if missing:
        context.instance.add_run_tags(context.run_id, missing)


def op_for(step: Step) -> OpDefinition:
    """One op per step; the first step of a flow takes the flow's config."""
    if step.name in _ops:
        return _ops[step.name]
    common: dict[str, Any] = dict(name=step.name, description=step.description,
                                  retry_policy=step.retry, out=Out(Any))
    if step.config_cls is not None:
        def compute_with_config(context: OpExecutionContext, config: Any,
                                database: DatabaseResource, graph_engine: GraphEngineResource,
                                progress: ProgressResource, policy: PolicyResource,
                                backups: BackupsResource) -> Any:
            label_run(context, config, database)
            return run_step_in_op(step, context, config, {
                "database": database, "graph_engine": graph_engine, "progress": progress,
                "policy": policy, "backups": backups})

        # Dagster infers Pythonic config from the annotation of the ``config`` parameter.
        compute_with_config.__annotations__["config"] = step.config_cls
        definition = op(**common)(compute_with_config)
    else:
        def compute(context: OpExecutionContext, work: Any, database: DatabaseResource,
                    graph_engine: GraphEngineResource, progress: ProgressResource,
                    policy: PolicyResource, backups: BackupsResource) -> Any:
            return run_step_in_op(step, context, work, {
                "database": database, "graph_engine": graph_engine, "progress": progress,
                "policy": policy, "backups": backups})

        definition = op(ins={"work": In(Any)}, **common)(compute)
    _ops[step.name] = definition
    return definition


def job_for(flow: Flow) -> JobDefinition:
    ops = [op_for(step) for step in flow.steps]

    def body() -> None:
        value = ops[0]()
        for next_op in ops[1:]:
            value = next_op(value)

    body.__name__ = flow.name
    flow_graph: GraphDefinition = graph(name=flow.name, description=flow.description)(body)
    return flow_graph.to_job(name=flow.job_name, description=flow.description,
                             tags={FLOW_TAG: flow.name})


JOBS: dict[str, JobDefinition] = {flow.name: job_for(flow) for flow in FLOWS}
provision_graph_job = JOBS["graph"]
provision_repository_job = JOBS["repository_access"]
create_subgraph_job = JOBS["subgraph"]
