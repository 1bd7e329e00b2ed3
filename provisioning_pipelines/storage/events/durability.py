"""Does the Redis behind the operation store keep what it is given?

An operation lives only in Redis while it runs. A Redis that evicts keys under memory pressure
(any ``maxmemory-policy`` but ``noeviction``) drops open operations silently: the customer's
reconnect answers 404 and the completion lands nowhere. That is refused at start-up: with
``noeviction`` a full Redis refuses the write instead, which the API reports as an outage (503)
and heals from. A Redis without persistence (no AOF, no RDB snapshots) forgets everything on a
restart: a warning on every start, refused when ``REDIS_REQUIRE_PERSISTENCE`` is set (the
production shape should set it). Operations lost anyway are rebuilt from their subscription
where one exists (``direct/rebuild.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis


@dataclass(frozen=True)
class Durability:
    refused: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_durability(url: str, *, require_persistence: bool) -> Durability:
    """What is wrong with how the Redis at ``url`` keeps data: reasons to refuse, and to warn."""
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5,
                                  decode_responses=True)
    try:
        try:
            config = {**client.config_get("maxmemory-policy"), **client.config_get("appendonly"),
                      **client.config_get("save")}
        except redis.ResponseError as exc:  # CONFIG renamed or refused (managed Redis)
            return Durability(warnings=[
                f"REDIS_URL: cannot read the Redis configuration ({str(exc)[:80]}); make sure "
                "maxmemory-policy is noeviction and persistence is on"])
    finally:
        client.close()
    refused, warnings = [], []
    policy = config.get("maxmemory-policy", "")
    if policy != "noeviction":
        refused.append(f"REDIS_URL: maxmemory-policy is {policy!r}: Redis may evict open "
                       "operations under memory pressure; set it to 'noeviction'")
    if config.get("appendonly") != "yes" and not config.get("save"):
        message = ("REDIS_URL: persistence is off (appendonly no, no save points): a Redis "
                   "restart forgets every open operation; turn on appendonly")
        (refused if require_persistence else warnings).append(message)
    return Durability(refused, warnings)
