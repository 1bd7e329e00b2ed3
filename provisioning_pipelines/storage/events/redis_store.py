"""The Redis operation store: shared by every API worker and Dagster run process.

Each operation is ``{prefix}op:{id}`` (a hash: the status record) and ``{prefix}op:{id}:events``
(a stream), listed in its owner's index ``{prefix}owner:{user}:operations``. Every check-and-write
is one Lua script (``*.lua`` beside this module), so racing writers in different processes cannot
both pass a transition's check, and one script refreshes the TTL on the record, the stream and
the owner's index together: an operation kept alive by its writes stays in its owner's list.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

from provisioning_pipelines.storage.events.contract import (
    DEFAULT_KEEPALIVE_SECONDS,
    DEFAULT_KEY_PREFIX,
    DEFAULT_TTL_SECONDS,
    MAX_ID_PART,
    TERMINAL_STATUSES,
    Change,
    EventStoreUnavailable,
    Operation,
    OperationEvent,
    OperationExists,
    OperationStore,
    PageKey,
    check_ttl,
    created_ms,
    event_data,
    event_id_key,
    format_event_id,
    is_operation_id,
    parse_after,
    utcnow,
)


@cache
def _script(name: str) -> str:
    """A Lua script shipped beside this module (``create``, ``transition``, ``report``)."""
    return resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


def _event_of(operation_id: str, change: Change, now: str, reply: Any) -> OperationEvent | None:
    """The event the transition script appended (its reply: id and progress), or None."""
    if not reply:
        return None
    event_id, progress = reply
    _, status, event_type = change.rule
    return OperationEvent(id=event_id, type=event_type,
                          data=event_data(operation_id, status, int(progress), change.message,
                                          now, change.extra))


@contextmanager
def _redis_errors() -> Iterator[None]:
    """Turn "Redis is down" into one exception the callers know, whatever the client raised."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise EventStoreUnavailable(f"Redis is unreachable: {exc}") from exc


def _range_start(cursor: tuple[int, int]) -> str:
    """XRANGE start strictly after ``cursor`` (Redis refuses an exclusive start at the max id)."""
    return "+" if cursor == (MAX_ID_PART, MAX_ID_PART) else f"({format_event_id(cursor)}"


def _entries_of(response: Any) -> list[tuple[str, dict[str, str]]]:
    """The entries of a one-stream XREAD reply, in either RESP2 or RESP3 shape."""
    if not response:
        return []
    if isinstance(response, dict):
        values = list(response.values())
        entries = values[0] if values else []
        # RESP3 may wrap the entry list in a one-element list.
        if entries and isinstance(entries[0], list):
            entries = entries[0]
        return list(entries)
    return list(response[0][1])


class RedisOperationStore(OperationStore):
    """Operations in Redis: ``{prefix}op:{id}`` (hash) and ``{prefix}op:{id}:events`` (stream).

    Short socket timeouts and no retries, so a Redis that is down costs about a second and
    surfaces as ``EventStoreUnavailable`` instead of hanging a request. Blocking reads (XREAD
    BLOCK) use their own pool whose socket timeout is longer than the longest block, and block
    in chunks of at most ``_BLOCK_CHUNK`` seconds. ``subscribe`` opens an asyncio client per
    subscriber (asyncio connections belong to one event loop), named ``{prefix}subscribe`` in
    ``CLIENT LIST``, and closes it when it ends; the API reads through a ``Fanout``, so that is
    one per operation per process, however many streams watch it.
    """

    _BLOCK_CHUNK = 5.0

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_KEY_PREFIX,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        connect_timeout: float = 1.0,
        socket_timeout: float = 3.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.ttl_seconds = check_ttl(ttl_seconds)
        self._ttl_ms = str(max(1, int(self.ttl_seconds * 1000)))
        self._connect_timeout = connect_timeout
        self._socket_timeout = socket_timeout
        common: dict[str, Any] = {
            "decode_responses": True,
            "socket_connect_timeout": connect_timeout,
            "health_check_interval": 30,
            "retry": Retry(NoBackoff(), 0),  # a retried script could append an event twice
        }
        self._pool = redis.ConnectionPool.from_url(url, socket_timeout=socket_timeout, **common)
        self._block_pool = redis.ConnectionPool.from_url(
            url, socket_timeout=self._BLOCK_CHUNK + socket_timeout, **common
        )
        self._redis = redis.Redis(connection_pool=self._pool)
        self._blocking = redis.Redis(connection_pool=self._block_pool)
        self._create_script = self._redis.register_script(_script("create"))
        self._transition_script = self._redis.register_script(_script("transition"))
        self._report_script = self._redis.register_script(_script("report"))

    @property
    def subscriber_name(self) -> str:
        """The ``CLIENT SETNAME`` of ``subscribe``'s connections (Redis allows no spaces)."""
        return f"{self.prefix}subscribe".replace(" ", "_")

    # keys and decoding

    def _keys(self, operation_id: str) -> list[str]:
        record = f"{self.prefix}op:{operation_id}"
        return [record, f"{record}:events"]

    def _owner_key(self, user_id: str) -> str:
        """The owner's index of operation records (sorted by creation)."""
        return f"{self.prefix}owner:{user_id}:operations"

    @staticmethod
    def _operation(operation_id: str, fields: Mapping[str, str]) -> Operation | None:
        if not fields or "status" not in fields:
            return None
        result = fields.get("result")
        return Operation(
            id=operation_id,
            kind=fields.get("kind", ""),
            user_id=fields.get("user_id"),
            status=fields["status"],
            progress=int(fields.get("progress", "0")),
            message=fields.get("message", ""),
            result=json.loads(result) if result is not None else None,
            error=fields.get("error"),
            error_code=fields.get("error_code"),
            created_at=datetime.fromisoformat(fields["created_at"]),
            updated_at=datetime.fromisoformat(fields["updated_at"]),
            dagster_report=fields.get("dagster_report"),
            dagster_report_detail=fields.get("dagster_report_detail"),
        )

    @staticmethod
    def _event(operation_id: str, entry_id: str, fields: Mapping[str, str]) -> OperationEvent:
        return OperationEvent(
            id=entry_id,
            type=fields["type"],
            data=event_data(
                operation_id,
                fields["status"],
                int(fields["progress"]),
                fields["message"],
                fields["timestamp"],
                json.loads(fields.get("extra") or "{}"),
            ),
        )

    def _events(
        self, operation_id: str, entries: list[tuple[str, dict[str, str]]]
    ) -> list[OperationEvent]:
        return [self._event(operation_id, entry_id, fields) for entry_id, fields in entries]

    # writes

    def create(
        self, kind: str, *, user_id: str | None = None, operation_id: str | None = None
    ) -> Operation:
        operation_id = self._check_new(kind, operation_id)
        now = utcnow()
        fields = {
            "kind": kind,
            "status": "pending",
            "progress": "0",
            "message": "",
            "created_at": now.isoformat(),
            "updated_at": now.isoformat(),
        }
        keys = self._keys(operation_id)
        if user_id is not None:
            fields["user_id"] = user_id
            keys.append(self._owner_key(user_id))
        args = [self._ttl_ms, str(created_ms(now)),
                *(item for pair in fields.items() for item in pair)]
        with _redis_errors():
            created = self._create_script(keys=keys, args=args)
        if not created:
            raise OperationExists(f"operation {operation_id!r} already exists")
        return Operation.pending(operation_id, kind, user_id, now)

    def _transition(self, operation_id: str, change: Change) -> OperationEvent | None:
        now = utcnow().isoformat()
        with _redis_errors():
            reply = self._transition_script(keys=self._keys(operation_id),
                                            args=self._transition_args(change, now))
        return _event_of(operation_id, change, now, reply)

    def _transitions(self, operation_id: str, changes: Sequence[Change]
                     ) -> list[OperationEvent | None]:
        """One pipeline of the transition script, once per change: each still checks and
        writes atomically, and they run in order, but the writer waits for Redis once. The
        script is called by its hash (a pipeline that names a script asks Redis whether it is
        loaded first, a second round trip); a Redis that forgot it refuses every call of the
        pipeline (one script, one hash), so it is loaded and the pipeline sent again."""
        if len(changes) == 1:
            return [self._transition(operation_id, changes[0])]
        keys = self._keys(operation_id)
        now = utcnow().isoformat()
        for _ in range(2):
            pipe = self._redis.pipeline(transaction=False)
            for change in changes:
                pipe.evalsha(self._transition_script.sha, len(keys), *keys,
                             *self._transition_args(change, now))
            with _redis_errors():
                replies = pipe.execute(raise_on_error=False)
            if not any(isinstance(reply, NoScriptError) for reply in replies):
                break
            with _redis_errors():
                self._transition_script.sha = self._redis.script_load(_script("transition"))
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return [_event_of(operation_id, change, now, reply)
                for change, reply in zip(changes, replies, strict=True)]

    def _transition_args(self, change: Change, now: str) -> list[str]:
        allowed, status, event_type = change.rule
        return [
            "," + ",".join(sorted(allowed)) + ",",
            status,
            event_type,
            change.message,
            "" if change.percent is None else str(change.percent),
            now,
            json.dumps(change.extra),
            self._ttl_ms,
            *(item for pair in change.record.items() for item in pair),
        ]

    def record_report(self, operation_id: str, outcome: str, detail: str | None = None) -> None:
        self._check_report(outcome)
        if not is_operation_id(operation_id):
            return
        args = [self._ttl_ms, outcome, detail or "", "0" if detail is None else "1"]
        with _redis_errors():
            self._report_script(keys=self._keys(operation_id), args=args)

    # reads

    def operations_of(self, user_id: str, limit: int = 50, *,
                      before: PageKey | None = None) -> list[Operation]:
        index = self._owner_key(user_id)
        for _ in range(50):  # read again after forgetting expired ones: a page stays whole
            found, gone = self._page(index, user_id, max(1, limit), before)
            if not gone:
                break
            with _redis_errors():  # expired: forget them (each pass forgets at least one)
                self._redis.zrem(index, *gone)
        return found

    def _page(self, index: str, user_id: str, limit: int, before: PageKey | None
              ) -> tuple[list[Operation], list[str]]:
        with _redis_errors():
            members = self._members_before(index, limit, before)
            pipe = self._redis.pipeline(transaction=False)
            for member in members:
                pipe.hgetall(member)
            records = pipe.execute() if members else []
        found, gone = [], []
        for member, fields in zip(members, records, strict=True):
            operation = self._operation(member.removeprefix(f"{self.prefix}op:"), fields)
            if operation is None:
                gone.append(member)
            elif operation.user_id == user_id:
                found.append(operation)
        return found, gone

    def _members_before(self, index: str, limit: int, before: PageKey | None) -> list[str]:
        """Up to ``limit`` members of the owner's index, newest first, after ``before``: the
        index's order (score, then member, both descending) is ``page_key``'s, since a member
        is the prefix and the id. Those of the cursor's own millisecond come first, then the
        older ones."""
        if before is None:
            return list(self._redis.zrevrange(index, 0, limit - 1))
        score, last_id = before
        last = f"{self.prefix}op:{last_id}"
        pipe = self._redis.pipeline(transaction=False)
        pipe.zrevrangebyscore(index, score, score)
        pipe.zrevrangebyscore(index, f"({score}", "-inf", start=0, num=limit)
        same, older = pipe.execute()
        return [*(member for member in same if member < last), *older][:limit]

    def get(self, operation_id: str) -> Operation | None:
        if not is_operation_id(operation_id):
            return None
        record_key, _ = self._keys(operation_id)
        with _redis_errors():
            fields = self._redis.hgetall(record_key)
        return self._operation(operation_id, fields)

    def events(self, operation_id: str, after: str | None = None) -> list[OperationEvent]:
        cursor = parse_after(after)
        if not is_operation_id(operation_id):
            return []
        _, stream_key = self._keys(operation_id)
        with _redis_errors():
            entries = self._redis.xrange(stream_key, _range_start(cursor), "+")
        return self._events(operation_id, entries)

    def _snapshot(
        self, operation_id: str, cursor: tuple[int, int], count: int | None = None
    ) -> tuple[str | None, list[OperationEvent]]:
        """Status and events after ``cursor`` in one MULTI, read status first.

        The status is read before the events, and the terminal event is written in the same
        script as the terminal status, so "terminal and nothing after the cursor" means the
        terminal event really was read already.
        """
        record_key, stream_key = self._keys(operation_id)
        with _redis_errors():
            pipe = self._redis.pipeline(transaction=True)
            pipe.hget(record_key, "status")
            pipe.xrange(stream_key, _range_start(cursor), "+", count=count)
            status, entries = pipe.execute()
        return status, self._events(operation_id, entries)

    def wait_events(
        self, operation_id: str, after: str | None, timeout: float
    ) -> list[OperationEvent]:
        cursor = parse_after(after)
        if not is_operation_id(operation_id):
            return []
        _, stream_key = self._keys(operation_id)
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            status, found = self._snapshot(operation_id, cursor)
            if status is None or found or status in TERMINAL_STATUSES:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            block_ms = max(1, int(min(remaining, self._BLOCK_CHUNK) * 1000))
            with _redis_errors():
                reply = self._blocking.xread({stream_key: format_event_id(cursor)}, block=block_ms)
            found = self._events(operation_id, _entries_of(reply))
            if found:
                return found

    async def subscribe(
        self, operation_id: str, after: str | None = None, *,
        keepalive: float = DEFAULT_KEEPALIVE_SECONDS,
    ) -> AsyncIterator[OperationEvent | None]:
        cursor = parse_after(after)
        if keepalive <= 0:
            raise ValueError("keepalive must be positive")
        if not is_operation_id(operation_id):
            return
        record_key, stream_key = self._keys(operation_id)
        client = aioredis.Redis.from_url(
            self.url,
            decode_responses=True,
            socket_connect_timeout=self._connect_timeout,
            socket_timeout=keepalive + self._socket_timeout,
            retry=AsyncRetry(NoBackoff(), 0),
            client_name=self.subscriber_name,
        )
        try:
            while True:
                # Replay (and catch up) by cursor: each read starts strictly after the last id
                # yielded, so nothing is skipped and nothing repeats.
                with _redis_errors():
                    pipe = client.pipeline(transaction=True)
                    pipe.hget(record_key, "status")
                    pipe.xrange(stream_key, _range_start(cursor), "+", count=self.replay_batch)
                    status, entries = await pipe.execute()
                if status is None:
                    return
                batch = self._events(operation_id, entries)
                if not batch:
                    if status in TERMINAL_STATUSES:
                        return  # its terminal event was already read
                    # Caught up: block for the next event after the cursor. An event that
                    # landed since the read above is returned at once, so there is no gap.
                    with _redis_errors():
                        reply = await client.xread(
                            {stream_key: format_event_id(cursor)},
                            block=max(1, int(keepalive * 1000)),
                            count=self.replay_batch,
                        )
                    batch = self._events(operation_id, _entries_of(reply))
                    if not batch:
                        yield None
                        continue
                for event in batch:
                    yield event
                    cursor = event_id_key(event.id)
                    if event.is_terminal:
                        return
        finally:
            # Shielded: a reader cancelled while closing still closes its connection.
            await asyncio.shield(client.aclose())

    def ping(self) -> bool:
        try:
            return bool(self._redis.ping())
        except (redis.ConnectionError, redis.TimeoutError):
            return False

    def close(self) -> None:
        self._redis.close()
        self._blocking.close()
        self._pool.disconnect()
        self._block_pool.disconnect()
