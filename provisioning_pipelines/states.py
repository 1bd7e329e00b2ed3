"""State tables: the states of one kind of thing, how it moves between them, and what may be
asked of it in each.

One table per kind (a subscription: ``services/billing/states.py``; a graph:
``services/graphs/states.py``; an operation: ``storage/events/states.py``). The services'
conditional UPDATEs take a transition's source states from its table, and the API, the CLI and
the flows ask the table whether an action is allowed, so a state's meaning is written once and
``docs/lifecycle.md`` is checked against these tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from provisioning_pipelines.errors import Conflict


@dataclass(frozen=True)
class Transition:
    sources: tuple[str, ...]
    target: str


@dataclass(frozen=True)
class Action:
    """Something a user or an operator may ask for, in ``allowed`` states; ``doing`` completes
    "it cannot be ..." in the refusal."""

    allowed: tuple[str, ...]
    doing: str


@dataclass(frozen=True)
class StateTable:
    kind: str
    states: tuple[str, ...]
    transitions: Mapping[str, Transition]
    actions: Mapping[str, Action]

    def __post_init__(self) -> None:
        named = {s for t in self.transitions.values() for s in (*t.sources, t.target)}
        named |= {s for a in self.actions.values() for s in a.allowed}
        unknown = named - set(self.states)
        if unknown:
            raise ValueError(f"{self.kind} table names unknown states: {sorted(unknown)}")

    def sources(self, transition: str) -> tuple[str, ...]:
        return self.transitions[transition].sources

    def source(self, transition: str) -> str:
        """The one state ``transition`` leaves (for an UPDATE's ``WHERE status = ...``)."""
        (only,) = self.transitions[transition].sources
        return only

    def target(self, transition: str) -> str:
        return self.transitions[transition].target

    def allows(self, action: str, state: str) -> bool:
        return state in self.actions[action].allowed

    def check(self, action: str, state: str, subject_id: str, *, field: str,
              hint: str = "") -> None:
        """Refuse (409, naming the state) what ``action`` cannot do in ``state``."""
        if not self.allows(action, state):
            raise Conflict(f"{self.kind} {subject_id!r} is {state}: it cannot be "
                           f"{self.actions[action].doing}{hint}", field=field)
