"""Training on real datasets: a mixture (YAML) of annotation files in the formats `formats.py` reads.

    # configs/data/mixture-example.yaml
    negative_rate: 0.2            # share of samples given another record's caption (answer: none)
    sources:
      - name: hcstvg
        format: hcstvg            # hcstvg | vidstg (STVG), charades (VTG), refcoco (REC)
        anno: /data/hcstvg/anno/train.json
        media: /data/hcstvg/videos   # videos (images for refcoco); relative paths: from the YAML's folder
        weight: 0.4               # share of training steps drawn from this source

Each step draws one source (by weight, deterministic per (seed, step)) and a global batch of its records
(each sample deterministic per (seed, global sample index)): a record, whether it becomes a negative, and
the window. Frames are sampled as the engine samples a window: N uniformly spaced frames, timestamps in
seconds from the window start; a clip longer than the model's time range is cut to a window that holds the
target's start. Prompts and answers are the Uni-STG ones of the synthetic data (`collate`).

Bad records fail with `RecordError`, one line naming the file, the record and the field.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.training.data.formats import READERS, FormatError, GroundingItem
from engine.training.data.frames import to_model_frames
from engine.training.data.steps import BadRecord, Collator, Shard
from engine.training.data.synthetic import Sample
from engine.model.preprocess import ImagePreprocessor

log = logging.getLogger(__name__)

TASK_OF = {"hcstvg": "stvg", "vidstg": "stvg", "charades": "vtg", "refcoco": "rec"}
SOURCE_DRAW, SAMPLE_DRAW = 1, 2  # keep the source and the sample draws of the same numbers apart


class RecordError(ValueError):
    """A mixture file, annotation record or media file that cannot be used; the one-line message says which."""


class SourceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    format: Literal["hcstvg", "vidstg", "charades", "refcoco"]
    anno: Path
    media: Path
    weight: float = Field(default=1.0, gt=0)


class MixtureSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    negative_rate: float = Field(default=0.2, ge=0, lt=1)
    sources: list[SourceSpec] = Field(min_length=1)


@dataclass(frozen=True)
class Source:
    name: str
    format: str
    anno: Path
    items: tuple[GroundingItem, ...]
    weight: float

    @property
    def task(self) -> str:
        return TASK_OF[self.format]


@dataclass(frozen=True)
class Mixture:
    sources: tuple[Source, ...]
    negative_rate: float

    @property
    def weights(self) -> np.ndarray:
        w = np.asarray([s.weight for s in self.sources], dtype=np.float64)
        return w / w.sum()


def load_mixture(path: str | Path) -> Mixture:
    """Read and check a mixture file: every source's annotations and every record's media file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
        spec = MixtureSpec.model_validate(raw)
    except OSError as exc:
        raise RecordError(f"{path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise RecordError(f"{path}: not YAML ({str(exc).splitlines()[0]})") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise RecordError(f"{path}: field '{where}': {first['msg']} ({exc.error_count()} problem(s))") from None
    sources = []
    for k, s in enumerate(spec.sources):
        anno, media = (p if p.is_absolute() else path.parent / p for p in (s.anno, s.media))
        name = s.name or f"{s.format}[{k}]"
        if not anno.is_file():
            raise RecordError(f"{path}: field 'sources.{k}.anno': {anno} is not a file")
        if not media.is_dir():
            raise RecordError(f"{path}: field 'sources.{k}.media': {media} is not a directory")
        try:
            items = READERS[s.format](anno, media)
        except FormatError as exc:
            raise RecordError(str(exc).replace("\n", " ")) from None
        if not items:
            raise RecordError(f"{anno}: no records ({s.format})")
        for it in items:
            check_record(it, anno)
        sources.append(Source(name, s.format, anno, tuple(items), s.weight))
        log.info("mixture source %s: %d records from %s", name, len(items), anno)
    return Mixture(tuple(sources), spec.negative_rate)


def check_record(it: GroundingItem, anno: Path) -> None:
    """Raise RecordError naming the field of `it` that training could not use."""
    def bad(field: str, problem: str) -> RecordError:
        return RecordError(f"{anno}: record '{it.vid}': field '{field}': {problem}")

    if not it.media.is_file():
        raise bad("media", f"{it.media} not found")
    if not it.caption.strip():
        raise bad("caption", "empty")
    if it.task == "stvg":
        if it.fps <= 0:
            raise bad("fps", f"must be positive, got {it.fps}")
        if it.gt_span is not None:
            a, b = it.gt_span
            if not 1 <= a <= b or (it.n_frames and b > it.n_frames):
                raise bad("span", f"frames {a}..{b} not within 1..{it.n_frames or '?'}")
    if it.task == "vtg" and it.gt_span_s is not None and not 0 <= it.gt_span_s[0] <= it.gt_span_s[1]:
        raise bad("span", f"{it.gt_span_s} is not a start <= end in seconds")
    for f, box in it.gt_boxes.items():
        x1, y1, x2, y2 = box
        if not (x2 > x1 and y2 > y1):
            raise bad("bbox", f"frame {f}: {box} is not a box with positive width and height")


# ---- sampling ---------------------------------------------------------------------------------------
def step_source(mixture: Mixture, seed: int, step: int) -> int:
    """The source every sample of global step `step` comes from (one task, one frame count per batch)."""
    rng = np.random.default_rng([seed, SOURCE_DRAW, step])
    return int(rng.choice(len(mixture.sources), p=mixture.weights))


def sample_indices(n_frames: int, count: int) -> list[int]:
    """`count` frame indices spread uniformly over `n_frames` (as the engine and `spacevllm eval` sample);
    repeated when the clip has fewer frames, so every sample of a batch has `count`."""
    return [int(k * n_frames / count) for k in range(count)]


def draw_sample(mixture: Mixture, source_index: int, seed: int, global_index: int, frames: int, preprocessor: ImagePreprocessor | int,
                max_time_s: float) -> Sample:
    """The sample at `global_index` of the stream (a record of source `source_index`, maybe as a negative)."""
    src = mixture.sources[source_index]
    rng = np.random.default_rng([seed, SAMPLE_DRAW, global_index])
    i = int(rng.integers(len(src.items)))
    item = src.items[i]
    caption, negative = item.caption, item.gt_span is None and item.task == "stvg"
    if rng.random() < mixture.negative_rate and len(src.items) > 1:
        j = int(rng.integers(len(src.items) - 1))
        other = src.items[j + (j >= i)]  # any other record
        if other.caption.strip().lower() != item.caption.strip().lower() and other.media != item.media:
            caption, negative = other.caption, True
    if item.task == "rec":
        return _image_sample(item, src.anno, caption, negative, preprocessor)
    return _clip_sample(item, src.anno, caption, negative, frames, preprocessor, max_time_s, rng)


def _image_sample(item: GroundingItem, anno: Path, caption: str, negative: bool, preprocessor: ImagePreprocessor | int) -> Sample:
    image = read_image(item, anno)
    h, w = image.shape[:2]
    boxes = np.zeros((1, 4), dtype=np.float32)
    present = np.zeros(1, dtype=bool)
    if not negative and 1 in item.gt_boxes:
        boxes[0] = _cxcywh(item.gt_boxes[1], item.width or w, item.height or h)
        present[0] = True
    # as the synthetic REC samples: one frame at t = 0, the span (0, 0)
    return Sample("rec", to_model_frames(image[None], preprocessor), (0.0,), caption, None if negative else (0.0, 0.0),
                  boxes, present, present.copy())


def _clip_sample(item: GroundingItem, anno: Path, caption: str, negative: bool, frames: int, preprocessor: ImagePreprocessor | int,
                 max_time_s: float, rng: np.random.Generator) -> Sample:
    n_total, fps = clip_length(item, anno)
    # the target's span in frames (0-based inclusive), when there is one
    if item.task == "stvg" and item.gt_span is not None:
        span_f = (item.gt_span[0] - 1, min(item.gt_span[1] - 1, n_total - 1))
    elif item.task == "vtg" and item.gt_span_s is not None:
        span_f = (min(n_total - 1, int(item.gt_span_s[0] * fps)), min(n_total - 1, int(item.gt_span_s[1] * fps)))
    else:
        span_f = None
    window = min(n_total, max(1, int(max_time_s * fps) - 1))  # frames; timestamps must stay below max_time_s
    if window >= n_total:
        start = 0
    elif span_f is not None and not negative:  # a window that holds the target's start
        lo, hi = max(0, span_f[1] - window + 1), min(span_f[0], n_total - window)
        start = int(rng.integers(lo, hi + 1)) if lo <= hi else min(span_f[0], n_total - window)
    else:
        start = int(rng.integers(0, n_total - window + 1))
    idx = [start + k for k in sample_indices(window, frames)]
    pixels = read_frames(item, anno, idx, preprocessor)
    ts = tuple((k - start) / fps for k in idx)
    boxes = np.zeros((frames, 4), dtype=np.float32)
    present = np.zeros(frames, dtype=bool)
    if negative or span_f is None:
        return Sample(item.task, pixels, ts, caption, None, boxes, present, np.zeros(frames, dtype=bool))
    span_s = (max(0.0, (span_f[0] - start) / fps), min((window - 1) / fps, (span_f[1] - start) / fps))
    span_s = (span_s[0], max(span_s[0], span_s[1]))
    in_span = np.array([span_f[0] <= k <= span_f[1] for k in idx])
    if item.task == "stvg":
        w, h = item.width, item.height
        for n, k in enumerate(idx):
            box = item.gt_boxes.get(k + 1)  # annotations count frames from 1
            if box is not None and in_span[n]:
                boxes[n] = _cxcywh(box, w, h)
                present[n] = True
    return Sample(item.task, pixels, ts, caption, (round(span_s[0], 1), round(span_s[1], 1)), boxes, present, in_span)


def _cxcywh(xyxy, width: int, height: int) -> np.ndarray:
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    box = np.array([(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height], dtype=np.float32)
    return box.clip(0.0, 1.0)


# ---- decoding (PyAV, inside DataLoader workers) -------------------------------------------------------
def clip_length(item: GroundingItem, anno: Path) -> tuple[int, float]:
    """(frames, fps) of a record's video: the annotation's when it has them, else the container's."""
    if item.n_frames and item.fps:
        return item.n_frames, item.fps
    try:
        n, fps = _container_length(str(item.media), float(item.fps or 0))
    except (av.error.FFmpegError, IndexError, OSError) as exc:
        raise RecordError(f"{item.media}: cannot read the video ({exc}) (record '{item.vid}' of {anno})") from None
    if n <= 0 or fps <= 0:
        raise RecordError(f"{item.media}: no frame count or frame rate (record '{item.vid}' of {anno})")
    return n, fps


@functools.lru_cache(maxsize=4096)
def _container_length(media: str, fps: float) -> tuple[int, float]:
    """(frames, fps) from the container (fps: the annotation's when given), probed once per file and process: a
    record drawn again (every Charades-STA record lacks both) does not reopen, or decode to count, its video."""
    with av.open(media) as c:
        st = c.streams.video[0]
        fps = fps or float(st.average_rate or 0)
        n = st.frames or (int(float(st.duration * st.time_base) * fps) if st.duration else 0)
        if not n:  # no count in the container: decode to count
            n = sum(1 for _ in c.decode(st))
    return n, fps


def read_frames(item: GroundingItem, anno: Path, indices: list[int], preprocessor: ImagePreprocessor | int) -> np.ndarray:
    """The frames at `indices` (decode order, 0-based) as (N, S, S, 3) uint8 model input. Frames past the end
    of a video shorter than its annotation repeat its last frame."""
    wanted = sorted(set(indices))
    got: dict[int, np.ndarray] = {}
    last = None
    try:
        with av.open(str(item.media)) as c:
            st = c.streams.video[0]
            st.thread_type = "AUTO"
            for k, frame in enumerate(c.decode(st)):
                if k in wanted:
                    got[k] = to_model_frames(frame.to_ndarray(format="rgb24")[None], preprocessor)[0]
                last = k
                if k >= wanted[-1]:
                    break
    except (av.error.FFmpegError, IndexError, OSError) as exc:
        raise RecordError(f"{item.media}: cannot decode the video ({exc}) (record '{item.vid}' of {anno})") from None
    if not got:
        raise RecordError(f"{item.media}: no frames decoded (record '{item.vid}' of {anno})")
    if last is not None and last < wanted[-1]:
        log.debug("%s: %d frames decoded, the annotation says more; repeating the last", item.media, last + 1)
    tail = got[max(got)]
    return np.stack([got.get(k, tail) for k in indices])


def read_image(item: GroundingItem, anno: Path) -> np.ndarray:
    from engine.training.evaluate import decode_image_file

    try:
        return decode_image_file(item.media)
    except (av.error.FFmpegError, StopIteration, IndexError, OSError) as exc:
        raise RecordError(f"{item.media}: cannot decode the image ({exc!r}) (record '{item.vid}' of {anno})") from None


# ---- per-step batches ----------------------------------------------------------------------------------
class MixtureSteps(torch.utils.data.Dataset):
    """Item `step`: this rank's micro-batches of that step (see `steps.py`), or a `BadRecord`."""

    def __init__(self, mixture: Mixture, seed: int, batch_size: int, frames: int, preprocessor: ImagePreprocessor | int, max_time_s: float,
                 collator: Collator, shard: Shard, steps: int) -> None:
        self.mixture, self.seed, self.batch_size, self.frames = mixture, seed, batch_size, frames
        self.preprocessor, self.max_time_s, self.collator, self.shard, self.steps = preprocessor, max_time_s, collator, shard, steps

    def __len__(self) -> int:
        return self.steps

    def samples(self, step: int, micro: int) -> list[Sample]:
        source = step_source(self.mixture, self.seed, step)
        a, b = self.shard.bounds(self.batch_size, micro)
        return [draw_sample(self.mixture, source, self.seed, step * self.batch_size + j, self.frames, self.preprocessor,
                            self.max_time_s) for j in range(a, b)]

    def __getitem__(self, step: int):
        try:
            return [self.collator(self.samples(step, m)) for m in range(self.shard.grad_accum)]
        except RecordError as exc:  # handed back as data: a worker's exception would reach the user as a traceback
            return BadRecord(str(exc))
