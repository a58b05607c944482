"""`/v1/events` over real HTTP: cursor paging over every shard, filters, one event by id, and SSE with
resume after a dropped connection (no gap, no duplicate) and heartbeats; out-of-range values as 422s; the SSE
slots (api.max_streams) under clients that vanish at every stage, and under a burst."""
from __future__ import annotations

import json
import select
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import KEYS, TOKENS, RunningApi, auth, raw_request, start_api
from tests.api.events_helpers import SseReader, make_event, write_event
from tests.waiting import redis_clock_ticks, wait_for

CAMERAS = ["cam1", "cam2", "cam3", "cam4"]


def test_list_events_when_paged_then_every_entry_once_newest_first(api, redis_client):
    # given 250 events over four cameras (several shards)
    assert len({KEYS.shard_of(c) for c in CAMERAS}) > 1
    for n in range(250):
        write_event(redis_client, KEYS, make_event(n, camera=CAMERAS[n % 4]))
        redis_clock_ticks(redis_client)  # the feed orders by write time (ms), then shard: one event per ms makes the order exact
    seen, cursor, pages = [], None, 0
    with api.client("read") as http:
        # when paged with limit=100
        while True:
            r = http.get("/v1/events", params={"limit": 100, **({"cursor": cursor} if cursor else {})})
            assert r.status_code == 200
            body = r.json()
            seen += [e["event_id"] for e in body["events"]]
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
    # then three pages, every event once, newest first
    assert pages == 3
    assert seen == [f"e{n}" for n in reversed(range(250))]


def test_list_events_when_filtered_then_only_matching(api, redis_client):
    for n in range(40):
        write_event(redis_client, KEYS, make_event(n, camera=CAMERAS[n % 4], query="qa" if n % 2 else "qb",
                                                   type_="end" if n % 5 == 0 else "new"))
    with api.client("read") as http:
        cam = http.get("/v1/events", params={"camera": "cam2"}).json()["events"]
        assert cam and all(e["camera_id"] == "cam2" for e in cam) and len(cam) == 10
        ends = http.get("/v1/events", params={"type": "end", "query": "qb"}).json()["events"]
        assert sorted(e["event_id"] for e in ends) == sorted(f"e{n}" for n in (30, 20, 10, 0))
        window = http.get("/v1/events", params={"since": 1_700_000_010.0 + 1, "until": 1_700_000_012.0}).json()["events"]
        assert sorted(e["event_id"] for e in window) == ["e10", "e11", "e12"]
        assert http.get("/v1/events", params={"type": "begin"}).status_code == 422
        assert http.get("/v1/events", params={"cursor": "garbage"}).status_code == 422
        assert http.get("/v1/events", params={"limit": 0}).status_code == 422


def test_get_event_when_updated_then_latest_version(api, redis_client):
    write_event(redis_client, KEYS, make_event(1, event_id="abc"))
    write_event(redis_client, KEYS, make_event(2, event_id="abc", type_="update"))
    with api.client("read") as http:
        r = http.get("/v1/events/abc")
        assert r.status_code == 200 and r.json()["type"] == "update"
        assert http.get("/v1/events/missing").status_code == 404


def test_stream_when_connection_dropped_and_resumed_then_no_gap_no_duplicate(api, redis_client):
    received = []
    with httpx.Client(base_url=api.url, headers=auth("read"), timeout=10) as http:
        # given a client following from the start
        with http.stream("GET", "/v1/events/stream", params={"since": "0"}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            sse = SseReader(r)
            for n in range(5):  # one per ms or more: the feed orders by write time, then shard
                write_event(redis_client, KEYS, make_event(n, camera=CAMERAS[n % 4]))
                redis_clock_ticks(redis_client)
            for _ in range(3):
                m = sse.next_message()
                received.append(json.loads(m["data"])["event_id"])
                last_id = m["id"]
        # when the connection drops and events keep coming
        for n in range(5, 9):
            write_event(redis_client, KEYS, make_event(n, camera=CAMERAS[n % 4]))
            redis_clock_ticks(redis_client)
        # then a reconnect with Last-Event-ID gets exactly the rest
        with http.stream("GET", "/v1/events/stream", headers={"Last-Event-ID": last_id}) as r:
            sse = SseReader(r)
            for _ in range(6):
                received.append(json.loads(sse.next_message()["data"])["event_id"])
            write_event(redis_client, KEYS, make_event(9))
            received.append(json.loads(sse.next_message()["data"])["event_id"])
    assert received == [f"e{n}" for n in range(10)]


def test_stream_when_filtered_and_resumed_then_only_matching_once(api, redis_client):
    with httpx.Client(base_url=api.url, headers=auth("read"), timeout=10) as http:
        with http.stream("GET", "/v1/events/stream", params={"since": "0", "camera": "cam3", "type": "new"}) as r:
            sse = SseReader(r)
            for n in range(12):
                write_event(redis_client, KEYS, make_event(n, camera=CAMERAS[n % 4], type_="end" if n == 6 else "new"))
            first = sse.next_message()
        with http.stream("GET", "/v1/events/stream", params={"camera": "cam3", "type": "new"},
                         headers={"Last-Event-ID": first["id"]}) as r:
            second = SseReader(r).next_message()
    assert [json.loads(first["data"])["event_id"], json.loads(second["data"])["event_id"]] == ["e2", "e10"]


def test_stream_when_only_new_then_history_is_skipped(api, redis_client):
    write_event(redis_client, KEYS, make_event(1))
    with httpx.Client(base_url=api.url, headers=auth("read"), timeout=10) as http:
        with http.stream("GET", "/v1/events/stream") as r:
            sse = SseReader(r)
            sse.next_comment(": connected")  # the stream's position is fixed before this line is sent
            write_event(redis_client, KEYS, make_event(2))
            assert json.loads(sse.next_message()["data"])["event_id"] == "e2"


def test_stream_when_idle_then_heartbeats(api):
    with httpx.Client(base_url=api.url, headers=auth("read"), timeout=10) as http:
        with http.stream("GET", "/v1/events/stream") as r:
            t0 = time.monotonic()
            assert SseReader(r).next_comment(": heartbeat")
            assert time.monotonic() - t0 < 5


def test_stream_when_last_event_id_is_garbage_then_422(api):
    with httpx.Client(base_url=api.url, headers=auth("read"), timeout=10) as http:
        assert http.get("/v1/events/stream", headers={"Last-Event-ID": "1-0.2-0"}).status_code == 422


@pytest.mark.parametrize("params", [
    {"since": "inf"}, {"since": "nan"}, {"since": "-inf"}, {"since": "-1"}, {"since": "1e400"}, {"until": "nan"},
    {"until": "1e300"}, {"cursor": "1-0." * 5000}, {"cursor": "5_0-0"}, {"cursor": "99999999999999999999999-0"},
])
def test_list_events_when_a_value_is_out_of_range_then_422_naming_it(api, params):
    with api.client("read") as http:
        r = http.get("/v1/events", params=params)
    assert r.status_code == 422, r.text
    (field,) = params
    assert [d["loc"] for d in r.json()["detail"]] == [["query", field]] and len(r.text) < 1000


def test_list_events_when_since_is_within_the_first_hour_of_the_epoch_then_served(api, redis_client):
    write_event(redis_client, KEYS, make_event(1))
    with api.client("read") as http:
        assert [e["event_id"] for e in http.get("/v1/events", params={"since": 100}).json()["events"]] == ["e1"]


@pytest.mark.parametrize("params, headers", [
    ({"since": "inf"}, {}), ({"since": "nan"}, {}), ({"since": "1e400"}, {}), ({"since": "1e12"}, {}),
    ({"since": "x" * 100_00}, {}), ({}, {"Last-Event-ID": "1-0." * 1000}), ({}, {"Last-Event-ID": "18446744073709551616-0"}),
])
def test_stream_when_since_or_last_event_id_is_out_of_range_then_422(api, params, headers):
    with api.client("read") as http:
        r = http.get("/v1/events/stream", params=params, headers=headers)
    assert r.status_code == 422 and len(r.text) < 1000, r.text[:300]


def open_streams(api) -> float:
    with api.client("read") as http:
        text = http.get("/metrics").text
    return next(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
                if s.name == "svl_api_event_streams")


def sse_socket(port: int, timeout_s: float = 10.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    s.sendall(f"GET /v1/events/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKENS['read']}\r\n\r\n".encode())
    return s


def read_until(s: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def abort(s: socket.socket) -> None:
    """Close with a reset, as a killed client or a dropped network does."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


@pytest.fixture
def capped_api(redis_client):
    server = start_api(redis_client, webhooks=False, max_streams=CAP)
    yield RunningApi(server, server.url)
    server.close()


CAP = 8


def test_stream_when_clients_vanish_before_or_during_the_stream_then_every_slot_comes_back(capped_api):
    port = capped_api.server.port

    def client(n: int) -> None:
        s = sse_socket(port)
        if n % 3 == 1:
            read_until(s, b"HTTP/1.1")  # the first bytes, then gone
        elif n % 3 == 2:
            read_until(s, b": connected")  # mid-stream: the server is in its blocking read
            select.select([s], [], [], 0.05 * (n % 5))  # stay connected a while (or until the server writes), then go
        abort(s)  # n % 3 == 0: gone before the first byte

    # given 120 clients (15 at a time, over a cap of 8) that connect and are cut off at every stage
    with ThreadPoolExecutor(15) as pool:
        list(pool.map(client, range(120)))
    # then every slot comes back
    wait_for(lambda: open_streams(capped_api) == 0, 20, "the open-stream gauge back to 0")
    # and the cap still holds exactly: CAP streams open, the next one refused, a closed one makes room
    held = [sse_socket(port) for _ in range(CAP)]
    assert all(b" 200 " in read_until(s, b": connected").split(b"\r\n")[0] for s in held)
    status, answer = raw_request(port, f"GET /v1/events/stream HTTP/1.1\r\nAuthorization: Bearer {TOKENS['read']}")
    assert status == 503 and b"api.max_streams" in answer
    abort(held.pop())
    wait_for(lambda: open_streams(capped_api) == CAP - 1, 10, "the aborted stream's slot back")
    held.append(sse_socket(port))
    assert b" 200 " in read_until(held[-1], b": connected").split(b"\r\n")[0]
    for s in held:
        s.close()
    wait_for(lambda: open_streams(capped_api) == 0, 10, "every slot back")


def test_stream_when_a_burst_exceeds_the_cap_then_exactly_cap_served_and_the_rest_refused_at_once(capped_api):
    port = capped_api.server.port
    # given 3 x CAP clients at once
    socks = [sse_socket(port) for _ in range(3 * CAP)]
    try:
        # then each gets its status line within the timeout (none hangs): CAP are served, the rest refused
        statuses = [int(read_until(s, b"\r\n").split(b" ")[1]) for s in socks]
        assert sorted(statuses) == [200] * CAP + [503] * (2 * CAP)
        assert open_streams(capped_api) == CAP
    finally:
        for s in socks:
            abort(s)
    wait_for(lambda: open_streams(capped_api) == 0, 10, "every slot back")
