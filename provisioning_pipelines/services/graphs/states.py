"""A graph's states (subgraphs' too): what moves it, and what a user or an operator may ask of it.

``restoring`` (only rows an earlier version made: a backup restored as a new graph; a restore now
replaces an active graph's data in place, under its lifecycle claim) -> ``active``; ``active`` <->
``suspended`` (cancelled, within the grace); ``active`` | ``suspended`` -> ``deleting`` ->
``deleted`` (a tombstone row: who, when, why). Each transition is one conditional UPDATE in
``lifecycle.py`` whose WHERE takes its source states from here.
"""

from __future__ import annotations

from provisioning_pipelines.states import Action, StateTable, Transition

#: States in which a graph holds its data and its slot.
LIVE = ("active", "suspended")
#: States in which a top-level graph's row holds a slot on its host: from its reservation (a
#: restore's too) until its deletion finishes; a ``deleted`` row is a tombstone, with no slot
#: and no file.
HOLDS_SLOT = ("restoring", *LIVE, "deleting")

GRAPH = StateTable(
    "graph",
    ("restoring", "active", "suspended", "deleting", "deleted"),
    transitions={
        "restored": Transition(("restoring",), "active"),
        "suspend": Transition(("active",), "suspended"),
        "reactivate": Transition(("suspended",), "active"),
        "begin_deletion": Transition(LIVE, "deleting"),
        "finish_deletion": Transition(("deleting",), "deleted"),
    },
    actions={
        "delete": Action(LIVE, "deleted again"),
        "delete_now": Action((*LIVE, "deleting"), "deleted"),
        "reactivate": Action(LIVE, "reactivated"),
        "back_up": Action(LIVE, "backed up"),
        "add_subgraph": Action(("active",), "given a subgraph"),
        "restore_into": Action(("active",), "restored into (reactivate it first)"),
        "change_members": Action(("active",), "given or denied members"),
    },
)
