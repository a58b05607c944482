"""The Redis window store: frames stored once (encoded bytes with a TTL), windows as stream entries
that reference them. The client is passed in; write methods take an optional pipeline."""
from __future__ import annotations

import logging

import redis

from stream.keys import Keys
from stream.types import Window

log = logging.getLogger(__name__)


class WindowStore:
    def __init__(self, client: redis.Redis, keys: Keys, frame_ttl_s: float = 60.0, windows_maxlen: int = 10_000) -> None:
        if client is None:
            raise TypeError("WindowStore needs a Redis client")
        self.client = client
        self.keys = keys
        self.frame_ttl_ms = int(frame_ttl_s * 1000)
        self.windows_maxlen = windows_maxlen

    def put_frame(self, camera_id: str, ts_ms: int, data: bytes, pipeline=None) -> None:
        (pipeline or self.client).set(self.keys.frame(camera_id, ts_ms), data, px=self.frame_ttl_ms)

    def add_window(self, window: Window, pipeline=None) -> None:
        (pipeline or self.client).xadd(self.keys.windows_for(window.camera_id), window.to_fields(), maxlen=self.windows_maxlen,
                                       approximate=True)

    def load_frames(self, window: Window) -> list[bytes | None]:
        """The window's encoded frames in order; None where a frame has expired."""
        keys = [self.keys.frame(window.camera_id, ts) for ts in window.frames_ms]
        return self.client.mget(keys) if keys else []  # one slot: the camera's tag
