"""Webhooks to real local HTTP servers: signature, retry after a 500, at-least-once with a dedup id,
give-up after a 4xx, failures counted, no secret logged; per-sink queues (a slow, dead or hostile sink
delays only itself), no redirects followed, dropped jobs of removed queries, bounded queues, the lock
without scripting."""
from __future__ import annotations

import json
import logging
import socket
import threading

import httpx
import pytest
import redis

from api.webhooks import sink_id
from engine.contracts.queries import QueryRegistry, StandingQuery, Webhook, validate_query
from tests.api.conftest import KEYS
from tests.api.events_helpers import make_event, write_event
from tests.api.webhook_helpers import (SECRET, Sinks, counters, dead_letters, dispatcher, run_until, started,
                                       verify)
from tests.waiting import wait_for


@pytest.fixture
def sinks():
    made = Sinks()
    yield made
    made.close()


@pytest.fixture
def receiver(sinks):
    return sinks.receiver


def add_query(redis_client, query_id: str, *urls: str) -> None:
    QueryRegistry(redis_client, KEYS).add(validate_query({"id": query_id, "text": "x",
                                                         "webhooks": [{"url": u, "secret": SECRET} for u in urls]}))


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
    counted = counters(redis_client)
    assert counted["svl_webhook_deliveries_total|result=delivered"] == 1
    assert counted["svl_webhook_attempt_failures_total"] == 1
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
    assert counters(redis_client)["svl_webhook_deliveries_total|result=gave_up"] == 1
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
    # when another dispatcher starts, then the event is delivered (its job stayed queued: popped only once final)
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
        wait_for(lambda: redis_client.get(KEYS.webhook_cursor()), 10, "the dispatcher's cursor", step_s=0.05)
        with httpx.Client(base_url=server.url, headers={"Authorization": "Bearer tok-write-0123456789"}) as http:
            assert http.post("/v1/queries", json={"id": "q7", "text": "x", "webhooks": [{"url": sink.url, "secret": SECRET}]}).status_code == 201
        # when an event of the query is written, then the sink gets it, signed
        write_event(redis_client, KEYS, make_event(5, query="q7"))
        wait_for(lambda: sink.got, 10, "the delivery", step_s=0.05)
        assert [json.loads(g["body"])["event_id"] for g in sink.got] == ["e5"] and verify(sink.got[0])
        # and the service's own ports (the API's, the Redis's) are refused to sinks on loopback
        assert server.dispatcher.policy.own_ports == {server.port, redis_client.connection_pool.connection_kwargs["port"]}
    finally:
        server.close()


# ---- poison sinks beside a good one ---------------------------------------------------------------
def _garbage(conn, release):  # a Redis-like port: answers a protocol error, not HTTP
    conn.recv(65536)
    conn.sendall(b"-ERR unknown command 'POST', with args beginning with: '/hooks'\r\n")


def _close(conn, release):  # accepts, then closes without a word
    conn.shutdown(socket.SHUT_RDWR)


def _hang(conn, release):  # reads the request, never answers (until the test ends)
    conn.recv(65536)
    release.wait(30)


POISON = {
    "garbage": (_garbage, ("BadStatusLine",)),
    "closes": (_close, ("RemoteDisconnected", "ConnectionResetError", "BrokenPipeError")),
    "hangs": (_hang, ("TimeoutError",)),
    "0x50 port": (None, ("invalid URL: port must be a decimal number",)),
    "tls to plain http": ("tls", ("SSLError",)),
}


@pytest.mark.parametrize("kind", list(POISON))
def test_dispatcher_when_a_sink_is_poison_then_the_good_sink_gets_every_event(redis_client, sinks, kind):
    handle, errors = POISON[kind]
    good = sinks.receiver()
    if handle is None:
        bad_url = "http://127.0.0.1:0x50/hooks/private-path-token"  # stored before registration refused it
    elif handle == "tls":
        bad_url = sinks.receiver().url.replace("http://", "https://")
    else:
        bad_url = sinks.raw(handle).url
    # given a query with a poison sink beside a good one (stored as it is: older records skipped today's checks)
    QueryRegistry(redis_client, KEYS).add(StandingQuery("q1", "x", webhooks=(Webhook(bad_url, SECRET), Webhook(good.url, SECRET))))
    stop = threading.Event()
    d = dispatcher(redis_client, stop, webhook_max_attempts=2, webhook_timeout_s=0.3)
    runner = threading.Thread(target=d.run, kwargs={"block_ms": 100}, daemon=True)
    runner.start()
    try:
        wait_for(lambda: redis_client.get(KEYS.webhook_cursor()), 10, "the dispatcher's cursor", step_s=0.05)
        # when three events are written
        for n in (1, 2, 3):
            write_event(redis_client, KEYS, make_event(n, query="q1"))
        # then the good sink gets every one, in order, and the poison sink's deliveries are given up on, each
        wait_for(lambda: good.event_ids() == ["e1", "e2", "e3"], 15, "every event at the good sink", step_s=0.05)
        wait_for(lambda: len(dead_letters(redis_client)) == 3, 15, "the poison sink's dead letters", step_s=0.05)
        assert all(dl["error"].startswith(errors) and "private-path-token" not in dl["error"] for dl in dead_letters(redis_client))
        counted = counters(redis_client)
        assert counted["svl_webhook_deliveries_total|result=delivered"] == 3
        assert counted["svl_webhook_deliveries_total|result=gave_up"] == 3
        assert counted["svl_webhook_attempt_failures_total"] >= 3
        # and the dispatcher is still running
        assert runner.is_alive()
        write_event(redis_client, KEYS, make_event(4, query="q1"))
        wait_for(lambda: "e4" in good.event_ids(), 10, "a later event at the good sink", step_s=0.05)
    finally:
        stop.set()
        runner.join(10)
    assert not runner.is_alive()


def test_dispatcher_when_a_sink_hangs_then_other_sinks_do_not_wait_for_it(redis_client, sinks):
    # given a sink that holds its connection (far within the timeout) beside a good one
    hanging, good = sinks.raw(_hang), sinks.receiver()
    add_query(redis_client, "q1", hanging.url, good.url)
    d = started(redis_client, dispatcher(redis_client, webhook_timeout_s=30))
    # when events are written, then the good sink gets all of them while the first attempt still hangs
    for n in (1, 2, 3):
        write_event(redis_client, KEYS, make_event(n, query="q1"))
    run_until(d, lambda: good.event_ids() == ["e1", "e2", "e3"], what="every event at the good sink")
    assert hanging.connections == 1 and not hanging.release.is_set()
    hanging.release.set()  # its attempt ends (connection closed): a retryable failure
    run_until(d, lambda: counters(redis_client).get("svl_webhook_attempt_failures_total"), what="the failure counted")
    d.teardown()


def test_deliver_when_sink_redirects_then_not_followed_and_given_up(redis_client, sinks, caplog):
    target = sinks.receiver()

    def redirect(conn, release):
        conn.recv(65536)
        conn.sendall(f"HTTP/1.1 302 Found\r\nLocation: {target.url}/elsewhere\r\nContent-Length: 0\r\n\r\n".encode())

    redirecting = sinks.raw(redirect)
    add_query(redis_client, "q1", redirecting.url)
    d = started(redis_client, dispatcher(redis_client))
    write_event(redis_client, KEYS, make_event(1, query="q1"))
    run_until(d, lambda: dead_letters(redis_client), what="the dead letter")
    # one attempt; the Location is not visited, and only its origin is shown
    assert dead_letters(redis_client)[0]["error"] == f"HTTP 302: redirect not followed (Location: http://127.0.0.1:{target.port})"
    assert redirecting.connections == 1 and target.got == []
    assert "private-path-token" not in caplog.text
    d.teardown()


# ---- what is dropped ---------------------------------------------------------------------------------
def test_queue_when_query_removed_then_its_backlog_is_dropped_not_retried(redis_client, receiver):
    # given a sink that failed its first delivery and backs off for long, with two more jobs queued behind it
    sink = receiver([503] * 10)
    add_query(redis_client, "q1", sink.url)
    d = started(redis_client, dispatcher(redis_client, webhook_backoff_s=60))
    for n in (1, 2, 3):
        write_event(redis_client, KEYS, make_event(n, query="q1"))
    run_until(d, lambda: sink.got, what="the first attempt")
    # when the query is removed, then its jobs are dropped (counted) without waiting for the backoff
    QueryRegistry(redis_client, KEYS).remove("q1")
    run_until(d, lambda: counters(redis_client).get("svl_webhook_deliveries_total|result=dropped") == 3,
              what="three dropped jobs")
    assert redis_client.llen(KEYS.webhook_queue(sink_id("q1", sink.url))) == 0
    assert len(sink.got) == 1
    d.teardown()


def test_queue_when_query_removed_then_the_end_of_its_open_event_still_goes_out(redis_client, receiver):
    sink = receiver()
    add_query(redis_client, "q1", sink.url)
    d = started(redis_client, dispatcher(redis_client))
    write_event(redis_client, KEYS, make_event(1, query="q1"))
    run_until(d, lambda: sink.event_ids() == ["e1"], what="the first delivery")
    # when the query is removed, and the engine ends its open event (after a late `new` of another event)
    QueryRegistry(redis_client, KEYS).remove("q1")
    write_event(redis_client, KEYS, make_event(2, query="q1"))
    write_event(redis_client, KEYS, make_event(1, query="q1", type_="end"))
    # then the `end` is delivered, the later `new` is not
    run_until(d, lambda: len(sink.got) == 2, what="the end")
    assert [(g["headers"]["X-SVL-Event-Id"], g["headers"]["X-SVL-Event-Type"]) for g in sink.got] == [("e1", "new"), ("e1", "end")]
    d.teardown()


def test_queue_when_full_then_oldest_dropped_counted_and_logged_once(redis_client, receiver, caplog):
    sink = receiver([503] * 10)
    add_query(redis_client, "q1", sink.url)
    d = started(redis_client, dispatcher(redis_client, webhook_backoff_s=60, webhook_queue_max=2))
    for n in range(1, 6):
        write_event(redis_client, KEYS, make_event(n, query="q1"))
    run_until(d, lambda: counters(redis_client).get("svl_webhook_deliveries_total|result=dropped") == 3,
              what="three dropped jobs")
    queue = redis_client.lrange(KEYS.webhook_queue(sink_id("q1", sink.url)), 0, -1)
    assert [json.loads(j)["event_id"] for j in queue] == ["e4", "e5"]
    assert caplog.text.count("queue full") == 1
    d.teardown()


# ---- leadership without scripting ----------------------------------------------------------------------
def test_lock_when_scripting_is_denied_then_renewed_released_and_taken_over(redis_client):
    port = redis_client.connection_pool.connection_kwargs["port"]
    redis_client.acl_setuser("svl-noscript", enabled=True, passwords=["+pw-0123456789"], keys=["*"], channels=["*"],
                             commands=["+@all", "-@scripting"], reset=True)
    client = redis.Redis(host="127.0.0.1", port=port, db=1, username="svl-noscript", password="pw-0123456789")
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.eval("return 1", 0)
        a, b = dispatcher(client), dispatcher(client)
        assert a._hold_lock() and a._hold_lock() and not b._hold_lock()  # taken, renewed, refused
        assert 0 < client.pttl(KEYS.webhook_lock()) <= 15_000
        a.teardown()  # released
        assert b._hold_lock()
        b.teardown()
    finally:
        client.close()
        redis_client.acl_deluser("svl-noscript")
