"""Graphs and subgraphs: their rows, their database files, and undoing a failed attempt.

A graph's id is derived from its subscription (``kg`` + 16 hex of a hash), so every attempt for
one subscription works on the same graph: a retry after a crash finds the row and the file the
crashed attempt made and finishes them, and there is never a second graph. Each write below is
idempotent for that reason.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Row, delete, select, update
from sqlalchemy.orm import Session

from provisioning_pipelines.errors import (
    CapacityExhausted,
    HostUnavailable,
    NotFound,
)
from provisioning_pipelines.services import audit
from provisioning_pipelines.services.billing import credits
from provisioning_pipelines.services.capacity import hosts
from provisioning_pipelines.services.catalog import Tier, customer_tier
from provisioning_pipelines.services.graphs import roles
from provisioning_pipelines.services.graphs.graph_requests import GraphRequest
from provisioning_pipelines.services.provisioning import claims, queue
from provisioning_pipelines.storage.db import Database, insert_all
from provisioning_pipelines.storage.graph_ids import ANY_GRAPH_ID, GRAPH_ID
from provisioning_pipelines.storage.hosts.contract import GraphHost as GraphHostInterface
from provisioning_pipelines.storage.hosts.directory import HostAddress, HostDirectory
from provisioning_pipelines.storage.ladybug import expected_tables, node_properties
from provisioning_pipelines.storage.models import (
    CreditPool,
    CreditTransaction,
    Graph,
    GraphHost,
    GraphSchema,
    GraphUser,
    Subscription,
)

logger = logging.getLogger(__name__)

#: A graph being restored from a backup: nobody sees it until it is ``active``.
RESTORING = "restoring"


_GRAPHS = Graph.__table__
#: The file and host of the graph an earlier attempt made for the subscription (NULL if none),
#: as columns a statement over the subscription returns.
_MADE_BEFORE = tuple(
    select(column).where(_GRAPHS.c.id == Subscription.__table__.c.resource_id)
    .correlate(Subscription.__table__).scalar_subquery().label(f"made_{column.key}")
    for column in (_GRAPHS.c.database_path, _GRAPHS.c.host_id))
#: The host a new graph of the subscription's tier would go to (NULL if none has a free slot).
_FREE_HOST = tuple(
    hosts.least_used(column, Subscription.__table__.c.plan_name)
    .correlate(Subscription.__table__).scalar_subquery().label(f"free_{column.key}")
    for column in (GraphHost.__table__.c.id, GraphHost.__table__.c.data_root))


class _SlotNotTaken(Exception):
    """The host picked for a new graph filled (or its tier's queue grew) before its slot was
    taken: the rows inserted with the slot are rolled back and the graph placed step by step."""


def graph_id_for_subscription(subscription_id: str) -> str:
    return "kg" + hashlib.sha256(f"graph:{subscription_id}".encode()).hexdigest()[:16]


def database_path(data_root: str, graph_id: str) -> Path:
    return Path(data_root) / f"{graph_id}.lbug"


@dataclass(frozen=True)
class GraphPlan:
    """Everything needed to make a graph, decided before anything is made."""

    graph_id: str
    tier: Tier
    request: GraphRequest
    ddl: list[str]


def plan_graph(claim: claims.Claim) -> GraphPlan:
    tier = customer_tier(claim.plan_name)
    request = GraphRequest.parse(claim.request.get("graph"), recorded=True)
    return GraphPlan(graph_id=graph_id_for_subscription(claim.subscription_id), tier=tier,
                     request=request, ddl=request.ddl())


def create_graph(
    database: Database, directory: HostDirectory, claim: claims.Claim, plan: GraphPlan,
    *, graph_data_dir: Path, local_host_capacity: int | None = None, local_hosts: bool = True,
) -> dict[str, Any]:
    """Make (or finish making) the graph: its rows (graph, host slot, schema, owner's role,
    credit pool, audit) in one transaction, then its file, on its host.

    The rows commit before the file exists, so a crash in between leaves a graph a retry
    finishes (the host's create is idempotent on the graph id; each row is written only if
    absent), or the undo discards, never a file nobody knows about. A graph first made by this
    attempt cannot have any of the other rows yet: they are inserted without looking first, in
    the statement that takes the host's slot (``_make_rows``). ``CapacityExhausted`` (nothing
    made) when the tier has no free slot, or when others of the tier wait for one first: the
    caller queues the subscription.

    Across machines, a create the host surely never received (no connection was made) moves
    the graph to another host of the tier, but only when this attempt placed it: an earlier
    attempt's create may have reached its host, so a resumed graph is only ever retried where
    its row says, and a partition never makes a second file (``_placed_elsewhere``). So a
    resumed graph's host that does not answer, and a host that made the file and then stopped
    answering, raise ``HostUnavailable`` with ``reached`` true whatever this call's try saw:
    the graph may be (or is) there, and the attempt's undo keeps its place.
    """
    request = plan.request
    place = _Placement(graph_data_dir, local_host_capacity, local_hosts)
    try:
        with database.session() as session:
            placed = _make_rows(session, claim, plan, place, at_once=True)
    except _SlotNotTaken:
        with database.session() as session:
            placed = _make_rows(session, claim, plan, place, at_once=False)

    tried: set[str] = set()
    while True:
        host = placed.host(database, directory)
        try:
            info = host.create(plan.graph_id, plan.ddl)
            break
        except HostUnavailable as exc:
            tried.add(placed.host_id)
            if not placed.fresh:
                raise _may_be_there(exc) from exc
            if exc.reached:
                raise
            with database.session() as session:
                moved = _placed_elsewhere(session, claim, plan, placed.host_id, tried)
            if moved is None:
                raise
            placed = moved
    if request.entity:
        try:
            _write_entity(host, plan.graph_id, request.entity, plan.ddl)
        except HostUnavailable as exc:
            raise _may_be_there(exc) from exc
    tables = [t.name for t in expected_tables(plan.ddl)]  # the host's create verified them
    return {"graph_id": plan.graph_id, "tier": plan.tier.name, "host_id": placed.host_id,
            "database_path": str(placed.path), "graph_type": request.graph_type, "tables": tables,
            "resumed": not info.created}


def _may_be_there(exc: HostUnavailable) -> HostUnavailable:
    """The host's failure, said as one that may have reached it: the graph may be there."""
    return exc if exc.reached else HostUnavailable(exc.message, field=exc.field, reached=True)


@dataclass(frozen=True)
class _Placement:
    graph_data_dir: Path
    local_host_capacity: int | None
    local_hosts: bool


@dataclass(frozen=True)
class _Placed:
    """Where the graph's file goes: its path and host, whether this attempt placed it there,
    and, when it did, the host's address as the statement that took the slot returned it."""

    path: Path
    host_id: str
    fresh: bool
    address: HostAddress | None = None

    @classmethod
    def on_slot(cls, slot: Row[Any], graph_id: str) -> _Placed:
        return cls(database_path(slot.data_root, graph_id), slot.id, True, hosts.address_of(slot))

    def host(self, database: Database, directory: HostDirectory) -> GraphHostInterface:
        """The host's interface: from the slot's row when this attempt took one (a host that
        gave a slot is not replaced), else looked up, refused if replaced."""
        if self.address is not None:
            return directory.get(self.address)
        with database.session() as session:
            return hosts.graph_host(session, directory, self.host_id)


def _placed_elsewhere(session: Session, claim: claims.Claim, plan: GraphPlan, host_id: str,
                      tried: set[str]) -> _Placed | None:
    """Move the graph this attempt placed on ``host_id`` (which surely never received its
    create) to another host of the tier not yet ``tried``: its slot given back, one taken
    there, the row pointed at it, in one transaction under the claim. None when no other host
    has a free slot (the graph stays where it was, for the next attempt)."""
    claims.write_held(session, claim, resource_id=plan.graph_id)
    slot = hosts.slot_elsewhere(session, plan.tier.name, tried)
    if slot is None:
        return None
    hosts.release_slot(session, host_id)
    placed = _Placed.on_slot(slot, plan.graph_id)
    session.execute(update(Graph).where(Graph.id == plan.graph_id)
                    .values(host_id=slot.id, database_path=str(placed.path)))
    return placed


def _make_rows(session: Session, claim: claims.Claim, plan: GraphPlan, place: _Placement,
               *, at_once: bool) -> _Placed:
    """The graph's rows and its host's slot (or what an earlier attempt did not make); the
    file's path and host, and whether this attempt placed it. ``at_once``: the rows and the
    slot on the host the fence's statement picked are one statement, so the host's row (every
    graph of the tier takes a slot there) stays locked for that statement and the commit only;
    ``_SlotNotTaken`` if it filled."""
    graph_id = plan.graph_id
    subscription = claims.write_held(session, claim, also=(*_MADE_BEFORE, *_FREE_HOST),
                                     resource_id=graph_id)
    if subscription.made_database_path is not None:  # an earlier attempt made the graph
        store_schema(session, graph_id, plan.ddl, plan.request)
        grant_role(session, graph_id, claim.user_id, "admin")
        credits.create_graph_pool(session, graph_id=graph_id, tier=plan.tier,
                                  subscription_id=claim.subscription_id)
        return _Placed(Path(subscription.made_database_path), subscription.made_host_id, False)
    if at_once and subscription.free_id is not None:
        path = database_path(subscription.free_data_root, graph_id)
        rows = _new_graph_rows(claim, plan, subscription.free_id, path)
        slot = queue.take_slot_in_turn(session, subscription, on_host=subscription.free_id,
                                       rows=rows)
        if slot is None:
            raise _SlotNotTaken
        return _Placed.on_slot(slot, graph_id)
    placed = _Placed.on_slot(_place(session, subscription, plan.tier, place), graph_id)
    insert_all(session, _new_graph_rows(claim, plan, placed.host_id, placed.path))
    return placed


def _new_graph_rows(claim: claims.Claim, plan: GraphPlan, host_id: str, path: Path
                    ) -> list[Any]:
    """A new graph's rows: the graph, its schema, its owner's role, its credit pool and
    allocation, the audit entry (none can exist yet: they are inserted without looking)."""
    request, graph_id = plan.request, plan.graph_id
    return [
        Graph(id=graph_id, org_id=claim.org_id, owner_user_id=claim.user_id,
              subscription_id=claim.subscription_id, name=request.name,
              description=request.description, graph_type=request.graph_type,
              tier=plan.tier.name, host_id=host_id, database_path=str(path),
              schema_extensions=request.schema_extensions, tags=request.tags,
              details={"entity": request.entity} if request.entity else {}),
        _schema_row(graph_id, plan.ddl, request),
        GraphUser(graph_id=graph_id, user_id=claim.user_id, role="admin"),
        *credits.new_graph_pool(graph_id, plan.tier, claim.subscription_id),
        audit.entry(actor=claim.user_id, action="graph.created", subject_type="graph",
                    subject_id=graph_id,
                    details={"tier": plan.tier.name, "subscription_id": claim.subscription_id}),
    ]


def _place(session: Session, subscription: Row[Any], tier: Tier, place: _Placement
           ) -> Row[Any]:
    """A slot for a new graph (its host's ``id`` and ``data_root``). Usually one statement: a
    slot taken unless someone of the tier is ahead. When that takes none (a fresh install
    without hosts, a queue, a full tier, a lost race), step by step, to register the local
    hosts or say why it must wait."""
    slot = queue.take_slot_in_turn(session, subscription)
    if slot is not None:
        return slot
    if place.local_hosts:
        hosts.ensure_local_hosts(session, place.graph_data_dir, place.local_host_capacity)
    if queue.must_wait(session, subscription):
        raise CapacityExhausted(f"tier {tier.name!r}: others wait for a slot first")
    return hosts.allocate_slot(session, tier.name)


def _write_entity(host: GraphHostInterface, graph_id: str, entity: Mapping[str, Any],
                  ddl: Sequence[str]) -> None:
    """The entity a graph is about becomes its first node (properties the schema knows only,
    read from the DDL: one open of the new file, the write, not a second to ask)."""
    known = set(node_properties(ddl, "Entity"))
    values = {key: value for key, value in entity.items()
              if key in known and isinstance(value, str | int | float | bool)}
    values.setdefault("identifier", _slug(str(entity["name"])))
    values["name"] = str(entity["name"])
    assignments = ", ".join(f"e.`{key}` = ${key}" for key in values if key != "identifier")
    host.query(graph_id, f"MERGE (e:Entity {{identifier: $identifier}}) SET {assignments}",
               values, read_only=False)  # a MERGE: repeated, the same node


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "entity"


def store_schema(session: Session, graph_id: str, ddl: Sequence[str],
                 request: GraphRequest | None, *, schema_type: str | None = None) -> None:
    """The graph's schema row, unless it has one."""
    if session.scalar(select(GraphSchema.id).where(GraphSchema.graph_id == graph_id)):
        return
    session.add(_schema_row(graph_id, ddl, request, schema_type=schema_type))


def _schema_row(graph_id: str, ddl: Sequence[str], request: GraphRequest | None, *,
                schema_type: str | None = None) -> GraphSchema:
    kind = schema_type or ("custom" if request and request.custom_schema is not None
                           else "extensions")
    return GraphSchema(
        graph_id=graph_id, schema_type=kind, ddl=";\n".join(ddl) + ";",
        schema_json={"statements": list(ddl),
                     "extensions": request.schema_extensions if request else [],
                     "custom_schema": request.custom_schema if request else None},
    )


def grant_role(session: Session, graph_id: str, user_id: str, role: str) -> None:
    if session.get(GraphUser, (graph_id, user_id)) is None:
        session.add(GraphUser(graph_id=graph_id, user_id=user_id, role=role))


def visible_graph(session: Session, graph_id: str, user_id: str) -> Graph:
    """A graph the user is a member of (``roles.sees``); any other answers exactly like one
    that does not exist. (A deleted graph's roles are gone; its owner still sees its tombstone.)
    """
    if not ANY_GRAPH_ID.fullmatch(graph_id):
        raise NotFound(f"no graph {graph_id[:70]!r}", field="graph_id")
    graph = session.get(Graph, graph_id)
    if graph is None or graph.status == RESTORING or not roles.sees(session, graph, user_id):
        raise NotFound(f"no graph {graph_id!r}", field="graph_id")
    return graph


def top_level_graph(session: Session, graph_id: str | None) -> Graph:
    if not graph_id or not GRAPH_ID.fullmatch(graph_id):
        raise NotFound(f"graph_id: no graph {str(graph_id)[:70]!r}", field="graph_id")
    graph = session.get(Graph, graph_id)
    if graph is None:
        raise NotFound(f"graph_id: no graph {graph_id!r}", field="graph_id")
    return graph


def graph_of_subscription(session: Session, subscription_id: str) -> Graph | None:
    return session.scalar(select(Graph).where(Graph.subscription_id == subscription_id,
                                              Graph.parent_graph_id.is_(None)))


def schema_statements(session: Session, graph_id: str) -> list[str]:
    row = session.scalar(select(GraphSchema).where(GraphSchema.graph_id == graph_id))
    if row is None:
        raise NotFound(f"graph {graph_id!r} has no stored schema", field="graph_id")
    return list((row.schema_json or {}).get("statements") or [])


def discard_graph(session: Session, directory: HostDirectory, graph_id: str, *,
                  undo: bool = False) -> bool:
    """Remove a graph that never became active: file first, then rows and its host slot.

    The file goes first: a crash between the two leaves rows without a file, which the next
    attempt's ``ensure_database`` rebuilds, rather than an orphan file nobody knows about.

    An ``undo`` (of a failed attempt) must end the attempt even when the graph's host does not
    answer (killed, hung): the rows and the slot go anyway, and a file the host may hold (or
    make yet, from a request it took in before it hung) is left to housekeeping, which
    quarantines what no row places on a host once it answers. A deletion (not an undo) raises
    instead, and is run again.
    """
    graph = session.get(Graph, graph_id)
    if graph is None:
        return False
    try:
        hosts.graph_host(session, directory, graph.host_id).delete(graph_id)
    except HostUnavailable as exc:
        if not undo:
            raise
        logger.warning("graph %s: its host did not answer the undo's delete (%s); its rows go, "
                       "and housekeeping quarantines a file the host may hold", graph_id,
                       exc.message)
    pool_ids = select(CreditPool.id).where(CreditPool.graph_id == graph_id)
    session.execute(delete(CreditTransaction).where(CreditTransaction.pool_id.in_(pool_ids)))
    session.execute(delete(CreditPool).where(CreditPool.graph_id == graph_id))
    session.execute(delete(GraphSchema).where(GraphSchema.graph_id == graph_id))
    session.execute(delete(GraphUser).where(GraphUser.graph_id == graph_id))
    if graph.parent_graph_id is None:
        hosts.release_slot(session, graph.host_id)
    else:
        session.execute(
            update(Graph).where(Graph.id == graph.parent_graph_id, Graph.subgraph_count > 0)
            .values(subgraph_count=Graph.subgraph_count - 1)
        )
    session.delete(graph)
    session.flush()
    return True
