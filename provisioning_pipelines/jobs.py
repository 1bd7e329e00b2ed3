"""Dagster jobs built from the flows: one op per step, chained in the flow's order.

Adding a step to a flow's list is the whole change: the job and the direct executor both pick it
up. Steps shared by two flows (``claim_subscription``, ``activate_subscription``) become one op
definition, as Dagster requires op names to be unique in a code location.
"""

from typing import Any

from dagster import (
    AssetKey,
    AssetMaterialization,
    Failure,
    GraphDefinition,
    In,
    JobDefinition,
    OpExecutionContext,
    Out,
    graph,
    op,
)
from dagster import OpDefinition as _OpDefinition

from provisioning_pipelines.flows import FLOWS, Flow, Outcome, Step, StepContext
from provisioning_pipelines.flows.steps import describe, is_transient
from provisioning_pipelines.resources import OPERATION_TAG

RESOURCE_KEYS = {"database", "graph_engine", "progress", "policy"}
_ops: dict[str, _OpDefinition] = {}


def step_context(context: OpExecutionContext) -> StepContext:
    """The step's view of a Dagster run: the run's resources, its log, its tags."""
    resources = context.resources
    operation_id = context.run.tags.get(OPERATION_TAG)

    def tag_run(tags: dict[str, str]) -> None:
        context.instance.add_run_tags(context.run_id, tags)

    return StepContext(
        database=resources.database.get(),
        engine=resources.graph_engine.get(),
        graph_data_dir=resources.graph_engine.graph_data_dir,
        progress=resources.progress.reporter(context.log, operation_id),
        policy=resources.policy.get(),
        method="dagster",
        log=context.log,
        tag_run=tag_run,
    )


def run_step_in_op(step: Step, context: OpExecutionContext, value: Any) -> Any:
    """Run one step inside an op: retries for transient errors, undo on the final failure."""
    ctx = step_context(context)
    try:
        output = step(ctx, value)
    except Exception as exc:
        max_retries = step.retry.max_retries if step.retry else 0
        if is_transient(exc) and context.retry_number < max_retries:
            raise  # Dagster's RetryPolicy runs the op again
        if step.on_failure is not None:
            step.on_failure(ctx, value, exc)
        raise Failure(description=f"{step.name}: {describe(exc)}", allow_retries=False) from exc
    if isinstance(output, Outcome):
        if output.materialize:
            context.log_event(AssetMaterialization(
                asset_key=AssetKey(list(output.asset_key)),
                metadata=output.materialization_metadata("dagster"),
            ))
        context.add_output_metadata({"result": output.result})
    return output


def op_for(step: Step) -> _OpDefinition:
    """One op per step; the first step of a flow takes the flow's config."""
    if step.name in _ops:
        return _ops[step.name]
    common: dict[str, Any] = dict(name=step.name, description=step.description,
                                  retry_policy=step.retry, required_resource_keys=RESOURCE_KEYS,
                                  out=Out(Any))
    if step.config_cls is not None:
        def compute_with_config(context: OpExecutionContext, config: Any) -> Any:
            return run_step_in_op(step, context, config)

        # Dagster infers Pythonic config from the annotation of the ``config`` parameter.
        compute_with_config.__annotations__["config"] = step.config_cls
        definition = op(**common)(compute_with_config)
    else:
        def compute(context: OpExecutionContext, work: Any) -> Any:
            return run_step_in_op(step, context, work)

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
    return flow_graph.to_job(
        name=flow.job_name,
        description=flow.description,
        tags={"provisioning/flow": flow.name},
    )


JOBS: dict[str, JobDefinition] = {flow.name: job_for(flow) for flow in FLOWS}
provision_graph_job = JOBS["graph"]
provision_repository_job = JOBS["repository_access"]
create_subgraph_job = JOBS["subgraph"]
