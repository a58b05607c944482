"""Sinks for webhook tests: a real HTTP receiver, and raw TCP servers that misbehave on purpose."""
from __future__ import annotations

import hashlib
import hmac
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from api.webhooks import WebhookDispatcher
from engine.contracts.settings import ApiSettings
from engine.contracts.telemetry import RedisCounters
from tests.api.conftest import KEYS

SECRET = "whsec-test-9f8e7d"


class Receiver:
    """A webhook receiver: answers with the queued statuses (then 200) and keeps what it got."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.got: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.got.append({"headers": self.headers, "body": body, "status": status, "path": self.path})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.port}/hooks/private-path-token"

    def event_ids(self, status: int = 200) -> list[str]:
        return [g["headers"]["X-SVL-Event-Id"] for g in self.got if g["status"] == status]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class RawServer:
    """A TCP server that hands each connection to `handle(conn, release)`: a sink that does not speak HTTP, or
    not well. `release` is set when the test is done with it (a handler that hangs waits on it)."""

    def __init__(self, handle: Callable[[socket.socket, threading.Event], None]) -> None:
        self.handle = handle
        self.release = threading.Event()
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/private-path-token"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                self.handle(conn, self.release)
            except OSError:
                pass

    def close(self) -> None:
        self.release.set()
        self.sock.close()


class Sinks:
    """Made in a test, closed after it (a fixture's body)."""

    def __init__(self) -> None:
        self.made: list[Receiver | RawServer] = []

    def receiver(self, statuses: list[int] = ()) -> Receiver:
        self.made.append(Receiver(list(statuses)))
        return self.made[-1]

    def raw(self, handle) -> RawServer:
        self.made.append(RawServer(handle))
        return self.made[-1]

    def close(self) -> None:
        for s in self.made:
            s.close()


def dispatcher(redis_client, stop: threading.Event | None = None, own_ports=(), **settings) -> WebhookDispatcher:
    s = {"webhook_backoff_s": 0.05, "webhook_max_attempts": 3, "webhook_timeout_s": 2, **settings}
    return WebhookDispatcher(redis_client, KEYS, ApiSettings(**s), stop or threading.Event(), own_ports=own_ports)


def started(redis_client, d: WebhookDispatcher) -> WebhookDispatcher:
    """`d` holding the lock and following the feed from its end (the first start's position is stored)."""
    assert d._hold_lock()
    d.step(block_ms=10)
    return d


def run_until(d: WebhookDispatcher, predicate, timeout_s: float = 10.0, what: str = "the condition"):
    """Step `d` until `predicate()` holds; an AssertionError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        d.step(block_ms=50)


def counters(redis_client) -> dict[str, float]:
    return RedisCounters(redis_client, KEYS.telemetry("webhooks")).read()


def dead_letters(redis_client) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in f.items()} for _, f in redis_client.xrange(KEYS.webhook_dead())]


def verify(delivery: dict, secret: str = SECRET) -> bool:
    h = delivery["headers"]
    mac = hmac.new(secret.encode(), h["X-SVL-Timestamp"].encode() + b"." + delivery["body"], hashlib.sha256).hexdigest()
    return hmac.compare_digest(h["X-SVL-Signature"], f"sha256={mac}")
