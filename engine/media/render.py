"""Drawing an event onto preview frames: the snapshot JPEG and the clip MP4 (H.264, yuv420p, +faststart).

Pure functions of bytes and numbers (no Redis, no files except the clip's output path). Boxes arrive in
camera pixels (`frame_wh`) and are scaled to the preview's size.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

BOX_RGB = (0, 255, 64)
CAPTION_BG = (0, 0, 0)
CAPTION_RGB = (255, 255, 255)


def scale_xyxy(xyxy, frame_wh: tuple[int, int], preview_wh: tuple[int, int]) -> tuple[float, float, float, float]:
    """A box in camera pixels -> the same box in preview pixels."""
    sx, sy = preview_wh[0] / max(1, frame_wh[0]), preview_wh[1] / max(1, frame_wh[1])
    x1, y1, x2, y2 = xyxy
    return x1 * sx, y1 * sy, x2 * sx, y2 * sy


def _font(height: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=max(10, height // 20))


def draw(image: Image.Image, xyxy_camera, frame_wh: tuple[int, int], caption: str) -> Image.Image:
    """A copy of `image` with the box (camera pixels, or None) and a caption bar at the top."""
    out = image.convert("RGB").copy()
    d = ImageDraw.Draw(out)
    if xyxy_camera is not None:
        x1, y1, x2, y2 = scale_xyxy(xyxy_camera, frame_wh, out.size)
        d.rectangle([x1, y1, x2, y2], outline=BOX_RGB, width=max(2, out.size[0] // 200))
    font = _font(out.size[1])
    left, top, right, bottom = d.textbbox((4, 2), caption, font=font)
    d.rectangle([0, 0, min(out.size[0], right + 4), bottom + 3], fill=CAPTION_BG)
    d.text((4, 2), caption, fill=CAPTION_RGB, font=font)
    return out


def caption_of(query_text: str, score: float) -> str:
    return f"{query_text}  {score:.2f}"


def render_snapshot(preview: bytes, xyxy_camera, frame_wh: tuple[int, int], caption: str, quality: int = 85) -> bytes:
    """The snapshot JPEG: the preview frame with the box drawn and the caption."""
    img = draw(Image.open(io.BytesIO(preview)), xyxy_camera, frame_wh, caption)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@dataclass(frozen=True)
class ClipFrame:
    ts_ms: int
    jpeg: bytes | None  # None: the preview expired between listing and reading
    xyxy: tuple[float, float, float, float] | None  # camera pixels; None: no box on this frame


@dataclass(frozen=True)
class ClipInfo:
    duration_s: float
    fps: float
    ticks: int  # frames in the video (a constant-rate grid over the span)
    frames: int  # distinct preview frames shown
    missing_ts: tuple[float, ...]  # grid times with no preview frame near them (expired or never stored)
    bytes: int


def sample_period_ms(times_ms: list[int], default_ms: int = 500) -> int:
    """The preview frames' period: the median gap (they are stored at the camera's sample rate)."""
    gaps = np.diff(sorted(times_ms)) if len(times_ms) >= 2 else np.array([])
    gaps = gaps[gaps > 0]
    return int(np.median(gaps)) if gaps.size else default_ms


def encode_clip(frames: list[ClipFrame], start_ms: int, end_ms: int, period_ms: int, frame_wh: tuple[int, int],
                caption: str, out_path: Path, crf: int = 28) -> ClipInfo:
    """An MP4 of [start_ms, end_ms) on a constant-rate grid at the sample rate: each grid time shows the preview frame
    nearest to it (within half a period, else the last one shown: held, and counted missing). Written to a temporary
    file and renamed into place. Raises ValueError when no frame has a preview."""
    usable = sorted((f for f in frames if f.jpeg is not None), key=lambda f: f.ts_ms)
    if not usable:
        raise ValueError("no preview frames in the span")
    fps = Fraction(1000, max(1, period_ms)).limit_denominator(1000)
    n = max(1, int(round((end_ms - start_ms) / period_ms)))
    first = Image.open(io.BytesIO(usable[0].jpeg))
    w, h = first.size[0] // 2 * 2, first.size[1] // 2 * 2
    tmp = out_path.with_name(out_path.name + ".tmp")
    shown: set[int] = set()
    missing: list[float] = []
    current: np.ndarray | None = None
    j = 0
    with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        st = out.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.options = {"crf": str(crf), "preset": "veryfast", "tune": "stillimage"}
        for k in range(n):
            t = start_ms + k * period_ms
            while j + 1 < len(usable) and abs(usable[j + 1].ts_ms - t) <= abs(usable[j].ts_ms - t):
                j += 1
            f = usable[j]
            near = abs(f.ts_ms - t) <= period_ms // 2
            if not near:
                missing.append(round(t / 1000.0, 3))
            if current is None or (near and f.ts_ms not in shown):
                img = Image.open(io.BytesIO(f.jpeg))
                if img.size != (w, h):
                    img = img.resize((w, h))
                current = np.asarray(draw(img, f.xyxy, frame_wh, caption))
                shown.add(f.ts_ms)
            vf = av.VideoFrame.from_ndarray(current, format="rgb24")
            vf.pts = k
            for pkt in st.encode(vf):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    os.replace(tmp, out_path)
    return ClipInfo(round(n / float(fps), 3), float(fps), n, len(shown), tuple(missing), out_path.stat().st_size)
