"""An operation's states: ``pending`` -> ``running`` -> ``completed`` | ``failed`` |
``cancelled``. The first terminal write wins; both stores (memory and Redis) apply this table."""

from __future__ import annotations

from provisioning_pipelines.states import Action, StateTable, Transition

OPERATION_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
_OPEN = ("pending", "running")
OPEN_STATUSES = frozenset(_OPEN)
TERMINAL_STATUSES = frozenset(OPERATION_STATUSES) - OPEN_STATUSES

OPERATION = StateTable(
    "operation",
    OPERATION_STATUSES,
    transitions={
        "start": Transition(("pending",), "running"),
        "progress": Transition(_OPEN, "running"),
        "complete": Transition(_OPEN, "completed"),
        "fail": Transition(_OPEN, "failed"),
        "cancel": Transition(_OPEN, "cancelled"),
    },
    actions={"watch": Action(OPERATION_STATUSES, "watched")},
)
