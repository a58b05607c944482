"""The roles run one per container (`spacevllm ingest | engine | serve | media | mqtt`) against a shared Redis; each
runs until SIGINT/SIGTERM. A role that cannot start raises ServiceError (CheckpointError for the engine's
model) with one line for the operator; `up` (engine/app/service.py) runs them all on one machine instead."""
from __future__ import annotations

import threading
from collections.abc import Callable

from engine.app.connection import ServiceError, private_state
from engine.app.service import (EventLines, build_engine, build_mqtt, load_engine_model, model_windows, open_redis,
                                seed_queries, stop_on_signals)
from engine.contracts.settings import ServiceConfig
from stream.cameras import CameraRegistry
from stream.ingest import IngestService
from stream.urls import redact_url


def serve_healthz(port: int | None, alive: Callable[[], bool]) -> None:
    """GET /healthz on `port` (container healthchecks), answered by `alive`; nothing when `port` is None."""
    if port is not None:
        from api.probe import serve_healthz as serve

        serve("0.0.0.0", port, alive)


def _require_shared_redis(cfg: ServiceConfig, role: str) -> None:
    # an embedded Redis would be this container's alone: the other roles could never reach it
    if not cfg.redis.url:
        raise ServiceError(f"{role} needs a shared Redis: set redis.url or REDIS_URL")


def _config_queries(cfg: ServiceConfig) -> list[dict]:
    return [q.model_dump(exclude_none=True) for q in cfg.queries]


def run_ingest(cfg: ServiceConfig, echo: Callable[[str], None], health_port: int | None = None) -> None:
    """Cameras -> windows. The config's cameras seed the camera registry in Redis; cameras added or removed there
    (API, `spacevllm cameras`) are picked up while running. Redis may be the embedded one (a single machine)."""
    private_state(cfg.data_dir)
    client, server, url = open_redis(cfg)
    echo(f"Redis: {redact_url(url)}")
    keys = cfg.redis.keys()
    try:
        seed_queries(client, keys, _config_queries(cfg))
        windows = model_windows(cfg)  # the model's input size: ingest stores frames at it
        svc = IngestService(client, keys, list(cfg.cameras), windows, cfg.ingest, registry=CameraRegistry(client, keys))
        serve_healthz(health_port, lambda: not svc.stop_event.is_set()
                      and bool(client.exists(keys.heartbeat("ingest", svc.worker_id))))
        svc.run()
    finally:
        if server is not None:
            server.stop()


def run_engine(cfg: ServiceConfig, echo: Callable[[str], None], consumer: str | None = None,
               health_port: int | None = None, max_windows: int | None = None, idle_exit_s: float | None = None) -> None:
    """Windows -> grounding events, each printed; registers the config's queries. `max_windows` and
    `idle_exit_s` end it early (tests, benches)."""
    private_state(cfg.data_dir)
    _require_shared_redis(cfg, "the engine")
    stop = threading.Event()
    stop_on_signals(stop)
    loaded = load_engine_model(cfg)
    client, _, _ = open_redis(cfg)
    keys = cfg.redis.keys()
    seed_queries(client, keys, _config_queries(cfg))
    lines = EventLines()
    worker = build_engine(cfg, client, keys, stop, on_event=lambda e: echo(lines(e)),
                          consumer=consumer, loaded=loaded)
    serve_healthz(health_port, lambda: not stop.is_set() and bool(client.exists(keys.heartbeat("engine", worker.consumer))))
    worker.run(max_windows=max_windows, idle_exit_s=idle_exit_s)


def run_api(cfg: ServiceConfig, echo: Callable[[str], None], host: str | None = None, port: int | None = None) -> None:
    """The HTTP API on `host`:`port` (each None: the config's `api.host` / `api.port`)."""
    private_state(cfg.data_dir)
    from api.server import ExposureError, build_server

    _require_shared_redis(cfg, "the API")
    settings = cfg.api.model_copy(update={k: v for k, v in {"host": host, "port": port}.items() if v is not None})
    client, _, _ = open_redis(cfg)
    try:
        server = build_server(client, cfg.redis.keys(), settings, cfg.data_dir, media_dir=cfg.media_dir(),
                              file_roots=tuple(cfg.ingest.file_roots))
    except ExposureError as exc:
        raise ServiceError(str(exc)) from None
    echo(f"API: {server.url}  (OpenAPI: {server.url}/docs)")
    server.serve_forever()


def run_media(cfg: ServiceConfig, echo: Callable[[str], None], health_port: int | None = None) -> None:
    """Event media: follow the event feed; a snapshot per event, a clip when it ends (files under media.dir)."""
    private_state(cfg.data_dir)
    from engine.media.store import MediaStore
    from engine.media.worker import MediaWorker

    _require_shared_redis(cfg, "the media worker")
    client, _, _ = open_redis(cfg)
    stop = threading.Event()
    stop_on_signals(stop)
    worker = MediaWorker(client, cfg.redis.keys(), cfg.media, MediaStore(cfg.media_dir()), stop)
    serve_healthz(health_port, lambda: not stop.is_set())
    echo(f"media worker: media in {cfg.media_dir()}")
    worker.run()


def run_mqtt(cfg: ServiceConfig, echo: Callable[[str], None], health_port: int | None = None) -> None:
    """The MQTT publisher: follow the event feed; events, states, snapshots and discovery to `mqtt.url`."""
    private_state(cfg.data_dir)
    _require_shared_redis(cfg, "the MQTT publisher")
    if not cfg.mqtt.url:
        raise ServiceError("the MQTT publisher needs a broker: set mqtt.url or SVL_MQTT_URL (mqtt://host:1883)")
    client, _, _ = open_redis(cfg)
    stop = threading.Event()
    stop_on_signals(stop)
    publisher = build_mqtt(cfg, client, cfg.redis.keys(), stop)
    serve_healthz(health_port, lambda: not stop.is_set())
    echo(f"mqtt publisher: {redact_url(cfg.mqtt.url)}, topics {cfg.mqtt.topic_prefix}/...")
    publisher.run()
