"""The rest of a resource's life: cancelled, suspended, reactivated, deleted.

A subscription's row says what billing wants (``active`` or ``canceled``, ``cancel_at`` for a
cancellation at the period's end); the resource follows it through the lifecycle flows, and the
reaper sensor launches a flow for any resource that does not follow yet (a flow that crashed, an
event applied while nobody was up). Each change here is one conditional UPDATE, so two workers
(a webhook's direct path and a sensor's run, say) make it once:

* suspend: ``active`` -> ``suspended``; roles disabled, credit pool frozen, deletion due after
  the grace; for a repository, access revoked and its credits frozen;
* reactivate: ``suspended`` -> ``active`` within the grace, the reverse;
* delete: ``suspended`` (or ``active``, at once, by an operator) -> ``deleting`` -> ``deleted``,
  under a lifecycle claim on the graph (fenced like a subscription's claim), the file before the
  slot: a slot is never freed while its file exists. The row stays, as a tombstone: who, when,
  why are in it and in the audit log.

A subgraph has no life of its own: its row's status changes with its parent's, in the same
transaction (the one that already turns the family's roles off and freezes its pools), rather
than being computed from the parent's when it is read. Every reader of ``graphs.status`` (the
API, ``graphs show`` and ``list``, the state table's refusals, the integrity checks, the
sweeps) then tells the truth without having to know that subgraphs have parents; a computed
status would have to be repeated in each of those queries, and the one that forgot it would
show a suspended subgraph as active (as the integrity checks once counted deleted graphs as
live). Nothing else moves a subgraph's status, so the two cannot drift apart, but the subgraph's
own deletion (``deleting`` before its host is asked, then gone: ``subgraphs.mark_deleting``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, or_, select, update
from sqlalchemy.orm import Session

from provisioning_pipelines.errors import Conflict, Forbidden, GraphMoving, NotFound
from provisioning_pipelines.services import audit
from provisioning_pipelines.services.billing import subscriptions as billing
from provisioning_pipelines.services.billing.states import SUBSCRIPTION
from provisioning_pipelines.services.capacity import hosts
from provisioning_pipelines.services.graphs import records as graphs
from provisioning_pipelines.services.graphs import roles
from provisioning_pipelines.services.graphs.states import GRAPH, LIVE
from provisioning_pipelines.storage.hosts.directory import HostDirectory
from provisioning_pipelines.storage.models import (
    CreditPool,
    CreditTransaction,
    Graph,
    GraphUser,
    RepositoryAccess,
    Subscription,
    utcnow,
)


class GraphClaimLost(Conflict):
    """This worker's lifecycle lease on the graph lapsed and another worker took over."""

    code = "claim_lost"


@dataclass(frozen=True)
class GraphClaim:
    graph_id: str
    token: str


# --- suspension and reactivation -----------------------------------------------------------------


def suspend_graph(session: Session, graph_id: str, *, grace_seconds: float, actor: str,
                  reason: str, now: datetime | None = None) -> bool:
    """``active`` -> ``suspended``: roles off, pool frozen, deletion due after the grace.

    False (and nothing changed) when the graph was not active.
    """
    now = now or utcnow()
    moved = session.execute(
        update(Graph).where(Graph.id == graph_id, Graph.status == GRAPH.source("suspend"))
        .values(status=GRAPH.target("suspend"), suspended_at=now,
                delete_after=now + timedelta(seconds=grace_seconds))
        .execution_options(synchronize_session=False))
    if moved.rowcount != 1:
        return False
    _move_subgraphs(session, graph_id, "suspend", suspended_at=now,
                    delete_after=now + timedelta(seconds=grace_seconds))
    family = _family(session, graph_id)
    session.execute(update(GraphUser).where(GraphUser.graph_id.in_(family))
                    .values(enabled=False).execution_options(synchronize_session=False))
    session.execute(update(CreditPool).where(CreditPool.graph_id.in_(family))
                    .values(status="frozen").execution_options(synchronize_session=False))
    audit.record(session, actor=actor, action="graph.suspended", subject_type="graph",
                 subject_id=graph_id, details={"reason": reason,
                                               "delete_after": (now + timedelta(
                                                   seconds=grace_seconds)).isoformat()})
    return True


def reactivate_graph(session: Session, graph_id: str, *, actor: str) -> bool:
    """``suspended`` -> ``active`` (within the grace: a graph being deleted is not)."""
    moved = session.execute(
        update(Graph).where(Graph.id == graph_id, Graph.status == GRAPH.source("reactivate"))
        .values(status=GRAPH.target("reactivate"), suspended_at=None, delete_after=None)
        .execution_options(synchronize_session=False))
    if moved.rowcount != 1:
        return False
    _move_subgraphs(session, graph_id, "reactivate", suspended_at=None, delete_after=None)
    family = _family(session, graph_id)
    session.execute(update(GraphUser).where(GraphUser.graph_id.in_(family))
                    .values(enabled=True).execution_options(synchronize_session=False))
    session.execute(update(CreditPool).where(CreditPool.graph_id.in_(family))
                    .values(status="active").execution_options(synchronize_session=False))
    audit.record(session, actor=actor, action="graph.reactivated", subject_type="graph",
                 subject_id=graph_id)
    return True


def suspend_repository_access(session: Session, subscription: Subscription, *,
                              actor: str) -> bool:
    """A cancelled repository subscription: its access goes and its credits freeze."""
    revoked = session.execute(delete(RepositoryAccess).where(
        RepositoryAccess.subscription_id == subscription.id)).rowcount
    session.execute(
        update(CreditPool)
        .where(CreditPool.user_id == subscription.user_id,
               CreditPool.repository == (subscription.resource_id or ""))
        .values(status="frozen").execution_options(synchronize_session=False))
    if revoked:
        audit.record(session, actor=actor, action="repository.access_revoked",
                     subject_type="subscription", subject_id=subscription.id)
    return bool(revoked)


def unfreeze_repository_credits(session: Session, subscription: Subscription) -> None:
    session.execute(
        update(CreditPool)
        .where(CreditPool.user_id == subscription.user_id,
               CreditPool.repository == (subscription.resource_id or ""))
        .values(status="active").execution_options(synchronize_session=False))


def _move_subgraphs(session: Session, graph_id: str, transition: str, **values: Any) -> None:
    """The parent's transition, made by its subgraphs too (see the module docstring)."""
    session.execute(
        update(Graph).where(Graph.parent_graph_id == graph_id,
                            Graph.status.in_(GRAPH.sources(transition)))
        .values(status=GRAPH.target(transition), **values)
        .execution_options(synchronize_session=False))


def _family(session: Session, graph_id: str) -> list[str]:
    """The graph and its subgraphs."""
    children = session.scalars(select(Graph.id).where(Graph.parent_graph_id == graph_id))
    return [graph_id, *children]


def resource_state(session: Session, subscription: Subscription) -> str:
    """``none`` (never made), ``live`` (active or suspended) or ``gone`` (deleting, deleted)."""
    if subscription.resource_type == "repository":
        return "live" if subscription.resource_id else "none"
    graph = session.scalar(select(Graph).where(Graph.subscription_id == subscription.id,
                                               Graph.parent_graph_id.is_(None)))
    if graph is None:
        return "none"
    return "live" if graph.status in LIVE else "gone"


# --- the graph's lifecycle claim ------------------------------------------------------------------


#: The graph row's mark while it moves between hosts (``services/upkeep/moves.py``).
MOVING_MARK = "moving"


def claim_graph(session: Session, graph_id: str, *, lease_seconds: float,
                statuses: tuple[str, ...], now: datetime | None = None) -> GraphClaim:
    """Win the graph for one lifecycle operation (backup, deletion, restore), if it is in one of
    ``statuses`` and nobody else holds it."""
    now = now or utcnow()
    token = uuid.uuid4().hex
    won = session.execute(
        update(Graph)
        .where(Graph.id == graph_id, Graph.status.in_(statuses), _graph_free(now))
        .values(lifecycle_token=token,
                lifecycle_lease_expires_at=now + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False))
    if won.rowcount == 1:
        return GraphClaim(graph_id, token)
    graph = session.get(Graph, graph_id)
    if graph is None:
        raise NotFound(f"graph_id: no graph {graph_id!r}", field="graph_id")
    if graph.status not in statuses:
        raise Conflict(f"graph {graph_id!r} is {graph.status}", field="graph_id")
    check_not_moving(session, graph_id)
    raise graphs_busy(graph_id)


def check_not_moving(session: Session, graph_id: str) -> None:
    """Refuse a lifecycle change of a graph (or of a subgraph of one) that is moving to another
    host: a 503 with ``Retry-After``, as its writes get; it is over in a few seconds."""
    graph = session.get(Graph, graph_id)
    if graph is not None and graph.parent_graph_id:
        graph = session.get(Graph, graph.parent_graph_id)
    if graph is not None and (graph.details or {}).get(MOVING_MARK):
        raise GraphMoving(f"graph_id: graph {graph.id} is moving to another host; try again "
                          "in a few seconds", field="graph_id")


class GraphBusy(Conflict):
    """Another lifecycle operation holds the graph (its claim's lease is live)."""


def graphs_busy(graph_id: str) -> GraphBusy:
    return GraphBusy(f"graph {graph_id!r} is busy with another lifecycle operation; try again "
                     "shortly", field="graph_id")


def _graph_free(now: datetime) -> ColumnElement[bool]:
    return or_(Graph.lifecycle_token.is_(None), Graph.lifecycle_lease_expires_at < now)


def assert_graph_held(session: Session, claim: GraphClaim) -> Graph:
    graph = session.scalar(select(Graph).where(
        Graph.id == claim.graph_id, Graph.lifecycle_token == claim.token).with_for_update())
    if graph is None:
        raise GraphClaimLost(f"graph {claim.graph_id!r}: this operation's claim lapsed and "
                             "another worker took over", field="graph_id")
    return graph


def release_graph(session: Session, claim: GraphClaim) -> None:
    session.execute(update(Graph).where(Graph.id == claim.graph_id,
                                       Graph.lifecycle_token == claim.token)
                    .values(lifecycle_token=None, lifecycle_lease_expires_at=None)
                    .execution_options(synchronize_session=False))


# --- deletion ------------------------------------------------------------------------------------


def begin_deletion(session: Session, claim: GraphClaim, *, now_too: bool, actor: str,
                   reason: str, now: datetime | None = None) -> Graph:
    """``suspended`` past its grace (or any live graph, ``now_too``) -> ``deleting``."""
    now = now or utcnow()
    graph = assert_graph_held(session, claim)
    if graph.status == "deleting":
        return graph  # a retry of a deletion that began
    due = graph.status == "suspended" and graph.delete_after is not None \
        and graph.delete_after <= now
    if not (due or (now_too and graph.status in LIVE)):
        raise Conflict(f"graph {graph.id!r} is {graph.status}; its deletion is due "
                       f"{graph.delete_after:%Y-%m-%d %H:%M} UTC" if graph.delete_after else
                       f"graph {graph.id!r} is {graph.status} and not due for deletion",
                       field="graph_id")
    graph.status = GRAPH.target("begin_deletion")
    _move_subgraphs(session, graph.id, "begin_deletion")
    audit.record(session, actor=actor, action="graph.deleting", subject_type="graph",
                 subject_id=graph.id, details={"reason": reason, "at_once": now_too})
    if graph.subscription_id:  # a graph deleted at once ends its subscription with it
        billing.cancel(session, graph.subscription_id, actor=actor)
    return graph


def remove_subgraphs(session: Session, directory: HostDirectory, claim: GraphClaim
                     ) -> list[str]:
    """Each subgraph's file and rows (idempotent: what is gone stays gone)."""
    assert_graph_held(session, claim)
    removed = []
    for child in session.scalars(select(Graph.id).where(Graph.parent_graph_id == claim.graph_id)):
        graphs.discard_graph(session, directory, child)
        removed.append(child)
    return removed


def remove_database_file(session: Session, directory: HostDirectory, claim: GraphClaim
                         ) -> bool:
    """The graph's file and sidecars, on its host (idempotent)."""
    graph = assert_graph_held(session, claim)
    return hosts.graph_host(session, directory, graph.host_id).delete(graph.id)


def finish_deletion(session: Session, claim: GraphClaim, *, actor: str, reason: str
                    ) -> dict[str, Any]:
    """With the file gone: the slot, roles and credit pool go, the row becomes a tombstone."""
    graph = assert_graph_held(session, claim)
    if Path(graph.database_path).exists():
        raise Conflict(f"graph {graph.id!r}: its file still exists; the slot stays taken",
                       field="graph_id")
    pool_ids = select(CreditPool.id).where(CreditPool.graph_id == graph.id)
    session.execute(delete(CreditTransaction).where(CreditTransaction.pool_id.in_(pool_ids)))
    session.execute(delete(CreditPool).where(CreditPool.graph_id == graph.id))
    session.execute(delete(GraphUser).where(GraphUser.graph_id == graph.id))
    if graph.status != GRAPH.target("finish_deletion"):
        hosts.release_slot(session, graph.host_id)
    graph.status = GRAPH.target("finish_deletion")
    graph.deleted_at = utcnow()
    graph.lifecycle_token = None
    graph.lifecycle_lease_expires_at = None
    audit.record(session, actor=actor, action="graph.deleted", subject_type="graph",
                 subject_id=graph.id, details={"reason": reason})
    return {"graph_id": graph.id, "status": "deleted", "host_id": graph.host_id,
            "deleted_at": graph.deleted_at.isoformat()}


# --- what the reaper looks for -------------------------------------------------------------------


def due_deletions(session: Session, *, now: datetime, limit: int = 100) -> list[str]:
    """Suspended graphs past their grace, and deletions that began and did not finish."""
    return list(session.scalars(
        select(Graph.id).where(
            Graph.parent_graph_id.is_(None), _graph_free(now),
            or_(and_(Graph.status == "suspended", Graph.delete_after <= now),
                Graph.status == "deleting"))
        .order_by(Graph.delete_after).limit(limit)))


def out_of_step(session: Session, *, now: datetime, limit: int = 100) -> list[dict[str, Any]]:
    """Subscriptions whose resource does not yet follow billing: cancelled (or past a
    scheduled cancellation) with a live resource, or active with a suspended graph."""
    rows = session.execute(
        select(Subscription.id, Subscription.status, Subscription.cancel_at,
               Subscription.resource_type, Graph.id)
        .outerjoin(Graph, and_(Graph.subscription_id == Subscription.id,
                               Graph.parent_graph_id.is_(None)))
        .where(or_(
            and_(Subscription.status == "canceled", Graph.status == "active"),
            and_(Subscription.status == "active", Subscription.cancel_at <= now),
            and_(Subscription.status == "active", Graph.status == "suspended"),
            and_(Subscription.status == "canceled", Subscription.resource_type == "repository",
                 select(RepositoryAccess.id).where(
                     RepositoryAccess.subscription_id == Subscription.id).exists()),
        ))
        .limit(limit)).all()
    found = []
    for sub_id, status, cancel_at, resource_type, graph_id in rows:
        ending = status == "canceled" or (cancel_at is not None and cancel_at <= now)
        found.append({"subscription_id": sub_id, "resource_type": resource_type,
                      "graph_id": graph_id, "action": "suspend" if ending else "reactivate"})
    return found


def unpaid_graphs(session: Session, *, limit: int = 100) -> list[str]:
    """Active top-level graphs no subscription pays for: those an earlier version's restores
    made as new graphs. They are suspended like a cancelled one's (and deleted after the grace),
    so their owner can restore their backups into a graph of a paid subscription."""
    return list(session.scalars(select(Graph.id).where(
        Graph.parent_graph_id.is_(None), Graph.status == "active",
        Graph.subscription_id.is_(None), Graph.tier != "ladybug-shared")
        .order_by(Graph.id).limit(limit)))


def live_graphs(session: Session) -> list[str]:
    """Top-level graphs that are active or suspended: what the daily backups copy."""
    return list(session.scalars(select(Graph.id).where(
        Graph.parent_graph_id.is_(None), Graph.status.in_(LIVE)).order_by(Graph.id)))


# --- who may change a graph's life ---------------------------------------------------------------


def managed_graph(session: Session, graph_id: str, user_id: str) -> Graph:
    """A top-level graph the user administers (``roles``); one they cannot see is not found,
    one they are a writer or reader of is forbidden."""
    graph = graphs.visible_graph(session, graph_id, user_id)
    if graph.parent_graph_id is not None:
        raise NotFound(f"graph_id: {graph_id!r} is a subgraph: it is backed up, restored and "
                       f"reactivated with its parent {graph.parent_graph_id!r}, and deleted "
                       f"alone with DELETE /v1/graphs/{graph.parent_graph_id}/subgraphs/"
                       f"{graph.name}", field="graph_id")
    roles.check_admin(session, graph, user_id)
    return graph


def check_payer(graph: Graph, user_id: str) -> None:
    """Reactivating a graph starts its subscription's billing again: the one who pays for it
    (its owner) decides that, not another admin of the graph (403)."""
    if graph.subscription_id and graph.owner_user_id != user_id:
        raise Forbidden(f"graph_id: reactivating {graph.id!r} restarts the subscription that "
                        "pays for it; only its owner may", field="graph_id")


def check_status(graph: Graph, action: str) -> None:
    """Refuse, naming the graph's state, what ``action`` (of the graph's state table) cannot do
    in that state."""
    hint = ""
    if graph.status in ("deleting", "deleted"):
        hint = (f"; a backup can be restored as a new graph: GET /v1/graphs/{graph.id}/backups")
    GRAPH.check(action, graph.status, graph.id, field="graph_id", hint=hint)


def check_cancellable(subscription: Subscription) -> None:
    if not SUBSCRIPTION.allows("cancel", subscription.status):
        raise Conflict(f"subscription {subscription.id!r} is cancelled already",
                       field="subscription_id")
