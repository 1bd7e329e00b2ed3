"""The provisioning flows, each an ordered list of steps defined once, and the one step runner."""

from provisioning_pipelines.flows.backup import (
    BACKUP_FLOW,
    RESTORE_FLOW,
    BackupConfig,
    RestoreConfig,
)
from provisioning_pipelines.flows.deletion import (
    DELETION_FLOW,
    SUBGRAPH_DELETION_FLOW,
    DeletionConfig,
    SubgraphDeletionConfig,
)
from provisioning_pipelines.flows.graph import GRAPH_FLOW, GraphConfig
from provisioning_pipelines.flows.move import MOVE_FLOW, MoveConfig
from provisioning_pipelines.flows.replacement import REPLACEMENT_FLOW, ReplacementConfig
from provisioning_pipelines.flows.repository import REPOSITORY_FLOW, RepositoryConfig
from provisioning_pipelines.flows.runner import RetryLater, execute_flow, materialization, run_step
from provisioning_pipelines.flows.steps import Flow, Outcome, Policy, Step, StepContext
from provisioning_pipelines.flows.subgraph import SUBGRAPH_FLOW, SubgraphConfig
from provisioning_pipelines.flows.subscription import SubscriptionConfig
from provisioning_pipelines.flows.suspension import (
    REACTIVATION_FLOW,
    SUSPENSION_FLOW,
    LifecycleConfig,
)
from provisioning_pipelines.flows.triggers import (
    SUBSCRIPTION_FLOWS,
    BillingChange,
    FollowUp,
    follow_up,
    started_by,
)

#: Provisioning, then the rest of a resource's life.
FLOWS: tuple[Flow, ...] = (GRAPH_FLOW, REPOSITORY_FLOW, SUBGRAPH_FLOW, SUSPENSION_FLOW,
                           REACTIVATION_FLOW, DELETION_FLOW, SUBGRAPH_DELETION_FLOW, BACKUP_FLOW,
                           RESTORE_FLOW, REPLACEMENT_FLOW, MOVE_FLOW)

__all__ = [
    "BACKUP_FLOW",
    "DELETION_FLOW",
    "FLOWS",
    "GRAPH_FLOW",
    "MOVE_FLOW",
    "REACTIVATION_FLOW",
    "REPLACEMENT_FLOW",
    "REPOSITORY_FLOW",
    "RESTORE_FLOW",
    "SUBGRAPH_DELETION_FLOW",
    "SUBGRAPH_FLOW",
    "SUBSCRIPTION_FLOWS",
    "SUSPENSION_FLOW",
    "BackupConfig",
    "BillingChange",
    "DeletionConfig",
    "Flow",
    "FollowUp",
    "GraphConfig",
    "LifecycleConfig",
    "MoveConfig",
    "Outcome",
    "Policy",
    "ReplacementConfig",
    "RepositoryConfig",
    "RestoreConfig",
    "RetryLater",
    "Step",
    "StepContext",
    "SubgraphConfig",
    "SubgraphDeletionConfig",
    "SubscriptionConfig",
    "execute_flow",
    "follow_up",
    "materialization",
    "run_step",
    "started_by",
]
