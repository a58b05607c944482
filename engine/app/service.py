"""Composition: Redis (URL or embedded), ingest, engine workers, and `up` (the main job: all of them on one
machine). The roles run one per container are in engine/app/roles.py, built from the parts here."""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import redis

from engine.app.connection import ServiceError, checked_client, private_state
from engine.contracts.events import EventType, GroundingEvent
from engine.serving.grounder import WindowGrounder
from engine.contracts.queries import QueryRegistry, validate_query
from engine.contracts.settings import CameraSettings, ServiceConfig, WindowSettings, default_data_dir
from engine.serving.runtime.base import resolve_backend
from engine.app.supervisor import Supervisor
from engine.serving.worker import EngineWorker
from stream.ingest import IngestService
from stream.keys import Keys
from stream.cameras import CameraRegistry
from stream.redis_server import EmbeddedRedis, connect, redis_server_binary
from stream.role import Keeper, StatusBoard
from stream.urls import redact_url

log = logging.getLogger(__name__)

DEFAULT_CAMERA_ID = "demo"
DEMO_CAMERA = CameraSettings(id=DEFAULT_CAMERA_ID, url="synthetic://demo?fps=10")


DEMO_QUERIES = [
    {"id": "red-circle", "text": "the red circle moving right", "cooldown_s": 2.0},
    {"id": "yellow-triangle", "text": "the yellow triangle moving down", "cooldown_s": 2.0},
    {"id": "blue-square", "text": "the blue square", "cooldown_s": 2.0},
    {"id": "green-triangle", "text": "the green triangle moving up", "cooldown_s": 2.0},  # never shown
]


def open_redis(cfg: ServiceConfig) -> tuple[redis.Redis, EmbeddedRedis | None, str]:
    """A checked client (engine/app/connection.py) for the configured Redis, or for the embedded one, started in
    `<data_dir>/redis` and stopped again when the check fails; with the server (None for a configured URL) and
    the URL. ServiceError with one line when it cannot."""
    server = None
    if cfg.redis.url:
        url = cfg.redis.url
    else:
        data = Path(cfg.redis.data_dir or Path(cfg.data_dir) / "redis")
        try:
            server = EmbeddedRedis.start(data, maxmemory=cfg.redis.maxmemory, auth=True)  # password + no admin commands
        except (RuntimeError, OSError) as exc:
            raise ServiceError(f"cannot start the embedded Redis: {exc}") from None
        url = server.url
    try:
        return checked_client(url, cfg.redis), server, url
    except ServiceError:
        if server is not None:
            server.stop()
        raise


def seed_queries(client: redis.Redis, keys: Keys, specs, echo: Callable[[str], None] | None = None) -> None:
    """Register the config's `queries:` (a config query replaces a stored one with its id: the file is the record)."""
    registry = QueryRegistry(client, keys)
    for spec in specs:
        q = registry.add(validate_query(spec))
        if echo is not None:
            echo(f"query {q.id}: \"{q.text}\" on {','.join(q.cameras)} "
                 f"(threshold {q.threshold if q.threshold is not None else 'model default'})")


def redis_cli_path() -> str:
    return shutil.which("redis-cli") or str(Path(redis_server_binary()).with_name("redis-cli"))


def start_api(cfg: ServiceConfig, client: redis.Redis, keys: Keys, stop: threading.Event,
              echo: Callable[[str], None], board: StatusBoard | None = None):
    """`up`'s API: on api.host:api.port with an admin token (SVL_API_TOKEN, or one kept in the data dir); prints
    the URL and a curl line that works. A port in use is reported in one line and `up` goes on without the API."""
    from api.auth import Identity, Scope, TokenStore, digest
    from api.server import ApiServer, ExposureError, demo_admin_token, tokens_path

    token, shell_token = demo_admin_token(cfg.data_dir)
    tokens = TokenStore.load(tokens_path(cfg.api, cfg.data_dir), extra=((digest(token), Identity("up", Scope.ADMIN)),))
    try:
        server = ApiServer(client, keys, cfg.api, tokens, stop, cfg.media_dir(), board=board,
                           file_roots=tuple(cfg.ingest.file_roots)).start()
    except ExposureError as exc:
        echo(f"API not started: {exc}")
        return None
    echo(f"API: {server.url}  (OpenAPI: {server.url}/docs)")
    echo(f"Dashboard: {server.url}/  (open it in a browser; paste the admin token, \"echo {shell_token}\", into its token field)")
    echo(f"  curl -H \"Authorization: Bearer {shell_token}\" '{server.url}/v1/events?limit=5'")
    return server


def start_media(cfg: ServiceConfig, client: redis.Redis, keys: Keys, stop: threading.Event,
                board: StatusBoard | None = None) -> Keeper:
    """`up`'s media worker (snapshots and clips of events, under `media.dir`) in a thread, restarted if it dies."""
    from engine.media.worker import MediaWorker
    from engine.media.store import MediaStore

    def run() -> None:  # a fresh worker each start: it reloads its pending clips and resumes from its cursor
        MediaWorker(client, keys, cfg.media, MediaStore(cfg.media_dir()), stop).run()

    return Keeper("media", run, stop, board).start()


def build_mqtt(cfg: ServiceConfig, client: redis.Redis, keys: Keys, stop: threading.Event,
               finish: threading.Event | None = None):
    """The MQTT publisher of `cfg.mqtt` (snapshots from the media directory when media is on)."""
    from engine.media.store import MediaStore
    from engine.mqtt.publisher import MqttPublisher

    return MqttPublisher(client, keys, cfg.mqtt, stop, MediaStore(cfg.media_dir()) if cfg.media.enabled else None,
                         finish=finish)


def start_mqtt(cfg: ServiceConfig, client: redis.Redis, keys: Keys, stop: threading.Event, finish: threading.Event,
               board: StatusBoard | None = None) -> Keeper:
    """`up`'s MQTT publisher in a thread, restarted if it dies (a fresh one resumes from its cursor). `finish`:
    publish what the feed holds (the engine's last ends), then stop."""
    return Keeper("mqtt", lambda: build_mqtt(cfg, client, keys, stop, finish).run(), stop, board).start()


def load_engine_model(cfg: ServiceConfig):
    """The model (on `engine.device` in `engine.dtype`) and its backend; CheckpointError names what is wrong with the
    model directory, ServiceError a device or dtype that cannot be used here."""
    import torch

    from engine.model.checkpoint import load_model
    from engine.model.placement import PlacementError, resolve_placement
    from engine.serving.runtime import build_backend
    from export.onnx_export import export_onnx

    if cfg.engine.threads:
        torch.set_num_threads(cfg.engine.threads)
    try:
        placement = resolve_placement(cfg.engine.device, cfg.engine.dtype)
    except PlacementError as exc:
        raise ServiceError(f"engine.device/engine.dtype: {exc}") from None
    model = load_model(cfg.engine.model, placement=placement)  # built where it runs
    log.info("model %s on %s", model.config.name, placement)
    cache = Path(cfg.data_dir or default_data_dir()) / "onnx"
    return model, build_backend(cfg.engine.backend, model, cfg.engine.onnx_dir, cfg.engine.engine_dir,
                                model_dir=cfg.engine.model, cache_dir=str(cache), threads=cfg.engine.threads,
                                export=export_onnx)  # graphs not exported yet are made here, once per checkpoint


def model_windows(cfg: ServiceConfig) -> WindowSettings:
    """The window settings ingest runs with: the model's input size and resize filter filled in (from the model
    directory's config and its base's preprocessor_config.json; no weights read). `windows.input_size` /
    `input_resample` (and a configured camera's own) may only repeat the model's: a mismatch is a ServiceError
    naming both, so ingest never stores frames the model was not trained on."""
    from engine.model.preprocess import PreprocessorError, preprocessor_for_model_dir

    try:
        pre = preprocessor_for_model_dir(cfg.engine.model)
    except PreprocessorError as exc:
        raise ServiceError(f"engine.model: {exc}") from None
    model = {"input_size": pre.size, "input_resample": pre.resample.value}
    sections = [("windows", cfg.windows)] + [(f"cameras[{c.id}].windows", c.windows) for c in cfg.cameras if c.windows]
    for where, windows in sections:
        for key, want in model.items():
            given = getattr(windows, key)
            if given is not None and given != want:
                raise ServiceError(f"{where}.{key} is {given!r} but the model ({cfg.engine.model}) reads {want!r}: "
                                   f"remove {where}.{key} (the model decides) or use another model")
    return cfg.windows.model_copy(update=model)


def build_engine(cfg: ServiceConfig, client: redis.Redis, keys: Keys, stop: threading.Event,
                 on_event: Callable[[GroundingEvent], None] | None = None, consumer: str | None = None,
                 loaded=None) -> EngineWorker:
    model, backend = loaded or load_engine_model(cfg)
    grounder = WindowGrounder(model, backend, keys, cfg.engine.cache_frames)
    return EngineWorker(client, keys, grounder, cfg.engine, stop, consumer=consumer, model_name=model.config.name,
                        on_event=on_event, frame_ttl_s=cfg.windows.frame_ttl_seconds)


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%H:%M:%S.%f")[:-5]


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-5]


def format_event(e: GroundingEvent, previous: GroundingEvent | None = None) -> str:
    """One readable line: the event's time (its span's end on the capture clock, UTC; not when it was printed),
    type, camera, query, span, score, first box, end reason. An UPDATE with the event's `previous` line says what
    changed instead (an update can move the span's end by less than the tenth of a second a clock shows)."""
    head = f"{_when(e.end_ts)} {e.type.value.upper():<6} camera={e.camera_id} query={e.query_id} \"{e.query_text}\" "
    if e.type is EventType.UPDATE and previous is not None:
        return head + _changes(previous, e)
    box = " first box=[" + ", ".join(f"{v:.0f}" for v in e.boxes[0].xyxy) + "]" if e.boxes else ""
    reason = f" reason={e.reason.value}" if e.reason is not None else ""
    return (head + f"span={_clock(e.start_ts)}-{_clock(e.end_ts)} ({e.end_ts - e.start_ts:.1f} s) "
            f"score={e.score:.2f}{box}{reason}")


def _changes(prev: GroundingEvent, e: GroundingEvent) -> str:
    """What an update changed: the span's ends, the score, the boxes (kept per frame, so the count only grows)."""
    out = []
    if e.start_ts != prev.start_ts:
        out.append(f"span start {e.start_ts - prev.start_ts:+.2f} s -> {_clock(e.start_ts)}")
    if e.end_ts != prev.end_ts:
        out.append(f"span end {e.end_ts - prev.end_ts:+.2f} s -> {_clock(e.end_ts)}")
    if out:
        out[-1] += f" ({e.end_ts - e.start_ts:.1f} s)"
    if round(e.score, 2) != round(prev.score, 2):
        out.append(f"score {prev.score:.2f} -> {e.score:.2f}")
    added = len(e.boxes) - len(prev.boxes)
    if added:
        out.append(f"{added:+d} box{'' if abs(added) == 1 else 'es'} ({len(e.boxes)})")
    elif e.boxes != prev.boxes:
        out.append("boxes moved")
    return ", ".join(out) or f"score {e.score:.2f} (changed below the shown precision)"


class EventLines:
    """`format_event` for a stream of events: remembers each open event's last version, so an UPDATE line says what
    changed since the line before it."""

    def __init__(self) -> None:
        self.last: dict[str, GroundingEvent] = {}

    def __call__(self, e: GroundingEvent) -> str:
        previous = self.last.pop(e.event_id, None)
        if e.type is not EventType.END:
            self.last[e.event_id] = e
        return format_event(e, previous)


def up_engine_threads(cfg: ServiceConfig, cores: int | None = None) -> int:
    """The engine's thread budget under `up` on this machine: `engine.threads`, else all cores but one (ingest
    decodes on the one left; a camera's decoder threads are ingest's own choice, stream/ingest.py)."""
    cores = cores or os.cpu_count() or 1
    return cfg.engine.threads or max(1, cores - 1)


def stop_on_signals(stop: threading.Event) -> dict:
    """SIGINT and SIGTERM set `stop`; returns the handlers they had, to put back."""
    return {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}


def ingest_role(control, cfg: ServiceConfig, url: str, cameras: list[CameraSettings], registry: bool = True) -> None:
    """`up`'s ingest process: the cameras -> windows, until stopped (its cameras are then marked stopped).
    With `registry`, the cameras live in Redis (seeded from these): the API and `spacevllm cameras` add and remove
    them at run time."""
    client = connect(url, cluster=cfg.redis.cluster)
    keys = cfg.redis.keys()
    IngestService(client, keys, cameras, model_windows(cfg), cfg.ingest, stop=control.stop,
                  registry=CameraRegistry(client, keys) if registry else None).run(install_signals=False)


def engine_role(control, cfg: ServiceConfig, url: str, echo: Callable[[str], None]) -> None:
    """`up`'s engine process: windows -> events until stopped; on `finish`, work off what is waiting (up to 10 s),
    end the stopped cameras' events, and stop."""
    cfg = cfg.model_copy(update={"engine": cfg.engine.model_copy(update={"threads": control.threads})})
    loaded = load_engine_model(cfg)
    client = connect(url, cluster=cfg.redis.cluster)
    lines = EventLines()
    engine = build_engine(cfg, client, cfg.redis.keys(), control.stop, on_event=lambda e: echo(lines(e)), loaded=loaded)
    threading.Thread(target=lambda: control.finish.wait() and engine.finish(timeout_s=10.0), daemon=True).start()
    engine.run()


def _for_child(echo: Callable[[str], None]) -> Callable[[str], None]:
    """`echo` if it can cross into the engine process (a module-level function such as click.echo), else click.echo."""
    import pickle

    import click

    try:
        pickle.dumps(echo)
        return echo
    except Exception:  # a lambda or closure: the engine process prints its events itself
        return click.echo


def _up_queries(cfg: ServiceConfig) -> list[dict]:
    """The config's standing queries, or the demo's when it has none."""
    return (cfg.queries and [q.model_dump(exclude_none=True) for q in cfg.queries]) or DEMO_QUERIES


def _announce_redis(echo: Callable[[str], None], url: str, server: EmbeddedRedis | None, keys: Keys) -> None:
    """Where Redis is, and two ways to watch the events there."""
    where = f" (data in {server.data_dir})" if server else ""
    echo(f"Redis: {redact_url(url)}{where}")
    events = keys.events(keys.shard_of(DEFAULT_CAMERA_ID))
    if server is not None and server.password:  # the password is read from its file, never printed
        echo(f"  events: {server.cli_line(redis_cli_path())} XREAD BLOCK 0 STREAMS {events} '$'")
        echo(f"      or: REDIS_URL=\"redis://{server.username}:$(cat {server.password_file})@127.0.0.1:{server.port}/0\" "
             "spacevllm events tail")
    else:
        echo(f"  events: redis-cli -u {redact_url(url)} XREAD BLOCK 0 STREAMS {events} '$'"
             f"   or: spacevllm events tail --redis-url {redact_url(url)}")


def _supervise(roles: Supervisor, board: StatusBoard, shutdown: threading.Event, max_seconds: float | None) -> None:
    """Until `shutdown` is set or `max_seconds` pass: restart a role process that dies (the supervisor logs it and
    records it on the board, which /readyz reads), and keep the board's records fresh."""
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    refreshed = time.monotonic()
    while not shutdown.wait(0.2):
        roles.watch()
        if time.monotonic() - refreshed >= 10.0:
            board.publish()
            refreshed = time.monotonic()
        if deadline is not None and time.monotonic() >= deadline:
            return


def run_up(cfg: ServiceConfig, echo: Callable[[str], None], max_seconds: float | None = None,
           shutdown: threading.Event | None = None) -> None:
    """Embedded Redis (unless configured), the demo camera (+ configured cameras), ingest, one engine
    worker, the standing queries; events printed live until Ctrl-C / SIGTERM.

    Ingest and the engine run as separate processes (engine/app/supervisor.py), each with its own thread budget
    (`up_engine_threads`); the API and the media worker, when enabled, run in this process. Start order: the
    model first (a bad model fails before anything is started; the ONNX export is cached then), then Redis, the
    API and media, then ingest and the engine. Stop order: the API and media, then ingest (its cameras are
    marked stopped), then the engine (which ends their open events with `camera_stopped`), then the embedded
    Redis. Every exit path stops what was started."""
    private_state(cfg.data_dir)
    load_engine_model(cfg)  # CheckpointError: nothing started yet; the engine process loads its own copy
    model_windows(cfg)  # ServiceError: windows.input_size disagrees with the model; nothing started yet
    shutdown = shutdown or threading.Event()  # set by SIGINT/SIGTERM, or by the caller (tests run `up` in a thread)
    previous = stop_on_signals(shutdown) if threading.current_thread() is threading.main_thread() else {}
    server = api_server = media = mqtt = None
    media_stop, mqtt_stop, mqtt_finish = threading.Event(), threading.Event(), threading.Event()
    roles = Supervisor()
    try:
        client, server, url = open_redis(cfg)
        keys = cfg.redis.keys()
        board = roles.board = StatusBoard(client, keys, f"up-{socket.gethostname()}-{os.getpid()}")
        _announce_redis(echo, url, server, keys)
        cameras = list(cfg.cameras) or [DEMO_CAMERA]
        seed_queries(client, keys, _up_queries(cfg), echo)
        engine_threads = up_engine_threads(cfg)
        echo(f"cameras: {', '.join(c.id + '=' + redact_url(c.url) for c in cameras)}; model: {cfg.engine.model} "
             f"({resolve_backend(cfg.engine.backend)}, {engine_threads} thread{'' if engine_threads == 1 else 's'}); Ctrl-C stops")
        api_server = start_api(cfg, client, keys, threading.Event(), echo, board) if cfg.api.enabled else None
        media = start_media(cfg, client, keys, media_stop, board) if cfg.media.enabled else None
        mqtt = start_mqtt(cfg, client, keys, mqtt_stop, mqtt_finish, board) if cfg.mqtt.url else None
        roles.start("engine", engine_role, (cfg, url, _for_child(echo)), threads=engine_threads)
        roles.start("ingest", ingest_role, (cfg, url, cameras))
        _supervise(roles, board, shutdown, max_seconds)
    finally:
        if api_server is not None:
            api_server.close()
        media_stop.set()
        if media is not None:
            media.join(timeout=10)
        roles.stop("ingest", timeout_s=15.0)
        # after ingest: its cameras are stopped; the engine finishes their windows and ends their events
        if not roles.finish("engine", timeout_s=30.0):
            roles.stop("engine", timeout_s=5.0)
        roles.close()
        if mqtt is not None:  # after the engine: its last ends (states OFF) are published
            mqtt_finish.set()
            mqtt.join(timeout=15)
        mqtt_stop.set()
        if server is not None:
            server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        echo("stopped")
