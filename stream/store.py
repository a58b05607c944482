"""The Redis window store: frames stored once (encoded bytes with a TTL), windows as stream entries
that reference them. The client is passed in; write methods take an optional pipeline."""
from __future__ import annotations

import logging

import redis

from stream.keys import Keys
from stream.types import Window
from stream.role import require_client

log = logging.getLogger(__name__)


class WindowStore:
    def __init__(self, client: redis.Redis, keys: Keys, frame_ttl_s: float = 60.0, windows_maxlen: int = 10_000) -> None:
        self.client = require_client(client, "WindowStore")
        self.keys = keys
        self.frame_ttl_ms = int(frame_ttl_s * 1000)
        self.windows_maxlen = windows_maxlen

    def put_frame(self, camera_id: str, ts_ms: int, data: bytes, pipeline=None) -> None:
        (pipeline or self.client).set(self.keys.frame(camera_id, ts_ms), data, px=self.frame_ttl_ms)

    def put_preview(self, camera_id: str, ts_ms: int, data: bytes, pipeline=None) -> None:
        """The preview JPEG of a sampled frame, with the frame's TTL, and its timestamp in the camera's preview index
        (trimmed to the same TTL). All keys are in the camera's slot."""
        p = pipeline or self.client.pipeline(transaction=False)
        index = self.keys.preview_index(camera_id)
        p.set(self.keys.preview(camera_id, ts_ms), data, px=self.frame_ttl_ms)
        p.zadd(index, {str(ts_ms): ts_ms})
        p.zremrangebyscore(index, "-inf", f"({ts_ms - self.frame_ttl_ms}")
        p.pexpire(index, self.frame_ttl_ms)
        if pipeline is None:
            p.execute()

    def add_window(self, window: Window, pipeline=None) -> None:
        (pipeline or self.client).xadd(self.keys.windows_for(window.camera_id), window.to_fields(), maxlen=self.windows_maxlen,
                                       approximate=True)

    def load_frames(self, window: Window) -> list[bytes | None]:
        """The window's encoded frames in order; None where a frame has expired."""
        keys = [self.keys.frame(window.camera_id, ts) for ts in window.frames_ms]
        return self.client.mget(keys) if keys else []  # one slot: the camera's tag


def preview_times(client: redis.Redis, keys: Keys, camera_id: str, start_ms: int | None = None,
                  end_ms: int | None = None, latest: bool = False) -> list[int]:
    """Timestamps (ms) of a camera's stored previews in [start_ms, end_ms], oldest first; with `latest`, only the
    newest one. Some may have expired since they were indexed: a GET of the preview then returns None."""
    index = keys.preview_index(camera_id)
    if latest:
        raw = client.zrevrange(index, 0, 0)
    else:
        raw = client.zrangebyscore(index, "-inf" if start_ms is None else start_ms, "+inf" if end_ms is None else end_ms)
    return [int(r) for r in raw]
