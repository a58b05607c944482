"""Shared test harness for engine tests: a synthetic camera ingested into real Redis, queries, workers, the feed."""
from __future__ import annotations

import time

import redis

from engine.feed import Cursor, EventFeed
from engine.grounder import WindowGrounder
from engine.model.checkpoint import load_model
from engine.queries import QueryRegistry, validate_query
from engine.runtime import TorchBackend
from engine.settings import EngineSettings
from engine.worker import EngineWorker
from stream.config import CameraSettings, WindowSettings
from stream.ingest import IngestService
from stream.keys import Keys

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
