"""Ingest settings (pydantic, `extra="forbid"`: a typo fails at load with the key's path)."""
from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stream.keys import DEFAULT_SHARDS, Keys, check_id
from stream.urls import redact_url


class Strict(BaseModel):
    # a typo fails at load; inf and nan are refused everywhere (a setting of .inf has no meaning and broke arithmetic)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


MAX_URL_LENGTH = 2048


def check_camera_url(url: str) -> str:
    """A camera URL a source can open: a known scheme, a host where the scheme needs one, a decimal port in
    1-65535. The error message shows the URL redacted."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError("must be a non-empty URL")
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"is longer than {MAX_URL_LENGTH} characters")
    if any(ord(ch) < 32 or ch == "\x7f" for ch in url):
        raise ValueError("contains control characters")
    if url.startswith("/dev/video"):
        return url
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in CAMERA_SCHEMES:
        raise ValueError(f"{redact_url(url)!r}: use one of {', '.join(s + '://' for s in CAMERA_SCHEMES)} or /dev/videoN")
    if scheme in ("rtsp", "rtsps", "http", "https"):
        try:
            parts = urlsplit(redact_url(url))  # credentials may hold characters a URL parser stops at
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise ValueError(f"{redact_url(url)!r}: {exc}") from None
        if not host:
            raise ValueError(f"{redact_url(url)!r} names no host")
        netloc_port = parts.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
        if port == 0 or (netloc_port and not netloc_port.isdigit()):
            raise ValueError(f"{redact_url(url)!r}: the port must be a decimal number in 1-65535")
    return url


CAMERA_SCHEMES = ("rtsp", "rtsps", "http", "https", "file", "synthetic")


class RedisSettings(Strict):
    url: str | None = None  # None: start the embedded Redis; the REDIS_URL environment variable overrides
    cluster: bool = False  # the URL names a node of a Redis Cluster; REDIS_CLUSTER=1|0 overrides
    shards: int = Field(DEFAULT_SHARDS, ge=1, le=1024)  # window/event shards (stream/keys.py); one value per deployment
    data_dir: str | None = None  # embedded server's data directory (AOF); default: <data_dir>/redis of the service
    maxmemory: str = "1gb"  # embedded server's memory cap (policy volatile-ttl: frames, which carry TTLs, go first)
    prefix: str = "svl:"

    def keys(self) -> Keys:
        return Keys(self.prefix, self.shards)


class WindowSettings(Strict):
    sample_fps: float = Field(2.0, gt=0, le=30)
    window_seconds: float = Field(8.0, gt=0, le=120)
    stride_seconds: float = Field(2.0, gt=0, le=120)
    # the model's frame side and how frames are scaled to it. None (the default): the model's (its directory says:
    # engine/model/preprocess.py; the service fills these in before ingest starts). Set, they are checked against the
    # model and a mismatch is refused at start, naming both.
    input_size: int | None = Field(None, ge=16, le=1024)
    input_resample: Literal["area", "nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"] | None = None
    image_format: Literal["png", "jpeg"] = "png"
    frame_ttl_seconds: float = Field(60.0, gt=0, le=86400)  # must exceed the window span
    windows_maxlen: int = Field(10_000, ge=10, le=10_000_000)  # XADD MAXLEN ~
    preview_size: int = Field(640, ge=0, le=4096)  # preview JPEG's longest side (never upscaled); 0: no previews
    preview_quality: int = Field(80, ge=1, le=95)  # preview JPEG quality


class CameraSettings(Strict):
    id: str
    url: str
    transport: Literal["tcp", "udp"] = "tcp"  # RTSP
    loop: bool = False  # file:// only: play again at the end
    realtime: bool = True  # file:// only: pace frames at their timestamps
    open_timeout_s: float = Field(10.0, gt=0, le=300)
    read_timeout_s: float = Field(5.0, gt=0, le=300)
    backoff_initial_s: float = Field(0.5, gt=0, le=3600)
    backoff_max_s: float = Field(30.0, gt=0, le=3600)
    max_retries: int | None = Field(None, ge=0, le=1_000_000)  # None: reconnect forever
    # frames later than this behind real time are dropped; a live camera whose decoding falls max_lag_s / 2 behind
    # decodes key frames only until it is back within max_lag_s / 4 (stream/overload.py)
    max_lag_s: float = Field(1.0, gt=0, le=3600)
    windows: WindowSettings | None = None  # per-camera override

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return check_id(v, "camera id")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_camera_url(v)


class IngestSettings(Strict):
    heartbeat_s: float = Field(2.0, gt=0, le=60)
    # FFmpeg decoder threads per camera. 0: automatic (FFmpeg's default when there are fewer cameras than cores, else
    # 1: many cameras already fill the cores, and a decoder's threads would only wait on each other)
    decoder_threads: int = Field(0, ge=0, le=16)
    # nice levels the camera threads (decoding, their FFmpeg threads, image encoding) run below the process: under
    # contention the engine comes first (stream/priority.py). 10: a busy thread weighs 1/9 of a nice-0 one, so up to
    # 9 busy camera threads weigh less than one engine thread; when the engine is idle ingest still gets all the CPU.
    # 0: no change.
    nice: int = Field(10, ge=0, le=19)
    health_ttl_s: float = Field(300.0, gt=0, le=30 * 86400)  # a stopped camera's health expires after this
    # directories whose files may be played as cameras when added at run time (API, `spacevllm cameras add`, the
    # registry in Redis). Default: none. Cameras in the config file itself may name any file (the operator wrote it).
    file_roots: list[str] = []
