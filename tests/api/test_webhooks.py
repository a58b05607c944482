"""Webhooks to a real local HTTP server: signature, retry after a 500, at-least-once with a dedup id,
give-up after a 4xx, failures counted, no secret logged."""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from api.webhooks import WebhookDispatcher
from engine.contracts.queries import QueryRegistry, validate_query
from engine.contracts.settings import ApiSettings
from engine.contracts.telemetry import RedisCounters
from tests.api.conftest import KEYS
from tests.api.events_helpers import make_event, write_event

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
                receiver.got.append({"headers": self.headers, "body": body, "status": status})  # case-insensitive
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/private-path-token"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(statuses):
        r = Receiver(statuses)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def dispatcher(redis_client, stop):
    return WebhookDispatcher(redis_client, KEYS, ApiSettings(webhook_backoff_s=0.05, webhook_max_attempts=3,
                                                             webhook_timeout_s=2), stop)


def run_until(d: WebhookDispatcher, predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        d.step(block_ms=100)


def verify(delivery: dict, secret: str = SECRET) -> bool:
    h = delivery["headers"]
    mac = hmac.new(secret.encode(), h["X-SVL-Timestamp"].encode() + b"." + delivery["body"], hashlib.sha256).hexdigest()
    return hmac.compare_digest(h["X-SVL-Signature"], f"sha256={mac}")


def test_deliver_when_sink_fails_once_then_retried_signed_and_counted(redis_client, receiver, caplog):
    caplog.set_level(logging.DEBUG)
    # given a query with a sink that answers 500 once, then 200
    sink = receiver([500])
    QueryRegistry(redis_client, KEYS).add(validate_query({"id": "q1", "text": "the red circle",
                                                         "webhooks": [{"url": sink.url, "secret": SECRET}]}))
    stop = threading.Event()
    d = dispatcher(redis_client, stop)
    assert d._hold_lock()
    d.step(block_ms=10)  # first start: from the end of the feed
    # when an event of that query is written (and one of another query)
    write_event(redis_client, KEYS, make_event(1, query="q1"))
    write_event(redis_client, KEYS, make_event(2, query="other"))
    run_until(d, lambda: len(sink.got) >= 2)
    # then it arrives twice (500, then 200), with the same delivery id, a valid signature, and the event as body
    assert [g["status"] for g in sink.got] == [500, 200]
    first, second = sink.got
    assert first["headers"]["X-SVL-Delivery"] == second["headers"]["X-SVL-Delivery"]
    assert second["headers"]["X-SVL-Event-Id"] == "e1" and second["headers"]["X-SVL-Event-Type"] == "new"
    assert all(verify(g) for g in sink.got) and not verify(second, "wrong-secret")
    assert json.loads(second["body"])["event_id"] == "e1"
    counters = RedisCounters(redis_client, KEYS.telemetry("webhooks")).read()
    assert counters["svl_webhook_deliveries_total|result=delivered"] == 1
    assert counters["svl_webhook_attempt_failures_total"] == 1
    # and the secret and the sink's path are in no log line
    assert "attempt 1 failed" in caplog.text
    assert SECRET not in caplog.text and "private-path-token" not in caplog.text
    d.teardown()


def test_deliver_when_sink_answers_4xx_then_given_up_and_dead_lettered(redis_client, receiver):
    sink = receiver([400])
    QueryRegistry(redis_client, KEYS).add(validate_query({"id": "q1", "text": "x", "webhooks": [{"url": sink.url, "secret": SECRET}]}))
    d = dispatcher(redis_client, threading.Event())
    assert d._hold_lock()
    d.step(block_ms=10)
    write_event(redis_client, KEYS, make_event(1, query="q1"))
    run_until(d, lambda: redis_client.xlen(KEYS.webhook_dead()) > 0)
    assert len(sink.got) == 1  # a 400 is not retried
    dead = redis_client.xrange(KEYS.webhook_dead())[0][1]
    assert dead[b"event_id"] == b"e1" and dead[b"error"] == b"HTTP 400" and b"private-path-token" not in dead[b"origin"]
    assert RedisCounters(redis_client, KEYS.telemetry("webhooks")).read()["svl_webhook_deliveries_total|result=gave_up"] == 1
    d.teardown()


def test_dispatcher_when_restarted_before_delivery_then_delivers_at_least_once(redis_client, receiver):
    # given a dispatcher that stops while the sink is down (its retries interrupted)
    sink = receiver([503, 503, 503, 503])
    QueryRegistry(redis_client, KEYS).add(validate_query({"id": "q1", "text": "x", "webhooks": [{"url": sink.url, "secret": SECRET}]}))
    stop = threading.Event()
    d = dispatcher(redis_client, stop)
    assert d._hold_lock()
    d.step(block_ms=10)
    write_event(redis_client, KEYS, make_event(1, query="q1"))
    threading.Timer(0.02, stop.set).start()
    d.step(block_ms=100)
    d.teardown()
    assert all(g["status"] == 503 for g in sink.got)
    # when another dispatcher starts, then the event is delivered (the cursor had not moved past it)
    sink.statuses = []
    d2 = dispatcher(redis_client, threading.Event())
    assert d2._hold_lock()
    run_until(d2, lambda: any(g["status"] == 200 for g in sink.got))
    assert [json.loads(g["body"])["event_id"] for g in sink.got if g["status"] == 200] == ["e1"]
    d2.teardown()


def test_lock_when_held_by_one_dispatcher_then_another_waits(redis_client):
    a, b = dispatcher(redis_client, threading.Event()), dispatcher(redis_client, threading.Event())
    assert a._hold_lock() and not b._hold_lock() and a._hold_lock()
    a.teardown()
    assert b._hold_lock()
    b.teardown()


def test_api_when_query_with_webhook_posted_then_its_events_reach_the_sink(redis_client, receiver):
    from tests.api.conftest import start_api

    sink = receiver([])
    server = start_api(redis_client, webhooks=True, webhook_backoff_s=0.05)
    try:
        # given the API's dispatcher has started following the feed
        deadline = time.monotonic() + 10
        while not redis_client.get(KEYS.webhook_cursor()) and time.monotonic() < deadline:
            time.sleep(0.05)
        with httpx.Client(base_url=server.url, headers={"Authorization": "Bearer tok-write-0123456789"}) as http:
            assert http.post("/v1/queries", json={"id": "q7", "text": "x", "webhooks": [{"url": sink.url, "secret": SECRET}]}).status_code == 201
        # when an event of the query is written, then the sink gets it, signed
        write_event(redis_client, KEYS, make_event(5, query="q7"))
        while not sink.got and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [json.loads(g["body"])["event_id"] for g in sink.got] == ["e5"] and verify(sink.got[0])
    finally:
        server.close()
