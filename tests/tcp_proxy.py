"""A TCP proxy a test can misbehave with, in front of a server it does not touch: cut it (the
server "goes away": connections reset, new ones refused, and it comes back on the same address),
or, per direction, delay what passes, hold it back until released, or discard it while the
connection stays open.

The two directions are ``"requests"`` (client to server) and ``"answers"`` (server to client).
A held chunk has been read from its sender (who sees it sent) and waits in the proxy; on
``release`` it goes on, in order. Counters of the bytes each direction forwarded let a test
wait for "the request reached the server" without a sleep.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable

from tests.conftest import free_port

DIRECTIONS = ("requests", "answers")


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *,
                 listen_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = listen_host
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        #: Per direction: "pass", "hold" or "discard"; and seconds added to each chunk.
        self._mode = dict.fromkeys(DIRECTIONS, "pass")
        self._delay = dict.fromkeys(DIRECTIONS, 0.0)
        #: Bytes forwarded, held back now, and thrown away, per direction.
        self.forwarded = dict.fromkeys(DIRECTIONS, 0)
        self.held = dict.fromkeys(DIRECTIONS, 0)
        self.discarded = dict.fromkeys(DIRECTIONS, 0)
        #: Chunks read and not yet forwarded nor thrown away (delayed or held), per direction.
        self.pending = dict.fromkeys(DIRECTIONS, 0)
        self.accepted = 0
        #: (marker, direction, mode): once a request holding the marker has passed.
        self._triggers: list[tuple[bytes, str, str]] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Refuse new connections and reset every open one (held chunks are dropped)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            connections, self._connections = self._connections, set()
            self._changed.notify_all()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    # ------------------------------------------------------------------ misbehaving

    def delay(self, seconds: float, direction: str = "requests") -> None:
        """Each chunk of ``direction`` waits ``seconds`` before it is forwarded."""
        with self._lock:
            self._delay[_checked(direction)] = seconds

    def hold(self, direction: str = "answers") -> None:
        """Read but keep back what ``direction`` carries, until ``release``."""
        self._set(direction, "hold")

    def discard(self, direction: str = "answers") -> None:
        """Read and throw away what ``direction`` carries; the connections stay open."""
        self._set(direction, "discard")

    def after_request(self, marker: bytes, mode: str, direction: str = "answers") -> None:
        """Once a request chunk holding ``marker`` (say ``b"/fork"``) has been forwarded,
        ``direction`` goes to ``mode`` ("hold" or "discard"): the fault hits one call only."""
        with self._lock:
            self._triggers.append((marker, _checked(direction), mode))

    def release(self, direction: str | None = None) -> None:
        """Back to passing everything (held chunks go on first), no delay, no trigger."""
        with self._lock:
            self._triggers = [t for t in self._triggers if direction not in (None, t[1])]
        for each in (direction,) if direction else DIRECTIONS:
            self._set(each, "pass")
            self.delay(0.0, each)

    def _set(self, direction: str, mode: str) -> None:
        with self._lock:
            self._mode[_checked(direction)] = mode
            self._changed.notify_all()

    def wait_for(self, condition: Callable[[TcpProxy], bool], *, timeout: float = 60) -> None:
        """Until ``condition(self)`` holds (e.g. ``lambda p: p.held["answers"] > 0``)."""
        with self._lock:
            if not self._changed.wait_for(lambda: condition(self), timeout=timeout):
                raise TimeoutError(f"proxy: condition not met within {timeout} s "
                                   f"(forwarded {self.forwarded}, held {self.held})")

    # ------------------------------------------------------------------ the pipes

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.accepted += 1
                self._connections |= {client, upstream}
            for source, sink, direction in ((client, upstream, "requests"),
                                            (upstream, client, "answers")):
                threading.Thread(target=self._pipe, args=(source, sink, direction),
                                 daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, direction: str) -> None:
        try:
            while chunk := source.recv(65536):
                if not self._forward(chunk, sink, direction):
                    break
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._connections -= {source, sink}
                self._changed.notify_all()

    def _forward(self, chunk: bytes, sink: socket.socket, direction: str) -> bool:
        """Send the chunk as the direction's mode says; False once its connection is gone."""
        with self._lock:
            self.pending[direction] += 1
        try:
            return self._send(chunk, sink, direction)
        finally:
            with self._lock:
                self.pending[direction] -= 1
                self._changed.notify_all()

    def _send(self, chunk: bytes, sink: socket.socket, direction: str) -> bool:
        with self._lock:
            delay = self._delay[direction]
        if delay:
            time.sleep(delay)  # the fault itself: a slow network
        with self._lock:
            if self._mode[direction] == "hold":
                self.held[direction] += len(chunk)
                self._changed.notify_all()
                self._changed.wait_for(lambda: self._mode[direction] != "hold"
                                       or sink not in self._connections)
                self.held[direction] -= len(chunk)
            if sink not in self._connections:
                return False
            if self._mode[direction] == "discard":
                self.discarded[direction] += len(chunk)
                self._changed.notify_all()
                return True
            if direction == "requests":  # before the chunk goes on: its answer finds the mode
                for trigger in [t for t in self._triggers if t[0] in chunk]:
                    self._triggers.remove(trigger)
                    self._mode[trigger[1]] = trigger[2]
        sink.sendall(chunk)
        with self._lock:
            self.forwarded[direction] += len(chunk)
            self._changed.notify_all()
        return True


def _checked(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction: one of {DIRECTIONS}, not {direction!r}")
    return direction
