"""A local Stripe for tests: ``localstripe`` as a real process, behind a recording front.

``localstripe`` (PyPI) serves customers, plans and subscriptions in Stripe's wire format, keeps
its store in a file (so a restart after a kill still knows every subscription), and is the
billing system our changes land in. It does not honour ``Idempotency-Key``, and it cannot say
what it was sent, so the tests put a front of their own before it that does both, as Stripe
does: it records every request (method, path, form, key), answers a repeated key with the
first answer without forwarding it, and, with the server down, drops the connection the way
a dead host does. It can also lose one answer after forwarding the request (the change made,
the caller never told).

Run as a script, this file is the server process: ``python billing_server.py PORT STORE``.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

API_KEY = "sk_test_local_billing"


@dataclass
class Seen:
    method: str
    path: str
    form: dict[str, str]
    idempotency_key: str | None
    outcome: str  # forwarded, replayed, refused (same key, other request), down, lost


@dataclass
class Front:
    """The recording, key-honouring front before the server."""

    upstream_port: int
    seen: list[Seen] = field(default_factory=list)
    lose_next_answer: bool = False
    _answers: dict[str, tuple[tuple[str, str, bytes], int, bytes]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def forwarded(self, method: str | None = None) -> list[Seen]:
        """What reached the server (each an effect there)."""
        return [s for s in self.seen if s.outcome in ("forwarded", "lost")
                and (method is None or s.method == method)]

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        key = handler.headers.get("Idempotency-Key")
        form = dict(urllib.parse.parse_qsl(body.decode())) if body else {}
        request = (handler.command, handler.path, body)
        with self._lock:
            cached = self._answers.get(key) if key else None
            if cached is not None:
                if cached[0] != request:
                    self.seen.append(Seen(*request[:2], form, key, "refused"))
                    _answer(handler, 400, b'{"error": {"type": "idempotency_error", "message":'
                            b' "Keys for idempotent requests can only be used with the same '
                            b'parameters they were first used with."}}')
                    return
                self.seen.append(Seen(*request[:2], form, key, "replayed"))
                _answer(handler, cached[1], cached[2], replayed=True)
                return
            try:
                status, answer = _forward(self.upstream_port, handler, body)
            except OSError:
                self.seen.append(Seen(*request[:2], form, key, "down"))
                handler.close_connection = True  # no answer at all: what a dead host gives
                return
            if key:
                self._answers[key] = (request, status, answer)
            if self.lose_next_answer and handler.command != "GET":
                self.lose_next_answer = False
                self.seen.append(Seen(*request[:2], form, key, "lost"))
                handler.close_connection = True
                return
            self.seen.append(Seen(*request[:2], form, key, "forwarded"))
        _answer(handler, status, answer)


def _forward(port: int, handler: BaseHTTPRequestHandler, body: bytes) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {k: v for k, v in handler.headers.items()
                   if k.lower() not in ("host", "content-length", "connection")}
        connection.request(handler.command, handler.path, body=body or None, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _answer(handler: BaseHTTPRequestHandler, status: int, body: bytes, *,
            replayed: bool = False) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    if replayed:
        handler.send_header("Idempotent-Replayed", "true")
    handler.end_headers()
    handler.wfile.write(body)


class LocalStripe:
    """The ``localstripe`` process: started, killed by its PID, started again on its port
    with the store it had."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.store = folder / "localstripe.pickle"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        log = (self.folder / "localstripe.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, __file__, str(self.port), str(self.store)], stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError("localstripe exited: "
                                   + (self.folder / "localstripe.log").read_text()[-2000:])
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@contextmanager
def local_stripe(folder: Path) -> Iterator[tuple[LocalStripe, Front]]:
    """``localstripe`` running, and the front before it (``front.url`` is Stripe's API)."""
    server = LocalStripe(folder)
    server.start()
    front = Front(server.port)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            front.handle(self)

        do_POST = do_DELETE = do_GET

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    front.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, front
    finally:
        httpd.shutdown()
        httpd.server_close()
        server.kill()


def billing_subscription(client: Any, email: str = "customer@example.com") -> tuple[str, str]:
    """A customer with a monthly subscription in the billing system: (customer, subscription)."""
    customer = client.v1.customers.create(params={"email": email})
    try:
        client.v1.plans.retrieve("ladybug-large")
    except Exception:
        product = client.v1.products.create(params={"name": "ladybug-large"})
        client.v1.plans.create(params={"id": "ladybug-large", "amount": 4900,
                                       "currency": "usd", "interval": "month",
                                       "product": product.id})
    subscription = client.v1.subscriptions.create(params={
        "customer": customer.id, "items": [{"plan": "ladybug-large"}],
        "trial_end": int(time.time()) + 20 * 86400})
    return customer.id, subscription.id


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(port: int, store: str) -> None:
    """localstripe on ``port``, its store in ``store`` (it hard-codes one file in /tmp)."""
    import pickle

    from aiohttp import web
    from localstripe import resources, server

    def load(self: Any) -> None:
        try:
            with open(store, "rb") as f:
                self.clear()
                self.update(pickle.load(f))
        except FileNotFoundError:
            pass

    def dump(self: Any) -> None:
        with open(store + ".tmp", "wb") as f:
            pickle.dump(dict(self), f)
        os.replace(store + ".tmp", store)

    resources.Store.try_load_from_disk = load
    resources.Store.dump_to_disk = dump
    resources.store.try_load_from_disk()
    web.run_app(server.app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    _serve(int(sys.argv[1]), sys.argv[2])
