"""Uni-STG samples from synthetic scenes (spec v1): STVG, VTG and REC, positives and negatives.

Deterministic per seed. Pixels take a camera's path when `compress` is on: render, encode
H.264 with PyAV, decode, resize to the model's input.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np

from engine.training.data.real_background import RealBackground
from stream.imagecodec import resize
from stream.scenes import COLOURS, DIRECTIONS, RESOLUTIONS_WH, SHAPES, SIZES, Scene, box_at, describe, make_caption, matches, random_scene, render_frame, unambiguous_caption

TASKS = ("stvg", "vtg", "rec")


@dataclass(frozen=True)
class Sample:
    task: str
    frames: np.ndarray  # (T, S, S, 3) uint8, model input size
    timestamps_s: tuple[float, ...]  # relative to the clip start; () for REC
    caption: str
    span_s: tuple[float, float] | None  # None: the caption matches nothing (answer `none`)
    boxes_cxcywh: np.ndarray  # (T, 4) normalised, zeros where the target is absent
    present: np.ndarray  # (T,) bool: the target is visible in the frame
    in_span: np.ndarray  # (T,) bool: the frame lies inside the ground-truth span


def h264_roundtrip(frames: list[np.ndarray], fps: int, crf: int) -> list[np.ndarray]:
    """Encode frames as H.264 (libx264, yuv420p) in memory and decode them back."""
    h, w = frames[0].shape[:2]
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        st = out.add_stream("libx264", rate=max(1, fps))
        st.width, st.height, st.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
        st.options = {"crf": str(crf), "preset": "ultrafast"}
        for f in frames:
            for pkt in st.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f[: st.height, : st.width]), format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    buf.seek(0)
    with av.open(buf, "r") as inp:
        return [fr.to_ndarray(format="rgb24") for fr in inp.decode(video=0)]


def negative_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A caption of the grammar that matches no object of the scene (often a near miss)."""
    objs = scene.objects
    for _ in range(100):
        if objs and rng.random() < 0.6:  # near miss: change one attribute of a present object
            o = objs[int(rng.integers(len(objs)))]
            colour, shape, size, direction = o.colour, o.shape, None, o.direction
            which = int(rng.integers(4))
            if which == 0:
                colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
            elif which == 1:
                shape = SHAPES[int(rng.integers(len(SHAPES)))]
            elif which == 2:
                size = "small" if o.size == "large" else "large"
            else:
                direction = DIRECTIONS[int(rng.integers(len(DIRECTIONS)))]
        else:
            colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            size = None
            direction = DIRECTIONS[int(rng.integers(len(DIRECTIONS)))] if rng.random() < 0.6 else None
        if any(matches(x, colour, shape, size, direction) for x in objs):
            continue
        return make_caption(colour, shape, size, direction)
    raise RuntimeError("could not find a negative caption")


def render_clip(scene: Scene, timestamps_s, size: int, compress: bool, rng: np.random.Generator,
                background: RealBackground | None = None) -> np.ndarray:
    frames = [render_frame(scene, t, rng, None if background is None else background.frame_at(t)) for t in timestamps_s]
    if compress:
        fps = max(1, round(len(timestamps_s) / max(scene.duration_s, 1e-3)))
        frames = h264_roundtrip(frames, fps, int(rng.integers(18, 36)))
    return np.stack([resize(f, size) for f in frames])


def target_labels(scene: Scene, target, timestamps_s) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.zeros((len(timestamps_s), 4), dtype=np.float32)
    present = np.zeros(len(timestamps_s), dtype=bool)
    if target is None:
        return boxes, present
    for k, t in enumerate(timestamps_s):
        b = box_at(target, t, scene.width, scene.height)
        if b is not None:
            x1, y1, x2, y2 = b
            boxes[k] = ((x1 + x2) / 2 / scene.width, (y1 + y2) / 2 / scene.height, (x2 - x1) / scene.width, (y2 - y1) / scene.height)
            present[k] = True
    return boxes, present


NEAR_MISS_ATTRIBUTES = {"colour": 0.4, "direction": 0.3, "shape": 0.2, "size": 0.1}


def parse_caption(text: str) -> tuple[str | None, str, str, str | None]:
    """(size, colour, shape, direction) of a caption of the grammar; direction "still" for "standing still"."""
    words = text.split()[1:]
    size = words.pop(0) if words[0] in SIZES else None
    colour, shape = words[0], words[1]
    direction = None if len(words) < 3 else ("still" if words[2] == "standing" else words[3])
    return size, colour, shape, direction


def swap_attribute(scene: Scene, text: str, attribute: str, rng: np.random.Generator,
                   with_motion: bool = True) -> str | None:
    """`text` with `attribute` (colour, shape, size or direction) changed to a value drawn by `rng` so that the
    caption names no object of `scene`; size and direction are added when the caption has none. None when the
    drawn value names an object of the scene."""
    size, colour, shape, direction = parse_caption(text)
    if attribute == "colour":
        colour = str(rng.choice([c for c in COLOURS if c != colour]))
    elif attribute == "shape":
        shape = str(rng.choice([s for s in SHAPES if s != shape]))
    elif attribute == "size":
        size = "small" if size == "large" else "large" if size == "small" else str(rng.choice(list(SIZES)))
    elif attribute == "direction":
        direction = str(rng.choice([d for d in DIRECTIONS if d != direction]))
    else:
        raise ValueError(f"unknown attribute {attribute!r}")
    if any(matches(o, colour, shape, size, direction) for o in scene.objects):
        return None
    return make_caption(colour, shape, size, direction if with_motion else None)


def near_miss_caption(scene: Scene, text: str, rng: np.random.Generator, with_motion: bool = True) -> str | None:
    """`text` (a caption of the grammar) with one attribute changed, so that it names no object of `scene`: colour
    40%, direction 30% (added when the caption has none), shape 20%, size 10% (likewise). None if the drawn
    change names an object of the scene. `with_motion` False (REC images) never touches direction."""
    names = [n for n in NEAR_MISS_ATTRIBUTES if with_motion or n != "direction"]
    p = np.asarray([NEAR_MISS_ATTRIBUTES[n] for n in names])
    which = names[int(rng.choice(len(names), p=p / p.sum()))]
    return swap_attribute(scene, text, which, rng, with_motion)


@dataclass(frozen=True)
class SceneMix:
    """How scenes are drawn beyond spec v1's defaults (the defaults reproduce the earlier sample stream exactly).

    `real_background_rate`: share of clips drawn over real footage (training time ranges only,
    `real_background.py`); `look_alike_rate`: chance that a later object shares colour and shape with an earlier
    one (a distractor only size or motion tells apart; spec v1: 0.35)."""

    real_background_rate: float = 0.0
    look_alike_rate: float = 0.35


def make_sample(seed: int, task: str, frames: int = 16, size: int = 64, negative_rate: float = 0.2,
                max_render_pixels: int = 192 * 144, compress_rate: float = 0.35, mix: SceneMix = SceneMix()) -> Sample:
    """One deterministic sample. Clips of 4-12 s (REC: one image), varied resolution, background, speed."""
    return _make(seed, task, frames, size, negative_rate, max_render_pixels, compress_rate, contrast=False, mix=mix)[0]


def make_pair(seed: int, task: str, frames: int = 16, size: int = 64, max_render_pixels: int = 192 * 144,
              compress_rate: float = 0.35, mix: SceneMix = SceneMix()) -> tuple[Sample, Sample]:
    """A contrastive pair on the same pixels: a positive, and a negative whose caption is the positive's
    with one attribute changed (`near_miss_caption`). Only the words tell them apart, so the pair teaches
    the answer (`none` or a span) and the decoder's presence to read every attribute."""
    pos, neg = _make(seed, task, frames, size, 0.0, max_render_pixels, compress_rate, contrast=True, mix=mix)
    return pos, neg


def _make(seed: int, task: str, frames: int, size: int, negative_rate: float, max_render_pixels: int,
          compress_rate: float, contrast: bool, mix: SceneMix = SceneMix()) -> list[Sample]:
    rng = np.random.default_rng(seed)
    duration = float(np.round(rng.uniform(4.0, 12.0), 1)) if task != "rec" else 1.0
    w, h = RESOLUTIONS_WH[int(rng.integers(len(RESOLUTIONS_WH)))]
    scale = min(1.0, (max_render_pixels / (w * h)) ** 0.5)  # render big frames smaller: they are resized to `size` anyway
    wh = (int(w * scale) // 2 * 2, int(h * scale) // 2 * 2)
    for _ in range(50):
        scene = random_scene(rng, duration, wh, look_alike_rate=mix.look_alike_rate)
        negative = rng.random() < negative_rate
        if task == "rec":
            timestamps = (0.0,)
            objs = tuple(o for o in scene.objects if o.present(0.0))
            scene = Scene(**{**scene.__dict__, "objects": objs}) if objs else scene
        else:
            timestamps = tuple(float(k * duration / frames) for k in range(frames))
        if negative:
            caption, target = negative_caption(scene, rng), None
        else:
            candidates = [o for o in scene.objects if any(o.present(t) for t in timestamps)]
            if not candidates:
                continue
            target = candidates[int(rng.integers(len(candidates)))]
            others = tuple(o for o in scene.objects if o is not target)
            caption = unambiguous_caption(target, others, rng)
            if caption is None:
                continue
            if task == "rec":  # the image shows one moment: motion words do not apply
                caption = describe(target, "small" in caption.split() or "large" in caption.split(), False)
                if any(matches(o, target.colour, target.shape, target.size if len(caption.split()) > 3 else None, None) for o in others):
                    continue
            if contrast:
                near_miss = near_miss_caption(scene, caption, rng, with_motion=task != "rec")
                if near_miss is None:
                    continue
        break
    else:
        raise RuntimeError(f"seed {seed}: no valid sample in 50 scenes")
    background = None
    if mix.real_background_rate > 0 and rng.random() < mix.real_background_rate:
        background = RealBackground.draw(rng, (scene.width, scene.height), "train", duration)
    pixels = render_clip(scene, timestamps, size, bool(rng.random() < compress_rate), rng, background)
    boxes, present = target_labels(scene, target, timestamps)
    if target is None:
        span = None
        in_span = np.zeros(len(timestamps), dtype=bool)
    elif task == "rec":
        span = (0.0, 0.0)
        in_span = present.copy()
    else:
        span = (round(max(0.0, target.t_in), 1), round(min(duration, target.t_out), 1))
        in_span = np.array([span[0] - 1e-6 <= t <= span[1] + 1e-6 for t in timestamps])
        present &= in_span
    sample = Sample(task, pixels, timestamps, caption, span, boxes, present, in_span)
    if not contrast:
        return [sample]
    none = np.zeros(len(timestamps), dtype=bool)
    return [sample, Sample(task, pixels, timestamps, near_miss, None, np.zeros_like(boxes), none, none)]
