"""The provisioning flows, each an ordered list of steps defined once."""

from provisioning_pipelines.flows.graph import GRAPH_FLOW, GraphConfig
from provisioning_pipelines.flows.repository import REPOSITORY_FLOW, RepositoryConfig
from provisioning_pipelines.flows.steps import Flow, Outcome, Policy, Step, StepContext
from provisioning_pipelines.flows.subgraph import SUBGRAPH_FLOW, SubgraphConfig
from provisioning_pipelines.flows.subscription import SubscriptionConfig

FLOWS: tuple[Flow, ...] = (GRAPH_FLOW, REPOSITORY_FLOW, SUBGRAPH_FLOW)

__all__ = [
    "FLOWS",
    "GRAPH_FLOW",
    "REPOSITORY_FLOW",
    "SUBGRAPH_FLOW",
    "Flow",
    "GraphConfig",
    "Outcome",
    "Policy",
    "RepositoryConfig",
    "Step",
    "StepContext",
    "SubgraphConfig",
    "SubscriptionConfig",
]
