"""Box math. Names carry the format: `xyxy` / `cxcywh`, `norm` (in [0, 1]) / `px` (pixels).

Works on torch tensors and numpy arrays alike (last dimension 4); returns new objects.
"""
from __future__ import annotations

import numpy as np
import torch


def _stack(parts, like):
    if isinstance(like, torch.Tensor):
        return torch.stack(parts, dim=-1)
    return np.stack(parts, axis=-1)


def cxcywh_to_xyxy(boxes):
    cx, cy, w, h = (boxes[..., i] for i in range(4))
    return _stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], boxes)


def xyxy_to_cxcywh(boxes):
    x1, y1, x2, y2 = (boxes[..., i] for i in range(4))
    return _stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], boxes)


def xywh_to_xyxy(boxes):
    """COCO / HC-STVG `[x, y, w, h]` (top-left corner) to `xyxy`."""
    x, y, w, h = (boxes[..., i] for i in range(4))
    return _stack([x, y, x + w, y + h], boxes)


def xyxy_norm_to_px(boxes, resolution_wh: tuple[int, int]):
    w, h = resolution_wh
    scale = [w, h, w, h]
    if isinstance(boxes, torch.Tensor):
        return boxes * torch.tensor(scale, dtype=boxes.dtype)
    return np.asarray(boxes, dtype=np.float64) * np.asarray(scale, dtype=np.float64)


def xyxy_px_to_norm(boxes, resolution_wh: tuple[int, int]):
    w, h = resolution_wh
    scale = [w, h, w, h]
    if isinstance(boxes, torch.Tensor):
        return boxes / torch.tensor(scale, dtype=boxes.dtype)
    return np.asarray(boxes, dtype=np.float64) / np.asarray(scale, dtype=np.float64)


def _area(b):
    return (b[..., 2] - b[..., 0]).clip(min=0) * (b[..., 3] - b[..., 1]).clip(min=0)


def _overlap(a, b):
    """Intersection area, union area, the hull's corners, for broadcastable `xyxy` arrays or tensors."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        lib_max, lib_min = torch.maximum, torch.minimum
    else:
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        lib_max, lib_min = np.maximum, np.minimum
    lt_x, lt_y = lib_max(a[..., 0], b[..., 0]), lib_max(a[..., 1], b[..., 1])
    rb_x, rb_y = lib_min(a[..., 2], b[..., 2]), lib_min(a[..., 3], b[..., 3])
    inter = (rb_x - lt_x).clip(min=0) * (rb_y - lt_y).clip(min=0)
    union = _area(a) + _area(b) - inter
    hull = (lib_max(a[..., 2], b[..., 2]) - lib_min(a[..., 0], b[..., 0])) * (lib_max(a[..., 3], b[..., 3]) - lib_min(a[..., 1], b[..., 1]))
    return inter, union, hull


def iou_xyxy(a, b):
    """Element-wise IoU of two broadcastable `xyxy` arrays; 0 where the union is empty."""
    inter, union, _ = _overlap(a, b)
    return inter / union.clip(min=1e-12) * (union > 0)


def giou_xyxy(a, b):
    """Element-wise generalised IoU in [-1, 1]."""
    inter, union, hull = _overlap(a, b)
    hull = hull.clip(min=1e-12)
    return inter / union.clip(min=1e-12) - (hull - union) / hull


def clip_xyxy(boxes, resolution_wh: tuple[int, int]):
    w, h = resolution_wh
    out = np.array(boxes, dtype=np.float64, copy=True)
    out[..., [0, 2]] = out[..., [0, 2]].clip(0, w)
    out[..., [1, 3]] = out[..., [1, 3]].clip(0, h)
    return out
