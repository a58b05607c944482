"""Service settings: one YAML file, validated by pydantic with `extra="forbid"` (a typo fails at
load with the key's path). Secrets (REDIS_URL) come from the environment at load time only."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError

from stream.config import CameraSettings, IngestSettings, RedisSettings, Strict, WindowSettings

DEFAULT_MODEL_DIR = str(Path(__file__).resolve().parent.parent / "models" / "tiny")


class EngineSettings(Strict):
    model: str = DEFAULT_MODEL_DIR
    backend: Literal["torch", "onnxruntime", "tensorrt"] = "torch"
    onnx_dir: str | None = None  # onnxruntime: exported graphs (exported on the fly when None)
    engine_dir: str | None = None  # tensorrt: serialized engines + manifest
    group: str = "engines"
    claim_idle_ms: int = Field(30_000, ge=100)  # entries pending longer than this are claimed from dead workers
    block_ms: int = Field(1000, ge=10)
    cache_frames: int = Field(2048, ge=16)
    events_retention_s: float = Field(7 * 86400, gt=0)
    heartbeat_s: float = Field(2.0, gt=0)
    threads: int = Field(0, ge=0)  # torch threads; 0: default


class QuerySpec(Strict):
    id: str | None = None
    text: str
    cameras: list[str] = ["*"]
    threshold: float | None = None  # None: the model's calibrated default
    min_duration_s: float = 0.0
    cooldown_s: float = 4.0


class ServiceConfig(Strict):
    redis: RedisSettings = RedisSettings()
    windows: WindowSettings = WindowSettings()
    ingest: IngestSettings = IngestSettings()
    cameras: list[CameraSettings] = []
    engine: EngineSettings = EngineSettings()
    queries: list[QuerySpec] = []


class ConfigError(ValueError):
    pass


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
        lines = [f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{path or 'defaults'}: invalid config\n  " + "\n  ".join(lines)) from None
    url = os.environ.get("REDIS_URL")
    if url:
        cfg = cfg.model_copy(update={"redis": cfg.redis.model_copy(update={"url": url})})
    ids = [c.id for c in cfg.cameras]
    if len(ids) != len(set(ids)):
        raise ConfigError(f"{path}: camera ids must be unique, got {ids}")
    return cfg
