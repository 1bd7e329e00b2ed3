"""The provisioning flows, each an ordered list of steps defined once, and the one step runner."""

from provisioning_pipelines.flows.graph import GRAPH_FLOW, GraphConfig
from provisioning_pipelines.flows.repository import REPOSITORY_FLOW, RepositoryConfig
from provisioning_pipelines.flows.runner import RetryLater, execute_flow, materialization, run_step
from provisioning_pipelines.flows.steps import Flow, Outcome, Policy, Step, StepContext
from provisioning_pipelines.flows.subgraph import SUBGRAPH_FLOW, SubgraphConfig
from provisioning_pipelines.flows.subscription import SubscriptionConfig

FLOWS: tuple[Flow, ...] = (GRAPH_FLOW, REPOSITORY_FLOW, SUBGRAPH_FLOW)
#: The flow that provisions each kind of paid subscription.
SUBSCRIPTION_FLOWS: dict[str, Flow] = {"graph": GRAPH_FLOW, "repository": REPOSITORY_FLOW}

__all__ = [
    "FLOWS",
    "GRAPH_FLOW",
    "REPOSITORY_FLOW",
    "SUBGRAPH_FLOW",
    "SUBSCRIPTION_FLOWS",
    "Flow",
    "GraphConfig",
    "Outcome",
    "Policy",
    "RepositoryConfig",
    "RetryLater",
    "Step",
    "StepContext",
    "SubgraphConfig",
    "SubscriptionConfig",
    "execute_flow",
    "materialization",
    "run_step",
]
