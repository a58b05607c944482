"""The HTTP API's latency, over real HTTP to uvicorn on loopback, against the embedded Redis (with its password):

- GET /v1/events?limit=100 on a feed of --events events over 4 cameras (8 shards): median and p95 of the
  request as a client sees it (keep-alive connection, JSON parsed);
- SSE delivery delay: from just before the XADD of an event (as the engine's event store writes it) to
  the client having parsed that event off an open /v1/events/stream connection: median and p95.

    .venv/bin/python bench/api.py [--events 5000] [--requests 200] [--sse 200]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.auth import Identity, Scope, TokenStore, digest  # noqa: E402
from api.server import ApiServer  # noqa: E402
from engine.contracts.settings import ApiSettings  # noqa: E402
from stream.keys import Keys  # noqa: E402
from stream.redis_server import EmbeddedRedis, connect  # noqa: E402
from tests.api.events_helpers import SseReader, make_event, write_event  # noqa: E402

TOKEN = "bench-token-0123456789"
CAMERAS = ["cam1", "cam2", "cam3", "cam4"]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--sse", type=int, default=200)
    args = ap.parse_args()
    keys = Keys(shards=8)
    server = EmbeddedRedis.start(tempfile.mkdtemp(prefix="bench-api-"), appendonly=False, auth=True)
    api = None
    try:
        client = connect(server.url)
        pipe = client.pipeline(transaction=False)
        for n in range(args.events):
            write_event(pipe, keys, make_event(n, camera=CAMERAS[n % 4]))
        pipe.execute()
        tokens = TokenStore(((digest(TOKEN), Identity("bench", Scope.READ)),))
        api = ApiServer(client, keys, ApiSettings(port=0, webhooks=False), tokens, threading.Event()).start()
        http = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        for _ in range(10):  # warm-up
            http.get("/v1/events", params={"limit": 100})
        lat = []
        for _ in range(args.requests):
            t0 = time.perf_counter()
            r = http.get("/v1/events", params={"limit": 100})
            assert len(r.json()["events"]) == 100
            lat.append(time.perf_counter() - t0)
        print(f"GET /v1/events?limit=100 over {args.events} events, 8 shards: median {statistics.median(lat) * 1000:.1f} ms, "
              f"p95 {pct(lat, 0.95) * 1000:.1f} ms ({args.requests} requests)")
        delays = []
        with http.stream("GET", "/v1/events/stream") as r:
            sse = SseReader(r)
            sse.next_comment(": connected")
            time.sleep(0.3)
            for n in range(args.sse):
                e = make_event(args.events + n, camera=CAMERAS[n % 4])
                t0 = time.perf_counter()
                write_event(client, keys, e)
                got = json.loads(sse.next_message()["data"])
                delays.append(time.perf_counter() - t0)
                assert got["event_id"] == e.event_id
                time.sleep(0.01)
        print(f"SSE delivery delay after XADD: median {statistics.median(delays) * 1000:.1f} ms, "
              f"p95 {pct(delays, 0.95) * 1000:.1f} ms ({args.sse} events)")
        http.close()
    finally:
        if api is not None:
            api.close()
        server.stop()


if __name__ == "__main__":
    main()
