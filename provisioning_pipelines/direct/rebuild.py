"""An operation the event store lost, rebuilt from the subscription it reports on.

Redis is required to keep what it is given (``docs/reliability.md``), and the API checks it at
start-up; if it forgets anyway (restarted without persistence, a key evicted), a provisioning's
operation is written again from the subscription row, which records the operation's id: its
customer reconnects to a truthful stream (completed with the resource, failed with the error,
or running, continued by the attempt still at work) instead of a 404. A lifecycle operation
(backup, restore, deletion) has no such row and stays lost; its outcome is in the graph's state
and the audit log.
"""

from __future__ import annotations

import logging

from provisioning_pipelines.flows.triggers import SUBSCRIPTION_FLOWS
from provisioning_pipelines.services.billing import subscriptions as billing
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.events import Operation, OperationStore, is_operation_id

logger = logging.getLogger(__name__)

REBUILT = "the event store lost this operation's earlier events; rebuilt from the subscription"


def rebuild_lost_operation(database: Database, store: OperationStore, operation_id: str,
                           user_id: str) -> Operation | None:
    """The operation, written again from its subscription; None if no subscription of the
    user's was reported by it."""
    if not is_operation_id(operation_id):
        return None
    with database.session() as session:
        subscription = billing.reported_by(session, operation_id, user_id)
        if subscription is None or subscription.resource_type not in SUBSCRIPTION_FLOWS:
            return None
        found = billing.summary(subscription)
    flow = SUBSCRIPTION_FLOWS[found["resource_type"]]
    try:
        store.create(flow.operation_kind, user_id=user_id, operation_id=operation_id)
    except ValueError:
        return store.get(operation_id)  # rebuilt meanwhile, or written by the running attempt
    logger.warning("operation %s was lost by the event store; rebuilt from subscription %s (%s)",
                   operation_id, found["subscription_id"], found["status"])
    store.start(operation_id, REBUILT)
    if found["resource_id"] and found["status"] != "failed":
        result = {key: found[key] for key in ("subscription_id", "status", "resource_type",
                                              "resource_id")}
        if found["resource_type"] == "graph":
            result["graph_id"] = found["resource_id"]
        store.complete(operation_id, {**result, "operation_id": operation_id, "rebuilt": True})
    elif found["status"] == "failed":
        store.fail(operation_id, found["error"] or "the provisioning failed")
    return store.get(operation_id)
