"""Real backgrounds: the synthetic targets and distractors drawn over moving crops of real footage.

A `FootageBank` holds one split of the footage (`footage.FOOTAGE`: training or held-out time ranges), decoded
once per process and scaled to a longest side of `max_side`. `RealBackground.draw` picks, per clip, a source,
a crop (35-100% of the frame, the scene's aspect), a slow pan and a start time; `frame_at(t)` is the crop at
clip time t (the footage plays at its own rate and turns back at the ends of its range). The footage keeps its
texture, motion and noise; its levels are compressed into the muted range the synthetic backgrounds use
(about 15-140 of 255), so that no background pixel is as saturated as an object's colour and a caption's colour
word stays true.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import av
import numpy as np
from PIL import Image

from engine.training.data.footage import FOOTAGE, footage_path

LEVELS = (15.0, 140.0)  # the footage's 0..255 mapped onto this range


@dataclass(frozen=True)
class FootageClip:
    name: str
    frames: np.ndarray  # (N, H, W, 3) uint8, the split's frames
    fps: float

    @property
    def seconds(self) -> float:
        return len(self.frames) / self.fps


@functools.lru_cache(maxsize=4)
def footage_bank(split: str, max_side: int = 320) -> tuple[FootageClip, ...]:
    """The clips of one split ("train" or "held_out"), decoded once per process."""
    if split not in ("train", "held_out"):
        raise ValueError(f"unknown footage split {split!r} (train or held_out)")
    clips = []
    for f in FOOTAGE:
        span = f.train if split == "train" else f.held_out
        if span is None:
            continue
        frames, fps = [], 25.0
        with av.open(str(footage_path(f.name))) as c:
            stream = c.streams.video[0]
            fps = float(stream.average_rate or 25)
            scale = min(1.0, max_side / max(stream.width, stream.height))
            w, h = int(stream.width * scale) // 2 * 2, int(stream.height * scale) // 2 * 2
            for frame in c.decode(stream):
                t = float(frame.time or 0.0)
                if span[0] <= t < span[1]:
                    frames.append(frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray())
        clips.append(FootageClip(f.name, np.stack(frames), fps))
    return tuple(clips)


def _bounce(k: int, n: int) -> int:
    """Frame k of a clip of n frames played forwards, then backwards, and so on."""
    if n <= 1:
        return 0
    period = 2 * (n - 1)
    k %= period
    return k if k < n else period - k


@dataclass(frozen=True)
class RealBackground:
    clip: FootageClip
    crop_wh: tuple[float, float]  # crop size in footage pixels
    start_xy: tuple[float, float]  # crop's top-left at t = 0
    pan_xy: tuple[float, float]  # crop's motion, footage pixels per second
    start_frame: int
    size_wh: tuple[int, int]  # the scene's size

    @classmethod
    def draw(cls, rng: np.random.Generator, size_wh: tuple[int, int], split: str = "train",
             seconds: float = 12.0) -> "RealBackground":
        bank = footage_bank(split)
        clip = bank[int(rng.integers(len(bank)))]
        fh, fw = clip.frames.shape[1:3]
        aspect = size_wh[0] / size_wh[1]
        # the largest crop of the scene's aspect, then 35-100% of it
        cw, ch = (fw, fw / aspect) if fw / aspect <= fh else (fh * aspect, fh)
        s = float(rng.uniform(0.35, 1.0))
        cw, ch = cw * s, ch * s
        x0, y0 = float(rng.uniform(0, fw - cw)), float(rng.uniform(0, fh - ch))
        # a slow pan that stays inside the frame for `seconds`
        vx = float(rng.uniform(-1, 1)) * (fw - cw) / max(seconds, 1e-3) * 0.5
        vy = float(rng.uniform(-1, 1)) * (fh - ch) / max(seconds, 1e-3) * 0.5
        return cls(clip, (cw, ch), (x0, y0), (vx, vy), int(rng.integers(len(clip.frames))), size_wh)

    def frame_at(self, t: float) -> np.ndarray:
        """The background at clip time t: (H, W, 3) float32, levels in `LEVELS`."""
        clip = self.clip
        img = clip.frames[_bounce(self.start_frame + int(round(t * clip.fps)), len(clip.frames))]
        fh, fw = img.shape[:2]
        cw, ch = self.crop_wh
        x = float(np.clip(self.start_xy[0] + self.pan_xy[0] * t, 0, fw - cw))
        y = float(np.clip(self.start_xy[1] + self.pan_xy[1] * t, 0, fh - ch))
        crop = Image.fromarray(img).resize(self.size_wh, Image.Resampling.BILINEAR, box=(x, y, x + cw, y + ch))
        lo, hi = LEVELS
        return np.asarray(crop, dtype=np.float32) * np.float32((hi - lo) / 255.0) + np.float32(lo)
