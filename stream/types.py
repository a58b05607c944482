"""Frozen records that cross thread and process boundaries: frames and windows."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from stream.redis_link import text_fields


@dataclass(frozen=True)
class VideoFrame:
    camera_id: str
    ts: float  # capture clock, Unix seconds
    image: np.ndarray  # (H, W, 3) uint8 RGB, original size
    index: int  # decoded frame counter


@dataclass(frozen=True)
class Window:
    """A window references frames by timestamp (their keys come from `Keys.frame`); never copies them."""

    camera_id: str
    start_ms: int
    end_ms: int
    frames_ms: tuple[int, ...]
    frame_wh: tuple[int, int]  # the camera's pixel size, for mapping boxes back
    input_size: int  # the stored frames' side (model input)
    live: bool = False  # from a live source (capture clock ~ wall clock): the engine may skip it when it falls behind


    @property
    def window_id(self) -> str:
        return f"{self.camera_id}:{self.start_ms}"

    def to_fields(self) -> dict[str, str]:
        return {
            "camera": self.camera_id, "start_ms": str(self.start_ms), "end_ms": str(self.end_ms),
            "frames": json.dumps(list(self.frames_ms)), "frame_w": str(self.frame_wh[0]),
            "frame_h": str(self.frame_wh[1]), "input_size": str(self.input_size), "live": "1" if self.live else "0",
        }

    @classmethod
    def from_fields(cls, fields: dict) -> "Window":
        f = text_fields(fields)
        try:
            return cls(f["camera"], int(f["start_ms"]), int(f["end_ms"]), tuple(int(x) for x in json.loads(f["frames"])),
                       (int(f["frame_w"]), int(f["frame_h"])), int(f["input_size"]), f.get("live", "0") == "1")
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"malformed window entry {f!r}: {exc}") from exc
