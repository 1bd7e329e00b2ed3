"""What can be bought: graph tiers and repository plans, with the numbers each one carries.

Kept as data in code (not in the database) because every number here is a product decision that
ships with a release; the subscription row stores the plan name it was sold under.
"""

from __future__ import annotations

from dataclasses import dataclass

from provisioning_pipelines.errors import InvalidRequest


@dataclass(frozen=True)
class Tier:
    name: str
    monthly_credits: int
    max_subgraphs: int
    price_cents: int
    host_capacity: int
    #: How long daily and on-demand backups are kept.
    backup_retention_days: int = 7
    #: The newest backup of a live graph may be this old before the reaper alerts: the daily
    #: schedule's day, and half a day for a run that was late or failed once.
    backup_max_age_hours: float = 36.0


TIERS: dict[str, Tier] = {
    tier.name: tier
    for tier in (
        Tier(
            "ladybug-standard",
            monthly_credits=10_000,
            max_subgraphs=0,
            price_cents=4_900,
            host_capacity=200,
            backup_retention_days=7,
        ),
        Tier(
            "ladybug-large",
            monthly_credits=50_000,
            max_subgraphs=10,
            price_cents=19_900,
            host_capacity=50,
            backup_retention_days=14,
        ),
        Tier(
            "ladybug-xlarge",
            monthly_credits=200_000,
            max_subgraphs=25,
            price_cents=49_900,
            host_capacity=20,
            backup_retention_days=30,
        ),
        Tier(
            "ladybug-shared", monthly_credits=0, max_subgraphs=0, price_cents=0, host_capacity=100
        ),
    )
}
CUSTOMER_TIERS = ("ladybug-standard", "ladybug-large", "ladybug-xlarge")


@dataclass(frozen=True)
class RepositoryPlan:
    name: str
    monthly_credits: int
    access_level: str
    price_cents: int


REPOSITORY_PLANS: dict[str, RepositoryPlan] = {
    plan.name: plan
    for plan in (
        RepositoryPlan("starter", 5_000, "read", 2_900),
        RepositoryPlan("advanced", 17_000, "write", 9_900),
        RepositoryPlan("unlimited", 85_000, "admin", 39_900),
    )
}

REPOSITORIES: dict[str, str] = {
    "sec": "available",
    "industry": "announced",
    "economic": "announced",
}


def customer_tier(name: str, *, field: str = "plan_name") -> Tier:
    if name not in CUSTOMER_TIERS:
        raise InvalidRequest(
            f"{field}: unknown tier {name!r}; choose one of {', '.join(CUSTOMER_TIERS)}",
            field=field,
        )
    return TIERS[name]


def repository_plan(plan_name: str, *, field: str = "plan_name") -> tuple[str, RepositoryPlan]:
    """``sec-starter`` -> (``sec``, starter): the plan is the name's last ``-`` segment."""
    repository, _, plan = plan_name.rpartition("-")
    if not repository or plan not in REPOSITORY_PLANS:
        raise InvalidRequest(
            f"{field}: unknown plan {plan_name!r}; expected <repository>-<plan> with plan one of "
            f"{', '.join(REPOSITORY_PLANS)}",
            field=field,
        )
    return repository, REPOSITORY_PLANS[plan]


def open_repository(name: str, *, field: str = "repository") -> str:
    status = REPOSITORIES.get(name)
    if status is None:
        raise InvalidRequest(
            f"{field}: unknown repository {name!r}; available: "
            + ", ".join(r for r, s in REPOSITORIES.items() if s == "available"),
            field=field,
        )
    if status != "available":
        raise InvalidRequest(
            f"{field}: repository {name!r} is announced but not open yet", field=field
        )
    return name
