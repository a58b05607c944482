"""Preview frames: what a person looks at (the dashboard's live tile, event snapshots and clips).

Beside the model's small input frame, ingest stores a JPEG of the same sampled frame, its longest side
at most `preview_size` (never upscaled). Resized by PyAV's area scaler, encoded by Pillow (libjpeg-turbo:
its `quality` is the usual 1-95 scale; PyAV's mjpeg encoder offers no per-frame quality).
"""
from __future__ import annotations

import io

import av
import numpy as np
from PIL import Image


def preview_wh(resolution_wh: tuple[int, int], longest_side: int) -> tuple[int, int]:
    """The preview's (width, height): the frame scaled so its longest side is at most `longest_side`, even sides
    (H.264 yuv420p clips need them)."""
    w, h = resolution_wh
    scale = min(1.0, longest_side / max(w, h))
    return max(2, int(round(w * scale)) // 2 * 2), max(2, int(round(h * scale)) // 2 * 2)


def preview_jpeg(image: np.ndarray, longest_side: int = 640, quality: int = 80) -> bytes:
    """An RGB uint8 (H, W, 3) frame -> preview JPEG bytes."""
    h, w = image.shape[:2]
    pw, ph = preview_wh((w, h), longest_side)
    if (pw, ph) != (w, h):
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        image = vf.reformat(width=pw, height=ph, format="rgb24", interpolation="AREA").to_ndarray()
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=quality)
    return buf.getvalue()
