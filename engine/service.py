"""Composition: Redis (URL or embedded), ingest, engine workers, and `up` (the main job)."""
from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

import redis

from engine.events import GroundingEvent
from engine.grounder import WindowGrounder
from engine.queries import QueryRegistry, validate_query
from engine.settings import ServiceConfig
from engine.worker import EngineWorker
from stream.config import CameraSettings
from stream.ingest import IngestService
from stream.keys import Keys
from stream.redis_server import EmbeddedRedis, connect

log = logging.getLogger(__name__)

DEMO_CAMERA = CameraSettings(id="demo", url="synthetic://demo?fps=10")
DEMO_QUERIES = [
    {"id": "red-circle", "text": "the red circle moving right", "cooldown_s": 2.0},
    {"id": "yellow-triangle", "text": "the yellow triangle moving down", "cooldown_s": 2.0},
    {"id": "blue-square", "text": "the blue square", "cooldown_s": 2.0},
    {"id": "green-triangle", "text": "the green triangle moving up", "cooldown_s": 2.0},  # never shown
]


def open_redis(cfg: ServiceConfig) -> tuple[redis.Redis, EmbeddedRedis | None, str]:
    if cfg.redis.url:
        client = connect(cfg.redis.url)
        try:
            client.ping()
        except redis.RedisError as exc:
            raise SystemExit(f"cannot reach Redis at {cfg.redis.url}: {exc}") from None
        return client, None, cfg.redis.url
    server = EmbeddedRedis.start(cfg.redis.data_dir)
    return connect(server.url), server, server.url


def build_engine(cfg: ServiceConfig, client: redis.Redis, keys: Keys, stop: threading.Event,
                 on_event: Callable[[GroundingEvent], None] | None = None, consumer: str | None = None) -> EngineWorker:
    import torch

    from engine.model.checkpoint import load_model
    from engine.runtime import build_backend

    if cfg.engine.threads:
        torch.set_num_threads(cfg.engine.threads)
    model = load_model(cfg.engine.model)
    backend = build_backend(cfg.engine.backend, model, cfg.engine.onnx_dir, cfg.engine.engine_dir)
    grounder = WindowGrounder(model, backend, keys, cfg.engine.cache_frames)
    return EngineWorker(client, keys, grounder, cfg.engine, stop, consumer=consumer, model_name=model.config.name,
                        on_event=on_event)


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%H:%M:%S.%f")[:-5]


def format_event(e: GroundingEvent) -> str:
    """One readable line: time, camera, query, span, score, first box."""
    box = " first box=[" + ", ".join(f"{v:.0f}" for v in e.boxes[0].xyxy) + "]" if e.boxes else ""
    return (f"{_clock(time.time())} {e.type.value.upper():<6} camera={e.camera_id} query={e.query_id} "
            f"\"{e.query_text}\" span={_clock(e.start_ts)}-{_clock(e.end_ts)} ({e.end_ts - e.start_ts:.1f} s) "
            f"score={e.score:.2f}{box}")


def run_up(cfg: ServiceConfig, echo: Callable[[str], None], max_seconds: float | None = None) -> None:
    """Embedded Redis (unless configured), the demo camera (+ configured cameras), ingest, one engine
    worker, the standing queries; events printed live until Ctrl-C."""
    stop = threading.Event()
    client, server, url = open_redis(cfg)
    keys = Keys(cfg.redis.prefix)
    echo(f"Redis: {url}   (watch: redis-cli -u {url} XREAD BLOCK 0 STREAMS {keys.events()} '$')")
    cameras = list(cfg.cameras) or [DEMO_CAMERA]
    registry = QueryRegistry(client, keys)
    for spec in (cfg.queries and [q.model_dump(exclude_none=True) for q in cfg.queries]) or DEMO_QUERIES:
        q = registry.add(validate_query(spec))
        echo(f"query {q.id}: \"{q.text}\" on {','.join(q.cameras)} (threshold {q.threshold if q.threshold is not None else 'model default'})")
    ingest = IngestService(client, keys, cameras, cfg.windows, cfg.ingest, stop=stop)
    engine = build_engine(cfg, client, keys, stop, on_event=lambda e: echo(format_event(e)))
    echo(f"cameras: {', '.join(c.id + '=' + c.url for c in cameras)}; model: {cfg.engine.model} ({cfg.engine.backend}); Ctrl-C stops")
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    ingest_thread = threading.Thread(target=ingest.run, kwargs={"install_signals": False}, name="ingest", daemon=True)
    ingest_thread.start()
    if max_seconds is not None:
        threading.Timer(max_seconds, stop.set).start()
    try:
        engine.run()
    finally:
        stop.set()
        ingest_thread.join(timeout=15)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if server is not None:
            server.stop()
        echo("stopped")
