"""`/v1/events` over real HTTP: cursor paging over every shard, filters, one event by id, and SSE with
resume after a dropped connection (no gap, no duplicate) and heartbeats."""
from __future__ import annotations

import json
import time

import httpx

from tests.api.conftest import KEYS, auth
from tests.api.events_helpers import SseReader, make_event, write_event

CAMERAS = ["cam1", "cam2", "cam3", "cam4"]


def test_list_events_when_paged_then_every_entry_once_newest_first(api, redis_client):
    # given 250 events over four cameras (several shards)
    assert len({KEYS.shard_of(c) for c in CAMERAS}) > 1
    for n in range(250):
        write_event(redis_client, KEYS, make_event(n, camera=CAMERAS[n % 4]))
        time.sleep(0.0015)  # the feed orders by write time (ms), then shard: one event per ms makes the order exact
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
                time.sleep(0.002)
            for _ in range(3):
                m = sse.next_message()
                received.append(json.loads(m["data"])["event_id"])
                last_id = m["id"]
        # when the connection drops and events keep coming
        for n in range(5, 9):
            write_event(redis_client, KEYS, make_event(n, camera=CAMERAS[n % 4]))
            time.sleep(0.002)
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
            sse.next_comment(": connected")
            time.sleep(0.2)
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
