"""Service settings: the one module every role loads its configuration through (`load_service_config`).

One YAML file, validated by pydantic with `extra="forbid"` (a typo fails at load with the key's path).
The environment is read at load time only: REDIS_URL (a secret), REDIS_CLUSTER and SVL_ENGINE_BACKEND
override their settings. Ingest's own sections (redis, windows, ingest, cameras) are declared in
`stream/config.py`, since stream imports nothing of ours; they are re-exported here, so the other roles
import every section from this module."""
from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator

from engine.contracts.errors import error_lines
from engine.contracts.queries import QuerySpec
from stream.config import CameraSettings, IngestSettings, RedisSettings, Strict, WindowSettings

__all__ = ["ApiSettings", "Backend", "CameraSettings", "ConfigError", "EngineSettings", "IngestSettings", "MediaSettings",
           "MqttSettings", "RedisSettings", "ServiceConfig", "Strict", "WindowSettings", "default_data_dir", "load_service_config"]

# auto: onnxruntime when installed (faster on a CPU, bench/backends.py), else torch
Backend = Literal["auto", "torch", "onnxruntime", "tensorrt"]

DEFAULT_MODEL_DIR = str(Path(__file__).resolve().parents[2] / "models" / "tiny")


def default_data_dir() -> str:
    """Where the service keeps its state (the embedded Redis's AOF, generated secrets): $SVL_DATA_DIR, else
    $XDG_DATA_HOME/spacevllm, else ~/.local/share/spacevllm."""
    if os.environ.get("SVL_DATA_DIR"):
        return os.environ["SVL_DATA_DIR"]
    return str(Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "spacevllm")


class EngineSettings(Strict):
    model: str = DEFAULT_MODEL_DIR
    backend: Backend = "auto"
    onnx_dir: str | None = None  # onnxruntime: exported graphs (None: exported once per checkpoint into <data_dir>/onnx)
    engine_dir: str | None = None  # tensorrt: serialized engines + manifest
    group: str = "engines"
    claim_idle_ms: int = Field(30_000, ge=100, le=86_400_000)  # entries pending longer than this are claimed from dead workers
    block_ms: int = Field(1000, ge=10, le=60_000)
    cache_frames: int = Field(2048, ge=16, le=1_000_000)
    max_deliveries: int = Field(3, ge=1, le=100)  # a window that fails this many times goes to the dead letters
    retry_backoff_s: float = Field(1.0, gt=0, le=3600)  # first retry of a failed window (doubles, jittered)
    events_retention_s: float = Field(7 * 86400, gt=0, le=365 * 86400)  # events (and open-event state) older than this are trimmed
    events_maxlen: int = Field(5000, ge=10, le=10_000_000)  # and at most this many entries per shard's event stream
    heartbeat_s: float = Field(2.0, gt=0, le=60)
    threads: int = Field(0, ge=0, le=1024)  # torch threads; 0: default
    batch_windows: int = Field(8, ge=1, le=256)  # windows read together are grounded as one batch (up to this many)
    # live windows whose last frame is older than this are skipped (0: never); see engine/serving/worker.py "Admission"
    max_window_lag_s: float = Field(10.0, ge=0, le=86400)
    # standing queries grounded per camera, oldest first (the rest are logged once and never grounded): each query
    # adds its cost to every window of the camera (1,000 on one camera measured ~10 s per window and 2 GB)
    max_queries_per_camera: int = Field(64, ge=1, le=4096)
    # where the model runs (engine/model/placement.py): auto = the first CUDA device when torch sees one, else the CPU.
    # The model, the frame-feature cache, the KV cache and every inference tensor live there, in `dtype`.
    device: str = "auto"
    # float32 | bfloat16 | float16 (float16 on CUDA only: refused on a CPU). The tiny model on cpu + float32 is as shipped
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.match(r"^(auto|cpu|cuda(:\d+)?)$", v):  # engine.model.placement.DEVICE_PATTERN (no torch import here)
            raise ValueError(f"must be auto, cpu, cuda or cuda:N (e.g. cuda:1), got {v!r}")
        return v


class ApiSettings(Strict):
    """The HTTP API (`spacevllm serve`; `up` starts it too). Tokens: `tokens_file` (hashed, see api/auth.py) and
    the SVL_API_TOKEN environment variable (an admin token)."""

    host: str = "127.0.0.1"  # anything but loopback refuses to start without tokens
    port: int = Field(8080, ge=0, le=65535)  # 0: a free port (tests)
    enabled: bool = True  # `up` starts the API
    public_read: bool = False  # reads (GET, SSE, /metrics) without a token
    tokens_file: str | None = None  # None: <data_dir>/api-tokens.json when it exists
    sse_heartbeat_s: float = Field(15.0, gt=0, le=300)
    max_streams: int = Field(64, ge=1, le=4096)  # concurrent SSE clients (each holds one blocking Redis read)
    # request bodies beyond this are refused with 413 before anything reads them (Content-Length at once, chunked
    # bodies as they pass it): a query or a camera is a few KB
    max_body_bytes: int = Field(1024**2, ge=1024, le=1024**3)
    max_queries: int = Field(256, ge=1, le=100_000)  # standing queries in all (POST/PUT beyond: 422)
    # standing queries that apply to one camera ('*' queries count for every camera); the engine also caps what it
    # grounds per camera (engine.max_queries_per_camera)
    max_queries_per_camera: int = Field(64, ge=1, le=4096)
    webhooks: bool = True  # this API process delivers webhooks (one at a time per deployment: a Redis lock)
    webhook_timeout_s: float = Field(5.0, gt=0, le=300)
    webhook_max_attempts: int = Field(5, ge=1, le=20)
    webhook_backoff_s: float = Field(0.5, gt=0, le=300)  # doubled per attempt, capped at 30 s
    webhook_queue_max: int = Field(10_000, ge=1, le=10_000_000)  # queued deliveries per sink; beyond, the oldest are dropped
    webhook_workers: int = Field(8, ge=1, le=64)  # sinks delivered to at once (each holds a connection)
    # host names (exact) or networks (CIDR) sinks may connect to; empty: any host the deny list lets through
    # (link-local, cloud metadata, multicast, this service's own ports on loopback are always refused)
    webhook_allow_hosts: list[str] = []

    @field_validator("webhook_allow_hosts")
    @classmethod
    def _allow_hosts(cls, v: list[str]) -> list[str]:
        out = []
        for h in v:
            try:
                out.append(str(ipaddress.ip_network(h, strict=False)))
            except ValueError:
                if not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?", h):
                    raise ValueError(f"{h!r} is neither a host name nor a network (CIDR)") from None
                out.append(h.lower().rstrip("."))
        return out


class MediaSettings(Strict):
    """Event media (the media worker, `spacevllm media`; `up` starts it too): a snapshot per event and a clip when it
    ends, rendered from the preview frames (windows.preview_size) into files under `dir`."""

    enabled: bool = True  # `up` starts the media worker
    dir: str | None = None  # None: <data_dir>/media (the API serves from the same directory)
    pre_s: float = Field(2.0, ge=0, le=60)  # clip padding before the event's start
    post_s: float = Field(2.0, ge=0, le=60)  # and after its end (the clip waits until those frames exist)
    retention_s: float = Field(7 * 86400, gt=0, le=365 * 86400)  # media older than this is deleted
    max_bytes: int = Field(2 * 1024**3, ge=1024**2, le=1024**5)  # and the oldest go first beyond this total size
    snapshot_quality: int = Field(85, ge=1, le=95)
    clip_crf: int = Field(28, ge=0, le=51)  # libx264 constant rate factor (higher: smaller files)
    block_ms: int = Field(1000, ge=10, le=60_000)
    heartbeat_s: float = Field(2.0, gt=0, le=60)


MQTT_URL = re.compile(r"^mqtts?://[^/?#]+/?$")
TOPIC_PREFIX = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")  # no wildcards, no empty levels: a literal topic head


class MqttSettings(Strict):
    """The MQTT publisher (`spacevllm mqtt`; `up` starts it when `url` is set): events, per (camera, query) state and
    snapshot, availability and Home Assistant discovery, QoS 1 (engine/mqtt/). Credentials: in the URL, or
    SVL_MQTT_USERNAME / SVL_MQTT_PASSWORD; SVL_MQTT_URL overrides `url`. The URL is only ever shown redacted."""

    url: str | None = None  # mqtt://[user[:password]@]host[:port] (1883) or mqtts://... (8883, TLS); None: no publisher
    topic_prefix: str = "spacevllm"  # <prefix>/events, <prefix>/<camera>/<query>/state, <prefix>/available
    discovery: bool = True  # Home Assistant discovery configs under `discovery_prefix`
    discovery_prefix: str = "homeassistant"
    device_class: Literal["motion"] | None = "motion"  # the binary sensors' device class (None: none)
    username: str | None = None  # overrides the URL's user
    password: SecretStr | None = None  # overrides the URL's password (set it through SVL_MQTT_PASSWORD, not the YAML)
    ca_file: str | None = None  # mqtts: a CA bundle (None: the system's)
    client_id: str | None = None  # None: spacevllm-<host>-<pid>
    keepalive_s: int = Field(30, ge=5, le=3600)  # also how soon the broker notices a dead publisher and sends `offline`
    ack_timeout_s: float = Field(10.0, gt=0, le=300)  # PUBACKs not back within this: the broker is treated as gone
    snapshot_wait_s: float = Field(10.0, ge=0, le=300)  # how long after an event its snapshot is looked for
    discovery_every_s: float = Field(5.0, gt=0, le=3600)  # queries and cameras re-read this often for discovery
    block_ms: int = Field(500, ge=10)
    heartbeat_s: float = Field(2.0, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        if not MQTT_URL.match(v):
            from stream.urls import redact_url

            raise ValueError(f"must be mqtt://[user[:password]@]host[:port] or mqtts://..., got {redact_url(v)!r}")
        return v

    @field_validator("topic_prefix", "discovery_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not TOPIC_PREFIX.match(v):
            raise ValueError(f"topic levels of A-Z a-z 0-9 _ - separated by '/', got {v!r}")
        return v


class ServiceConfig(Strict):
    data_dir: str | None = None  # None: $SVL_DATA_DIR, else ~/.local/share/spacevllm (see default_data_dir)
    redis: RedisSettings = RedisSettings()
    windows: WindowSettings = WindowSettings()
    ingest: IngestSettings = IngestSettings()
    cameras: list[CameraSettings] = []
    engine: EngineSettings = EngineSettings()
    queries: list[QuerySpec] = []  # the one query schema (engine/contracts/queries.py), seeded by up, engine and ingest
    api: ApiSettings = ApiSettings()
    media: MediaSettings = MediaSettings()
    mqtt: MqttSettings = MqttSettings()

    def media_dir(self) -> Path:
        return Path(self.media.dir) if self.media.dir else Path(self.data_dir or default_data_dir()) / "media"


class ConfigError(ValueError):
    pass


def _mqtt_environment(cfg: ServiceConfig) -> ServiceConfig:
    """SVL_MQTT_URL, SVL_MQTT_USERNAME and SVL_MQTT_PASSWORD (secrets stay out of the YAML) over the `mqtt` section."""
    env = {"url": os.environ.get("SVL_MQTT_URL"), "username": os.environ.get("SVL_MQTT_USERNAME"),
           "password": os.environ.get("SVL_MQTT_PASSWORD")}
    env = {k: v for k, v in env.items() if v}
    if not env:
        return cfg
    try:
        mqtt = MqttSettings.model_validate({**cfg.mqtt.model_dump(), **env})
    except ValidationError as exc:
        lines = error_lines([{**e, "loc": ("mqtt", *e["loc"])} for e in exc.errors()], whole="mqtt")
        raise ConfigError("SVL_MQTT_* environment: invalid MQTT settings\n  " + "\n  ".join(lines)) from None
    return cfg.model_copy(update={"mqtt": mqtt})


def load_service_config(path: str | Path | None) -> ServiceConfig:
    """Read and validate a service config; REDIS_URL in the environment overrides `redis.url`."""
    data = {}
    if path is not None:
        p = Path(path)
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{p}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: the top level must be a mapping")
    try:
        cfg = ServiceConfig.model_validate(data)
    except ValidationError as exc:
        lines = error_lines(exc.errors(), whole="config")
        raise ConfigError(f"{path or 'defaults'}: invalid config\n  " + "\n  ".join(lines)) from None
    overrides = {}
    if os.environ.get("REDIS_URL"):
        overrides["url"] = os.environ["REDIS_URL"]
    cluster = os.environ.get("REDIS_CLUSTER")
    if cluster is not None and cluster != "":
        if cluster not in ("0", "1", "true", "false"):
            raise ConfigError(f"REDIS_CLUSTER must be 1 or 0, got {cluster!r}")
        overrides["cluster"] = cluster in ("1", "true")
    if overrides:
        cfg = cfg.model_copy(update={"redis": cfg.redis.model_copy(update=overrides)})
    backend = os.environ.get("SVL_ENGINE_BACKEND")
    if backend:
        names = get_args(Backend)
        if backend not in names:
            raise ConfigError(f"SVL_ENGINE_BACKEND must be {', '.join(names[:-1])} or {names[-1]}, got {backend!r}")
        cfg = cfg.model_copy(update={"engine": cfg.engine.model_copy(update={"backend": backend})})
    cfg = _mqtt_environment(cfg)
    if cfg.engine.device == "cpu" and cfg.engine.dtype == "float16":
        raise ConfigError(f"{path or 'defaults'}: engine.dtype float16 needs a CUDA device (engine.device is cpu): "
                          "use bfloat16 or float32 on a CPU")
    if cfg.redis.cluster and not cfg.redis.url:
        raise ConfigError(f"{path or 'defaults'}: redis.cluster needs redis.url (a node of the Cluster); the embedded Redis is standalone")
    if cfg.data_dir is None:
        cfg = cfg.model_copy(update={"data_dir": default_data_dir()})
    ids = [c.id for c in cfg.cameras]
    if len(ids) != len(set(ids)):
        raise ConfigError(f"{path}: camera ids must be unique, got {ids}")
    return cfg
