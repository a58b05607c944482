"""Grounding windows for every standing query of their cameras.

Per window: load frames, vision-encode only frames not seen before (a bounded per-worker
cache keyed by frame key), build the window prefix once, ground all queries against it,
map spans to capture-clock times and boxes to camera pixels.

`ground_many` does the same for several windows (of any cameras) as one batch: their new frames
through the vision encoder in one call, their prefixes through the LLM in one pass (windows with the
same frame count), and all their questions, answer steps and space-decoder pairs as one batch of
rows. A window's result does not depend on what it is batched with (equal to `ground` within float
rounding, tested); a window whose frames are gone fails alone.

Placement: frame pixels are built on the model's device in its dtype (`engine.device`, `engine.dtype`), the
feature cache holds the encoder's tokens there, and only scores, spans and boxes come back to the host (floats).
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from engine.model.boxes import cxcywh_to_xyxy, xyxy_norm_to_px
from engine.contracts.events import Box, Observation
from engine.model.match_head import colour_grid
from engine.model.placement import placement_of
from engine.model.preprocess import ImagePreprocessor, preprocessor_of
from engine.contracts.queries import StandingQuery
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
    """Frame key -> the encoder's tokens for that frame (G, D), kept where the model runs (a GPU's memory for a CUDA
    model: the capacity bounds it; 7B: 196 x 3584 x 2 bytes = 1.4 MB a frame in bf16)."""

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
    def __init__(self, model, backend, keys: Keys, cache_frames: int = 2048, skip_hopeless: bool = True,
                 preprocessor: ImagePreprocessor | None = None) -> None:
        self.model = model
        self.placement = placement_of(model)  # frame pixels and cached tokens live there
        self.preprocessor = preprocessor or preprocessor_of(model)
        self.skip_hopeless = skip_hopeless  # no space decoder for queries below their threshold whatever it says
        self.backend = backend
        self.keys = keys
        self.cache = FeatureCache(cache_frames)
        self.colours = FeatureCache(cache_frames)  # the same frames' colour grids (the match head reads them; 3 KB a frame)
        self.stats = GrounderStats()

    def visual_tokens(self, window: Window, frames: list[bytes | None]) -> tuple[torch.Tensor, torch.Tensor]:
        (tokens,) = self.visual_tokens_many([(window, frames)])
        if isinstance(tokens, MissingFrames):
            raise tokens
        return tokens

    def visual_tokens_many(self, items: list[tuple[Window, list[bytes | None]]]) -> list[tuple[torch.Tensor, torch.Tensor] | MissingFrames]:
        """Each window's frame tokens (F, G, D) and colour grids (F, C, 3), or MissingFrames for a window with a frame
        gone; the frames that no window has seen before are decoded and encoded in one batch (a frame shared by two
        windows once)."""
        keys = [[self.keys.frame(w.camera_id, ts) for ts in w.frames_ms] for w, _ in items]
        cached = [[(self.cache.get(key), self.colours.get(key)) for key in ks] for ks in keys]  # one lookup per frame
        tokens = [[t if c is not None else None for t, c in row] for row in cached]
        colours = [[c for _, c in row] for row in cached]
        out: list = [None] * len(items)
        todo: dict[str, bytes] = {}  # frame key -> encoded image, in first-seen order
        for i, ((window, frames), ks, ts) in enumerate(zip(items, keys, tokens)):
            missing = [k for k, t in enumerate(ts) if t is None]
            gone = sum(frames[k] is None for k in missing)
            if gone:
                out[i] = MissingFrames(f"window {window.window_id}: {gone} of {len(frames)} frames are missing")
                continue
            for k in missing:
                todo.setdefault(ks[k], frames[k])
            self.stats.cache_hits += len(ks) - len(missing)
        if todo:
            pixels = np.stack([decode_image(data) for data in todo.values()])  # (M, S, S, 3) as ingest stored them
            px = self.preprocessor.to_pixels(pixels, self.placement.device, self.placement.dtype)  # (M, 3, S, S)
            tokens_new = self.backend.encode_frames(px).to(self.placement.device, self.placement.dtype)  # no-op unless a backend answers elsewhere
            colours_new = colour_grid(px)
            encoded = {key: (t, c) for key, t, c in zip(todo, tokens_new, colours_new)}
            for key, (t, c) in encoded.items():
                self.cache.put(key, t)
                self.colours.put(key, c)
            self.stats.frames_encoded += len(encoded)
        for i, (ks, ts, cs) in enumerate(zip(keys, tokens, colours)):
            if out[i] is None:
                out[i] = (torch.stack([t if t is not None else encoded[k][0] for k, t in zip(ks, ts)]),
                          torch.stack([c if t is not None else encoded[k][1] for k, t, c in zip(ks, ts, cs)]))
        return out

    def _input(self, window: Window, frames: list[bytes | None]) -> tuple[Window, list[bytes | None], list[float]]:
        """The window cut to the model's last `max_frames` frames, its frames, their times relative to its start."""
        max_f = self.model.config.max_frames
        frames_ms = window.frames_ms[-max_f:]
        sub = Window(window.camera_id, window.start_ms, window.end_ms, frames_ms, window.frame_wh, window.input_size)
        return sub, frames[-max_f:], [(ts - window.start_ms) / 1000.0 for ts in frames_ms]

    def ground(self, window: Window, frames: list[bytes | None], queries: list[StandingQuery]) -> list[Observation]:
        """One window, one prefix, its queries (the reference `ground_many` is tested against)."""
        self.stats.windows += 1
        if not queries:
            return []
        sub, frames, rel = self._input(window, frames)
        vis, colours = self.visual_tokens(sub, frames)
        prefix = self.model.encode_window(None, rel, visual_tokens=vis, colours=colours)
        results = self.model.ground(prefix, [q.text for q in queries], decoder=self.backend.decode,
                                    min_scores=self._floors(queries))
        return self._observations(window, sub.frames_ms, queries, results)

    def ground_many(self, items: list[tuple[Window, list[bytes | None], list[StandingQuery]]]) -> list[list[Observation] | MissingFrames]:
        """Several windows as one batch; per window its observations, or MissingFrames (that window only)."""
        self.stats.windows += len(items)
        out: list = [[] for _ in items]
        live = [i for i, (_, _, queries) in enumerate(items) if queries]
        inputs = {i: self._input(items[i][0], items[i][1]) for i in live}
        vis = self.visual_tokens_many([(inputs[i][0], inputs[i][1]) for i in live])
        groups: dict[int, list[int]] = {}  # frame count -> windows: one prefix batch each (no padding in a prefix)
        tokens = {}
        for i, v in zip(live, vis):
            if isinstance(v, MissingFrames):
                out[i] = v
            else:
                tokens[i] = v
                groups.setdefault(v[0].shape[0], []).append(i)
        for members in groups.values():
            prefix = self.model.encode_window_batch([inputs[i][2] for i in members], torch.stack([tokens[i][0] for i in members]),
                                                    torch.stack([tokens[i][1] for i in members]))
            results = self.model.ground_batch(prefix, [[q.text for q in items[i][2]] for i in members], decoder=self.backend.decode,
                                              min_scores=[self._floors(items[i][2]) for i in members] if self.skip_hopeless else None)
            for i, res in zip(members, results):
                out[i] = self._observations(items[i][0], inputs[i][0].frames_ms, items[i][2], res)
        return out

    def _floors(self, queries: list[StandingQuery]) -> list[float] | None:
        """Each query's match threshold: a query that cannot reach it needs no boxes (the model skips its decoder)."""
        if not self.skip_hopeless:
            return None
        return [q.threshold if q.threshold is not None else self.model.config.default_threshold for q in queries]

    def _observations(self, window: Window, frames_ms: tuple[int, ...], queries: list[StandingQuery], results) -> list[Observation]:
        start_ts = window.start_ms / 1000.0
        out = []
        for q, g in zip(queries, results):
            matched = g.score >= (q.threshold if q.threshold is not None else self.model.config.default_threshold)
            # (an unmatched query's score may be the upper bound its decoder was skipped for: never used for events)
            boxes = ()
            span = None
            if matched:
                span = (start_ts + g.span_s[0], start_ts + g.span_s[1])
                xyxy = xyxy_norm_to_px(cxcywh_to_xyxy(np.asarray(g.boxes_cxcywh, dtype=np.float64)).clip(0, 1), window.frame_wh) \
                    if g.boxes_cxcywh else np.zeros((0, 4))
                boxes = tuple(Box(frames_ms[k] / 1000.0, tuple(float(v) for v in b)) for k, b in zip(g.frame_indices, xyxy))
            out.append(Observation(window.window_id, start_ts, window.end_ms / 1000.0, g.score, span, boxes, window.frame_wh))
        return out
