"""A subscription's states: what moves it, and what a customer or an operator may ask of it.

``pending_payment`` -> (paid) ``provisioning`` -> ``active``; a full tier parks it ``queued``
until a slot frees; an attempt that runs out of retries leaves it ``failed`` (an operator may
retry it); billing may cancel it from any state, and a new payment reactivates a cancelled one.
"""

from __future__ import annotations

from provisioning_pipelines.states import Action, StateTable, Transition

SUBSCRIPTION_STATUSES = ("pending_payment", "provisioning", "queued", "active", "failed",
                         "canceled")
_NOT_CANCELLED = SUBSCRIPTION_STATUSES[:-1]

SUBSCRIPTION = StateTable(
    "subscription",
    SUBSCRIPTION_STATUSES,
    transitions={
        "pay": Transition(("pending_payment",), "provisioning"),
        "queue": Transition(("provisioning",), "queued"),
        "release": Transition(("queued",), "provisioning"),
        "activate": Transition(("provisioning",), "active"),
        "fail": Transition(("provisioning",), "failed"),
        "retry": Transition(("failed",), "provisioning"),
        "cancel": Transition(_NOT_CANCELLED, "canceled"),
        "reactivate": Transition(("canceled",), "active"),
    },
    actions={
        "cancel": Action(_NOT_CANCELLED, "cancelled again"),
        "retry": Action(("failed",), "retried"),
    },
)
