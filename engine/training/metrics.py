"""Grounding metrics with the standard definitions; frames are counted inclusively.

Spans are `(start_frame, end_frame)` inclusive integer pairs, or None for "no prediction".
Boxes are dicts `frame -> xyxy`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from engine.model.boxes import iou_xyxy

Span = tuple[int, int]


def t_iou(pred: Span | None, gt: Span | None) -> float:
    """|frames in both| / (max(end) - min(start) + 1); 0 when either span is missing."""
    if pred is None or gt is None:
        return 0.0
    inter = min(pred[1], gt[1]) - max(pred[0], gt[0]) + 1
    union = max(pred[1], gt[1]) - min(pred[0], gt[0]) + 1
    return max(0, inter) / union if union > 0 else 0.0


def v_iou(pred: Span | None, gt: Span | None, pred_boxes: Mapping[int, Sequence[float]],
          gt_boxes: Mapping[int, Sequence[float]]) -> float:
    """Σ over frames in both spans of IoU(pred, gt) / (max(end) - min(start) + 1); a missing box scores 0."""
    if pred is None or gt is None:
        return 0.0
    union = max(pred[1], gt[1]) - min(pred[0], gt[0]) + 1
    total = 0.0
    for f in range(max(pred[0], gt[0]), min(pred[1], gt[1]) + 1):
        if f in pred_boxes and f in gt_boxes:
            total += float(iou_xyxy(pred_boxes[f], gt_boxes[f]))
    return total / union if union > 0 else 0.0


def stvg_summary(t_ious: Sequence[float], v_ious: Sequence[float]) -> dict[str, float]:
    n = len(t_ious)
    if n == 0:
        return {"m_tIoU": 0.0, "m_vIoU": 0.0, "vIoU@0.3": 0.0, "vIoU@0.5": 0.0}
    return {
        "m_tIoU": sum(t_ious) / n,
        "m_vIoU": sum(v_ious) / n,
        "vIoU@0.3": sum(v > 0.3 for v in v_ious) / n,
        "vIoU@0.5": sum(v > 0.5 for v in v_ious) / n,
    }


def vtg_summary(t_ious: Sequence[float]) -> dict[str, float]:
    n = len(t_ious)
    out = {f"R1@{m}": (sum(t >= m for t in t_ious) / n if n else 0.0) for m in (0.3, 0.5, 0.7)}
    out["mIoU"] = sum(t_ious) / n if n else 0.0
    return out


def rec_accuracy(ious: Sequence[float], threshold: float = 0.5) -> float:
    return sum(i >= threshold for i in ious) / len(ious) if ious else 0.0


def match_summary(pred_match: Sequence[bool], gt_match: Sequence[bool]) -> dict[str, float]:
    """no_match_accuracy over negatives; precision and recall of `match` over all samples."""
    neg = [p for p, g in zip(pred_match, gt_match) if not g]
    tp = sum(p and g for p, g in zip(pred_match, gt_match))
    fp = sum(p and not g for p, g in zip(pred_match, gt_match))
    fn = sum(g and not p for p, g in zip(pred_match, gt_match))
    return {
        "no_match_accuracy": (sum(not p for p in neg) / len(neg)) if neg else 0.0,
        "match_precision": tp / (tp + fp) if tp + fp else 0.0,
        "match_recall": tp / (tp + fn) if tp + fn else 0.0,
    }
