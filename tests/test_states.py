"""The state tables: each names only its own states, and refuses in the words a user reads."""

from __future__ import annotations

import pytest

from provisioning_pipelines.errors import Conflict
from provisioning_pipelines.services.billing.states import SUBSCRIPTION
from provisioning_pipelines.services.graphs.states import GRAPH, LIVE
from provisioning_pipelines.states import Action, StateTable, Transition
from provisioning_pipelines.storage.events.states import OPERATION, TERMINAL_STATUSES


def test_a_table_naming_a_state_it_does_not_have_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown states: \\['gone'\\]"):
        StateTable("thing", ("on", "off"), transitions={"stop": Transition(("on",), "gone")},
                   actions={})
    with pytest.raises(ValueError, match="unknown states"):
        StateTable("thing", ("on",), transitions={}, actions={"x": Action(("off",), "x")})


def test_a_refusal_names_the_subject_its_state_and_what_was_asked() -> None:
    with pytest.raises(Conflict) as refused:
        GRAPH.check("delete", "deleting", "kg1", field="graph_id")
    assert refused.value.message == "graph 'kg1' is deleting: it cannot be deleted again"
    assert refused.value.field == "graph_id"
    GRAPH.check("delete_now", "deleting", "kg1", field="graph_id")  # an operator finishes it


def test_every_state_is_reachable_and_terminal_operations_stay_ended() -> None:
    for table, first in ((GRAPH, {"active", "restoring"}), (SUBSCRIPTION, {"pending_payment"}),
                         (OPERATION, {"pending"})):
        reached = set(first)
        for _ in table.states:
            reached |= {t.target for t in table.transitions.values()
                        if set(t.sources) & reached}
        assert reached == set(table.states), table.kind
    assert not any(set(t.sources) & TERMINAL_STATUSES for t in OPERATION.transitions.values())
    assert set(LIVE) == set(GRAPH.actions["back_up"].allowed)
