"""Shared test harness for engine tests: a synthetic camera ingested into real Redis, queries, workers, the feed."""
from __future__ import annotations

import time

import redis

from engine.serving.event_store import EventStore
from engine.contracts.events import Box, EventType, GroundingEvent
from engine.contracts.feed import Cursor, EventFeed
from engine.serving.grounder import WindowGrounder
from engine.model.checkpoint import load_model
from engine.contracts.queries import QueryRegistry, validate_query
from engine.serving.runtime import TorchBackend
from engine.contracts.settings import EngineSettings
from engine.serving.worker import EngineWorker
from stream.config import CameraSettings, WindowSettings
from stream.ingest import IngestService
from stream.keys import Keys
from tests.waiting import redis_clock_ticks

CAMERA_URL = "synthetic://random?seed=1&fps=10&realtime=0&seconds=20&epoch=1000&w=160&h=120"
WINDOWS = WindowSettings(sample_fps=2, window_seconds=4, stride_seconds=1, input_size=32, frame_ttl_seconds=600)


def ingest(client, keys: Keys, url: str = CAMERA_URL, windows: WindowSettings = WINDOWS, cam: str = "cam1") -> None:
    IngestService(client, keys, [CameraSettings(id=cam, url=url)], windows).run(install_signals=False)


def add_queries(client, keys: Keys, specs) -> None:
    reg = QueryRegistry(client, keys)
    for s in specs:
        reg.add(validate_query(s))


def worker(client, keys: Keys, model_dir, **settings) -> EngineWorker:
    model = load_model(model_dir)
    grounder = WindowGrounder(model, TorchBackend(model), keys)
    return EngineWorker(client, keys, grounder, EngineSettings(model=str(model_dir), block_ms=100, **settings),
                        consumer=f"w-{time.monotonic_ns()}")


def events_of(client, keys: Keys) -> list[dict]:
    """Every event in the durable feed (all shards), in feed order."""
    feed = EventFeed(client, keys)
    return [e.event.to_dict() for e in feed.follow(Cursor.start(keys.shards), block_ms=0, stop_when_idle=True)]


def pending(client, keys: Keys) -> int:
    total = 0
    for s in keys.all_shards():
        try:
            total += client.xpending(keys.windows(s), "engines")["pending"]
        except redis.ResponseError:  # the group does not exist yet
            pass
    return total


ALWAYS = [{"id": "q-any", "text": "the red circle", "threshold": 0.0, "cooldown_s": 1.0},
          {"id": "q-blue", "text": "the blue square moving left", "threshold": 0.0, "cooldown_s": 1.0}]


def event(cam: str, n: int, kind: EventType = EventType.NEW, eid: str | None = None) -> GroundingEvent:
    return GroundingEvent(kind, eid or f"{cam}-{n}", "q1" if n % 2 else "q2", cam, "the red circle", 0.9, 1000.0 + n,
                          1004.0 + n, (Box(1000.0 + n, (1, 2, 3, 4)),), (320, 240), f"{cam}:{n}", "test")


def write(store: EventStore, events: list[GroundingEvent]) -> None:
    for e in events:  # one transaction each, in the camera's shard: what the engine does
        store._transition(e.camera_id, [], lambda states, e=e: ([], [e]))
        redis_clock_ticks(store.client)  # the feed orders shards by stream-id time (ms): entries 1 ms apart have one order
