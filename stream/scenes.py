"""Synthetic scenes, spec v1 (see shared/DESIGN.md): the default model's world.

Numpy only (no torch): the `synthetic://` camera and the training-data generator both
render with this module. A `Scene` is a pure description; `render_frame(scene, t)` draws it
at time `t` seconds, and `box_at(obj, t)` gives the object's pixel box, so labels and
pixels come from one source of truth.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 70),
    "blue": (40, 90, 230),
    "yellow": (235, 215, 40),
    "white": (245, 245, 245),
}
SIZES = {"small": (0.10, 0.14), "large": (0.22, 0.30)}  # side as a fraction of min(width, height)
DIRECTIONS = ("left", "right", "up", "down", "still")
VELOCITY = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}  # unit vectors, image axes
BACKGROUNDS = ("flat", "gradient", "noise", "texture")
RESOLUTIONS_WH = ((160, 120), (256, 144), (320, 240), (426, 240), (640, 360), (640, 480), (854, 480), (1280, 720))


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    direction: str
    side_px: float
    start_xy: tuple[float, float]  # centre at t_in, pixels
    speed_px_s: float
    t_in: float
    t_out: float

    def velocity(self) -> tuple[float, float]:
        return VELOCITY[self.direction]

    def centre_at(self, t: float) -> tuple[float, float]:
        """Centre in pixels at time t (straight-line motion from `start_xy` at `t_in`)."""
        vx, vy = VELOCITY[self.direction]
        dt = t - self.t_in
        return self.start_xy[0] + vx * self.speed_px_s * dt, self.start_xy[1] + vy * self.speed_px_s * dt

    def present(self, t: float) -> bool:
        return self.t_in <= t <= self.t_out

    def motion_phrase(self) -> str:
        return motion_phrase(self.direction)


@dataclass(frozen=True)
class Scene:
    width: int
    height: int
    duration_s: float
    objects: tuple[SceneObject, ...]
    background: str
    bg_seed: int
    bg_colour: tuple[int, int, int]
    bg_colour2: tuple[int, int, int]
    noise: float  # per-frame pixel noise (std, 0-255 scale)
    extra: dict = field(default_factory=dict, compare=False)


def box_at(obj: SceneObject, t: float, width: int, height: int) -> tuple[float, float, float, float] | None:
    """The object's `xyxy` pixel box at time t, clipped to the frame; None when absent."""
    if not obj.present(t):
        return None
    cx, cy = obj.centre_at(t)
    h = obj.side_px / 2
    x1, y1, x2, y2 = max(0.0, cx - h), max(0.0, cy - h), min(float(width), cx + h), min(float(height), cy + h)
    if x2 - x1 < 1 or y2 - y1 < 1:
        return None
    return (x1, y1, x2, y2)


def _background(scene: Scene) -> np.ndarray:
    rng = np.random.default_rng(scene.bg_seed)
    h, w = scene.height, scene.width
    c1 = np.asarray(scene.bg_colour, dtype=np.float32)
    c2 = np.asarray(scene.bg_colour2, dtype=np.float32)
    if scene.background == "flat":
        img = np.broadcast_to(c1, (h, w, 3)).copy()
    elif scene.background == "gradient":
        ramp = np.linspace(0, 1, w if rng.random() < 0.5 else h, dtype=np.float32)
        ramp = ramp[None, :, None] if ramp.shape[0] == w else ramp[:, None, None]
        img = np.broadcast_to(c1 * (1 - ramp) + c2 * ramp, (h, w, 3)).copy()
    elif scene.background == "noise":
        coarse = rng.random((max(2, h // 16), max(2, w // 16), 1), dtype=np.float32)
        coarse = np.kron(coarse, np.ones((16, 16, 1), dtype=np.float32))[:h, :w]
        coarse = np.pad(coarse, ((0, max(0, h - coarse.shape[0])), (0, max(0, w - coarse.shape[1])), (0, 0)), mode="edge")
        img = c1 * (1 - coarse) + c2 * coarse
    else:  # texture: low-contrast stripes or checks
        period = rng.integers(8, 40)
        yy, xx = np.mgrid[0:h, 0:w]
        if rng.random() < 0.5:
            pattern = ((xx // period + yy // period) % 2).astype(np.float32)
        else:
            angle = rng.random() * math.pi
            pattern = (np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period) > 0).astype(np.float32)
        img = c1 * (1 - pattern[..., None]) + c2 * pattern[..., None]
    return img.astype(np.float32)


_BG_CACHE: dict[tuple, np.ndarray] = {}


def render_frame(scene: Scene, t: float, rng: np.random.Generator | None = None,
                 background: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3) of the scene at time t; `background` (H, W, 3 float32), when given, replaces the
    scene's own (training and evaluation draw over real footage with it)."""
    if background is not None:
        img = np.array(background, dtype=np.float32, copy=True)
    else:
        key = (scene.width, scene.height, scene.background, scene.bg_seed, scene.bg_colour, scene.bg_colour2)
        bg = _BG_CACHE.get(key)
        if bg is None:
            if len(_BG_CACHE) > 8:
                _BG_CACHE.clear()
            bg = _BG_CACHE[key] = _background(scene)
        img = bg.copy()
    for obj in scene.objects:
        box = box_at(obj, t, scene.width, scene.height)
        if box is None:
            continue
        _draw(img, obj, t, scene)
    if scene.noise > 0:
        rng = rng or np.random.default_rng(int(t * 1000) + scene.bg_seed)
        img += rng.standard_normal(img.shape[:2] + (1,), dtype=np.float32) * np.float32(scene.noise)
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw(img: np.ndarray, obj: SceneObject, t: float, scene: Scene) -> None:
    cx, cy = obj.centre_at(t)
    half = obj.side_px / 2
    x0, x1 = max(0, int(math.floor(cx - half))), min(scene.width, int(math.ceil(cx + half)) + 1)
    y0, y1 = max(0, int(math.floor(cy - half))), min(scene.height, int(math.ceil(cy + half)) + 1)
    if x1 <= x0 or y1 <= y0:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    xx += 0.5
    yy += 0.5
    if obj.shape == "circle":
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= half**2
    elif obj.shape == "square":
        mask = (np.abs(xx - cx) <= half) & (np.abs(yy - cy) <= half)
    else:  # triangle pointing up, filling its bounding square's base and height
        top = cy - half
        rel = (yy - top) / (2 * half)  # 0 at apex, 1 at base
        mask = (rel >= 0) & (rel <= 1) & (np.abs(xx - cx) <= rel * half)
    img[y0:y1, x0:x1][mask] = COLOURS[obj.colour]


def motion_phrase(direction: str) -> str:
    return "standing still" if direction == "still" else f"moving {direction}"


def make_caption(colour: str, shape: str, size: str | None = None, direction: str | None = None) -> str:
    """A caption of spec v1's grammar: `the [size] <colour> <shape> [moving <dir> | standing still]`."""
    words = ["the"] + ([size] if size else []) + [colour, shape]
    if direction is not None:
        words.append(motion_phrase(direction))
    return " ".join(words)


def describe(obj: SceneObject, with_size: bool, with_motion: bool) -> str:
    """The caption of `obj`, with its size and motion when asked."""
    return make_caption(obj.colour, obj.shape, obj.size if with_size else None, obj.direction if with_motion else None)


def matches(obj: SceneObject, colour: str, shape: str, size: str | None, direction: str | None) -> bool:
    return (
        obj.colour == colour and obj.shape == shape
        and (size is None or obj.size == size) and (direction is None or obj.direction == direction)
    )


def unambiguous_caption(target: SceneObject, others: tuple[SceneObject, ...], rng: np.random.Generator) -> str | None:
    """The shortest-enough caption naming `target` alone among `others` (size only when needed)."""
    options = [(False, bool(rng.random() < 0.5)), (False, True), (True, True)]
    if options[0][1]:
        options = options[1:]
    for with_size, with_motion in options:
        size = target.size if with_size else None
        direction = target.direction if with_motion else None
        if not any(matches(o, target.colour, target.shape, size, direction) for o in others):
            return describe(target, with_size, with_motion)
    return None


def random_scene(rng: np.random.Generator, duration_s: float, resolution_wh: tuple[int, int] | None = None,
                 n_objects: int | None = None, min_span_s: float = 1.0, look_alike_rate: float = 0.35) -> Scene:
    """A random scene of spec v1: 1-4 objects, each present during one contiguous span. Each object after the first
    shares colour and shape with an earlier one with probability `look_alike_rate` (hard distractors)."""
    w, h = resolution_wh or RESOLUTIONS_WH[int(rng.integers(len(RESOLUTIONS_WH)))]
    n = int(n_objects or rng.integers(1, 5))
    side_ref = min(w, h)
    objects = []
    # distractors often share colour and shape with an earlier object (forces size or motion words)
    for i in range(n):
        if i > 0 and rng.random() < look_alike_rate:
            base = objects[int(rng.integers(len(objects)))]
            colour, shape = base.colour, base.shape
        else:
            colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
        size = "small" if rng.random() < 0.5 else "large"
        side = float(rng.uniform(*SIZES[size]) * side_ref)
        direction = DIRECTIONS[int(rng.integers(len(DIRECTIONS)))]
        if rng.random() < 0.3:
            t_in, t_out = 0.0, duration_s
        else:
            span = float(rng.uniform(min(min_span_s, duration_s), duration_s))
            t_in = float(rng.uniform(0, duration_s - span))
            t_out = t_in + span
        speed = 0.0 if direction == "still" else float(rng.uniform(0.06, 0.16) * side_ref)
        travel = speed * (t_out - t_in)
        vx, vy = VELOCITY[direction]
        half = side / 2
        # start so that the whole path stays inside the frame (shrink speed when it cannot)
        span_x = w - 2 * half - abs(vx) * travel
        span_y = h - 2 * half - abs(vy) * travel
        if span_x < 0 or span_y < 0:
            speed = speed * 0.4
            travel = speed * (t_out - t_in)
            span_x = max(0.0, w - 2 * half - abs(vx) * travel)
            span_y = max(0.0, h - 2 * half - abs(vy) * travel)
        x = half + float(rng.uniform(0, span_x)) + (travel if vx < 0 else 0)
        y = half + float(rng.uniform(0, span_y)) + (travel if vy < 0 else 0)
        objects.append(SceneObject(shape, colour, size, direction, side, (x, y), speed, t_in, t_out))
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    # muted backgrounds, so that every object colour stays distinguishable
    bg1 = tuple(int(v) for v in rng.integers(20, 125, 3))
    bg2 = tuple(int(v) for v in np.clip(np.asarray(bg1) + rng.integers(-40, 41, 3), 10, 135))
    return Scene(w, h, duration_s, tuple(objects), background, int(rng.integers(2**31)), bg1, bg2,
                 float(rng.uniform(0, 8)))
