"""Grounding one window for every standing query of its camera.

Per window: load frames, vision-encode only frames not seen before (a bounded per-worker
cache keyed by frame key), build the window prefix once, ground all queries against it,
map spans to capture-clock times and boxes to camera pixels.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from engine.boxes import cxcywh_to_xyxy, xyxy_norm_to_px
from engine.events import Box, Observation
from engine.queries import StandingQuery
from stream.imagecodec import decode_image
from stream.keys import Keys
from stream.types import Window

log = logging.getLogger(__name__)


class MissingFrames(Exception):
    """Some of a window's frames are not in Redis (expired, never stored, or evicted)."""


@dataclass
class GrounderStats:
    windows: int = 0
    frames_encoded: int = 0
    cache_hits: int = 0


class FeatureCache:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, torch.Tensor] = OrderedDict()

    def get(self, key: str) -> torch.Tensor | None:
        v = self._items.get(key)
        if v is not None:
            self._items.move_to_end(key)
        return v

    def put(self, key: str, value: torch.Tensor) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class WindowGrounder:
    def __init__(self, model, backend, keys: Keys, cache_frames: int = 2048) -> None:
        self.model = model
        self.backend = backend
        self.keys = keys
        self.cache = FeatureCache(cache_frames)
        self.stats = GrounderStats()

    def visual_tokens(self, window: Window, frames: list[bytes | None]) -> torch.Tensor:
        keys = [self.keys.frame(window.camera_id, ts) for ts in window.frames_ms]
        tokens = [self.cache.get(key) for key in keys]  # one lookup per frame
        missing = [k for k, t in enumerate(tokens) if t is None]
        if any(frames[k] is None for k in missing):
            gone = sum(frames[k] is None for k in missing)
            raise MissingFrames(f"window {window.window_id}: {gone} of {len(frames)} frames are missing")
        if missing:
            pixels = np.stack([decode_image(frames[k]) for k in missing])  # (M, S, S, 3)
            px = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
            size = self.model.config.vision.image_size
            if px.shape[-1] != size:
                px = torch.nn.functional.interpolate(px, size=(size, size), mode="area")
            for k, t in zip(missing, self.backend.encode_frames(px)):
                self.cache.put(keys[k], t)
                tokens[k] = t
            self.stats.frames_encoded += len(missing)
        self.stats.cache_hits += len(keys) - len(missing)
        return torch.stack(tokens)

    def ground(self, window: Window, frames: list[bytes | None], queries: list[StandingQuery]) -> list[Observation]:
        self.stats.windows += 1
        if not queries:
            return []
        max_f = self.model.config.max_frames
        frames_ms = window.frames_ms[-max_f:]
        frames = frames[-max_f:]
        sub = Window(window.camera_id, window.start_ms, window.end_ms, frames_ms, window.frame_wh, window.input_size)
        vis = self.visual_tokens(sub, frames)
        rel = [(ts - window.start_ms) / 1000.0 for ts in frames_ms]
        prefix = self.model.encode_window(None, rel, visual_tokens=vis)
        results = self.model.ground(prefix, [q.text for q in queries], decoder=self.backend.decode)
        start_ts = window.start_ms / 1000.0
        out = []
        for q, g in zip(queries, results):
            matched = g.score >= (q.threshold if q.threshold is not None else self.model.config.default_threshold)
            boxes = ()
            span = None
            if matched:
                span = (start_ts + g.span_s[0], start_ts + g.span_s[1])
                xyxy = xyxy_norm_to_px(cxcywh_to_xyxy(np.asarray(g.boxes_cxcywh, dtype=np.float64)).clip(0, 1), window.frame_wh) \
                    if g.boxes_cxcywh else np.zeros((0, 4))
                boxes = tuple(Box(frames_ms[k] / 1000.0, tuple(float(v) for v in b)) for k, b in zip(g.frame_indices, xyxy))
            out.append(Observation(window.window_id, start_ts, window.end_ms / 1000.0, g.score, span, boxes, window.frame_wh))
        return out
