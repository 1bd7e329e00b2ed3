"""One reader per operation per process, fanned out in memory to every stream of it.

A thousand viewers of one operation cost one store reader (one Redis connection), not a
thousand. The first subscriber of an operation starts a reader: the store's own ``subscribe``
from the beginning, whose events are appended to the operation's feed. Every subscriber walks
that feed with its own cursor, so all of them see the identical sequence the store holds, and a
slow one only lags behind in its own cursor: it never holds up the reader or anyone else
(backpressure stays with the client's own socket; the API also drops a client that takes no
event for a while). A feed holds one copy of the operation's events, tens of them, while
anyone watches; the last subscriber to leave stops its reader.

``Fanout.subscribe`` keeps the contract of ``OperationStore.subscribe``: replay after ``after``,
tail with no gap or duplicate, None every idle ``keepalive``, end after the terminal event (or
at once for an unknown operation), and ``EventStoreUnavailable`` when the store goes down. All of
it runs on one event loop: the API process's.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_right
from collections.abc import AsyncIterator, Callable

from provisioning_pipelines.storage.events.contract import (
    DEFAULT_KEEPALIVE_SECONDS,
    EventStoreUnavailable,
    OperationEvent,
    OperationStore,
    event_id_key,
    parse_after,
)

logger = logging.getLogger(__name__)


class _Feed:
    """The events of one operation read so far, and who is waiting for the next."""

    def __init__(self) -> None:
        self.events: list[OperationEvent] = []
        self.keys: list[tuple[int, int]] = []
        self.ended = False
        self.error: str | None = None
        self.watchers = 0
        self.reader: asyncio.Task[None] | None = None
        #: Set at the next append or end (a new one each time, so waiting never misses one).
        self.changed = asyncio.Event()

    def append(self, event: OperationEvent) -> None:
        self.events.append(event)
        self.keys.append(event_id_key(event.id))
        self.wake()

    def end(self, error: str | None = None) -> None:
        self.ended = True
        self.error = error
        self.wake()

    def wake(self) -> None:
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()


class Fanout:
    """Subscriptions to a store's operations, sharing one reader per operation."""

    def __init__(self, store: OperationStore, *,
                 keepalive: float = DEFAULT_KEEPALIVE_SECONDS,
                 count_readers: Callable[[int], object] | None = None) -> None:
        if keepalive <= 0:
            raise ValueError("keepalive must be positive")
        self.store = store
        #: Told +1 when a reader starts and -1 when it has ended (the API's gauge).
        self.count_readers = count_readers
        #: How long the reader blocks on the store at a time; also how soon it sees the store go.
        self.keepalive = keepalive
        self._feeds: dict[str, _Feed] = {}
        self._readers: set[asyncio.Task[None]] = set()

    @property
    def readers(self) -> int:
        """Store readers open now: one per operation with a subscriber in this process (and any
        still closing its connection)."""
        return len(self._readers)

    @property
    def subscribers(self) -> int:
        return sum(feed.watchers for feed in self._feeds.values())

    async def subscribe(
        self, operation_id: str, after: str | None = None, *,
        keepalive: float = DEFAULT_KEEPALIVE_SECONDS, stop: Callable[[], bool] | None = None,
    ) -> AsyncIterator[OperationEvent | None]:
        """As ``OperationStore.subscribe``; also ends, early, once ``stop()`` is true after a
        ``wake`` (how the API ends its streams at shutdown without a task per event)."""
        cursor = parse_after(after)
        if keepalive <= 0:
            raise ValueError("keepalive must be positive")
        feed = self._join(operation_id)
        try:
            while stop is None or not stop():
                index = bisect_right(feed.keys, cursor)
                if index < len(feed.events):
                    event = feed.events[index]
                    cursor = feed.keys[index]
                    # Take turns: every subscriber gets this event before anyone the next, so
                    # the last event reaches all of them together instead of one by one.
                    await asyncio.sleep(0)
                    yield event
                    if event.is_terminal:
                        return
                    continue
                if feed.ended:
                    if feed.error is not None:
                        raise EventStoreUnavailable(feed.error)
                    return
                try:
                    async with asyncio.timeout(keepalive):
                        await feed.changed.wait()
                except TimeoutError:
                    yield None
        finally:
            self._leave(operation_id, feed)

    def wake(self, operation_id: str) -> None:
        """Wake every subscriber of the operation now (each checks its ``stop``)."""
        feed = self._feeds.get(operation_id)
        if feed is not None:
            feed.wake()

    def _join(self, operation_id: str) -> _Feed:
        feed = self._feeds.get(operation_id)
        if feed is None:
            feed = self._feeds[operation_id] = _Feed()
            feed.reader = asyncio.create_task(self._read(operation_id, feed),
                                              name=f"fanout-{operation_id}")
            self._readers.add(feed.reader)
            feed.reader.add_done_callback(self._reader_ended)
            if self.count_readers is not None:
                self.count_readers(1)
        feed.watchers += 1
        return feed

    def _reader_ended(self, reader: asyncio.Task[None]) -> None:
        self._readers.discard(reader)
        if self.count_readers is not None:
            self.count_readers(-1)

    def _leave(self, operation_id: str, feed: _Feed) -> None:
        feed.watchers -= 1
        if feed.watchers == 0:
            self._forget(operation_id, feed)
            if feed.reader is not None and not feed.ended:  # an ended one is closing already
                feed.reader.cancel()

    async def aclose(self) -> None:
        """Stop every reader and wait until their connections are closed (at shutdown)."""
        readers = list(self._readers)
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)

    def _forget(self, operation_id: str, feed: _Feed) -> None:
        if self._feeds.get(operation_id) is feed:
            del self._feeds[operation_id]

    async def _read(self, operation_id: str, feed: _Feed) -> None:
        try:
            async for event in self.store.subscribe(operation_id, None, keepalive=self.keepalive):
                if event is not None:
                    feed.append(event)
                    if event.is_terminal:  # ended now: the store's reader stops right after
                        feed.end()
        except EventStoreUnavailable as exc:
            # Whoever subscribes next starts a new reader, which tries the store again.
            self._forget(operation_id, feed)
            feed.end(str(exc))
        except Exception as exc:  # a reader must never leave its subscribers waiting forever
            logger.exception("operation %s: the event reader failed", operation_id)
            self._forget(operation_id, feed)
            feed.end(f"the event reader failed: {type(exc).__name__}")
        else:
            if not feed.ended:  # an unknown or expired operation: nothing to read
                feed.end()
