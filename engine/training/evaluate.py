"""`spacevllm eval`: decode each video with PyAV, sample the model's frames uniformly, ground, densify
boxes to every frame of the predicted span, and score against the annotations beside a trivial baseline.

Writes `<out>/metrics.json` and `<out>/predictions.json` (HC-STVG prediction form:
`{vid: {st_frame, ed_frame, bbox: {"<frame>": [x1, y1, x2, y2]}}}`, 1-based frames; a video
predicted `none` is left out).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from engine.model.boxes import cxcywh_to_xyxy, iou_xyxy
from engine.training.data.formats import READERS, GroundingItem
from engine.training.metrics import match_summary, rec_accuracy, stvg_summary, t_iou, v_iou, vtg_summary
from engine.model.placement import placement_of
from engine.model.preprocess import preprocessor_of, to_model_pixels

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    score: float
    span: tuple[int, int] | None  # 1-based inclusive frames; None: no match
    span_s: tuple[float, float] | None
    boxes: dict  # frame -> xyxy pixels


def decode_video(path: Path) -> tuple[list[av.VideoFrame], float, tuple[int, int]]:
    """Every decoded frame (still in the codec's format: only the sampled ones are converted to RGB)."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        fps = float(stream.average_rate or 25)
        frames = list(c.decode(stream))
    if not frames:
        raise ValueError(f"{path}: no frames decoded")
    return frames, fps, (frames[0].width, frames[0].height)


def sample_indices(n_frames: int, count: int) -> list[int]:
    """`count` frame indices spread uniformly over the clip (starting at frame 0)."""
    count = min(count, n_frames)
    return [int(k * n_frames / count) for k in range(count)]


def densify(sampled_idx: list[int], boxes_xyxy: np.ndarray, first: int, last: int) -> dict[int, list[float]]:
    """Boxes for every frame first..last (0-based) by linear interpolation between sampled frames (clamped at the ends)."""
    out = {}
    xs = np.asarray(sampled_idx, dtype=np.float64)
    for f in range(first, last + 1):
        out[f] = [float(np.interp(f, xs, boxes_xyxy[:, j])) for j in range(4)]
    return out


def window_prefix(model, rgb_frames: list[np.ndarray], timestamps_s: list[float]):
    """The shared window prefix of sampled RGB frames (any size; preprocessed as the engine does: the model's rule)."""
    where = placement_of(model)
    px = to_model_pixels(rgb_frames, preprocessor_of(model), where.device, where.dtype)  # (F, 3, S, S)
    return model.encode_window(px, list(timestamps_s))


def predict_video(model, frames: list[av.VideoFrame], fps: float, caption: str, task: str = "stvg") -> Prediction:
    """The model's answer, always with a span and boxes (the caller applies the threshold to `score`)."""
    n = len(frames)
    w, h = frames[0].width, frames[0].height
    idx = sample_indices(n, model.config.max_frames)
    prefix = window_prefix(model, [frames[i].to_ndarray(format="rgb24") for i in idx], [i / fps for i in idx])
    g = model.ground(prefix, [caption], task=task)[0]
    s, e = g.span_s
    first = min(n - 1, max(0, int(np.ceil(s * fps - 1e-6))))
    last = min(n - 1, max(first, int(np.floor(e * fps + 1e-6))))
    boxes = cxcywh_to_xyxy(g.all_boxes_cxcywh.numpy().astype(np.float64)).clip(0, 1) * np.array([w, h, w, h])
    dense = densify(idx, boxes, first, last)
    return Prediction(g.score, (first + 1, last + 1), (s, e), {f + 1: written_box(b) for f, b in dense.items()})


def written_box(xyxy) -> list[float]:
    """A box as predictions.json holds it (0.1 px). Metrics are computed from these same values, so that any
    evaluator run on the file agrees with metrics.json."""
    return [round(float(v), 1) for v in xyxy]


def baseline_prediction(item: GroundingItem, n: int, wh: tuple[int, int], mean_wh_norm: tuple[float, float]) -> Prediction:
    """Whole clip, a centred box of the mean ground-truth size."""
    w, h = wh
    bw, bh = mean_wh_norm[0] * w, mean_wh_norm[1] * h
    box = [w / 2 - bw / 2, h / 2 - bh / 2, w / 2 + bw / 2, h / 2 + bh / 2]
    return Prediction(1.0, (1, n), (0.0, n / max(item.fps, 1e-6)), {f: box for f in range(1, n + 1)})


def _mean_box_size(items: list[GroundingItem]) -> tuple[float, float]:
    sizes = [((b[2] - b[0]) / it.width, (b[3] - b[1]) / it.height) for it in items if it.width
             for b in it.gt_boxes.values()]
    return tuple(np.mean(sizes, axis=0)) if sizes else (0.2, 0.2)


def evaluate(fmt: str, anno: str | Path, videos: str | Path, model_dir: str | Path, out: str | Path,
             threshold: float | None = None, limit: int | None = None) -> dict:
    from engine.model.checkpoint import load_model

    items = READERS[fmt](anno, videos)[:limit]
    model = load_model(model_dir)
    threshold = model.config.default_threshold if threshold is None else threshold
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mean_wh = _mean_box_size(items)
    rows = {"model": [], "baseline": []}
    scored = []  # (score, row as if matched, row as if not matched): metrics at any threshold without re-running
    predictions, latencies = {}, []
    for it in tqdm(items, desc=f"eval {fmt}", dynamic_ncols=True):
        if it.task == "rec":
            frames, fps = [decode_image_file(it.media)], 1.0
            wh = (frames[0].shape[1], frames[0].shape[0])
        else:
            frames, fps, wh = decode_video(it.media)
        fps = it.fps or fps
        t0 = time.perf_counter()
        if it.task == "rec":
            full = _predict_image(model, frames[0], it.caption)
        else:
            full = predict_video(model, frames, fps, it.caption, task="vtg" if it.task == "vtg" else "stvg")
        latencies.append(time.perf_counter() - t0)
        pred = full if full.score >= threshold else Prediction(full.score, None, None, {})
        base = baseline_prediction(it, len(frames), wh, mean_wh)
        rows["model"].append(_score(it, pred, fps))
        rows["baseline"].append(_score(it, base, fps))
        scored.append((full.score, _score(it, full, fps), _score(it, Prediction(full.score, None, None, {}), fps)))
        if pred.span is not None:
            predictions[it.vid] = {"st_frame": pred.span[0], "ed_frame": pred.span[1],
                                   "bbox": {str(f): b for f, b in pred.boxes.items()}}
    metrics = {key: _summary(fmt, r) for key, r in rows.items()}
    metrics["model"]["latency_ms_median"] = float(np.median(latencies) * 1000) if latencies else 0.0
    sweep = {f"{t:.2f}": _summary(fmt, [hit if s >= t else miss for s, hit, miss in scored])
             for t in np.round(np.arange(0.0, 1.0, 0.05), 2)}
    result = {**metrics["model"], "n_videos": len(items), "threshold": threshold, "baseline": metrics["baseline"]}
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "predictions.json").write_text(json.dumps(predictions) + "\n")
    (out / "threshold_sweep.json").write_text(json.dumps(sweep, indent=2) + "\n")
    return result


def decode_image_file(path: Path) -> np.ndarray:
    """An image file (JPEG, PNG, ...) as RGB uint8 (H, W, 3), through PyAV (evaluation and training read it alike)."""
    with av.open(str(path)) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24")


def _predict_image(model, image: np.ndarray, caption: str) -> Prediction:
    h, w = image.shape[:2]
    where = placement_of(model)
    px = to_model_pixels([image], preprocessor_of(model), where.device, where.dtype)  # (1, 3, S, S)
    g = model.ground_from_scratch(px, [], caption, task="rec")
    box = cxcywh_to_xyxy(g.all_boxes_cxcywh[0].numpy().astype(np.float64)).clip(0, 1) * np.array([w, h, w, h])
    return Prediction(g.score, (1, 1), (0.0, 0.0), {1: written_box(box)})


def _score(it: GroundingItem, p: Prediction, fps: float) -> dict:
    positive = it.gt_span is not None or it.gt_span_s is not None or (it.task == "rec" and bool(it.gt_boxes))
    row = {"positive": positive, "matched": p.span is not None}
    if it.task == "stvg" and positive:
        row["t_iou"] = t_iou(p.span, it.gt_span)
        row["v_iou"] = v_iou(p.span, it.gt_span, p.boxes, it.gt_boxes)
    elif it.task == "vtg" and positive:
        if p.span_s is None:
            row["t_iou"] = 0.0
        else:
            inter = max(0.0, min(p.span_s[1], it.gt_span_s[1]) - max(p.span_s[0], it.gt_span_s[0]))
            union = max(p.span_s[1], it.gt_span_s[1]) - min(p.span_s[0], it.gt_span_s[0])
            row["t_iou"] = inter / union if union > 0 else 0.0
    elif it.task == "rec" and positive:
        row["iou"] = float(iou_xyxy(np.asarray(p.boxes[1]), np.asarray(it.gt_boxes[1]))) if p.boxes else 0.0
    return row


def _summary(fmt: str, rows: list[dict]) -> dict:
    pos = [r for r in rows if r["positive"]]
    out = match_summary([r["matched"] for r in rows], [r["positive"] for r in rows])
    if fmt in ("hcstvg", "vidstg"):
        out.update(stvg_summary([r["t_iou"] for r in pos], [r["v_iou"] for r in pos]))
    elif fmt == "charades":
        out.update(vtg_summary([r["t_iou"] for r in pos]))
    else:
        out["Acc@0.5"] = rec_accuracy([r["iou"] for r in pos])
    return out
