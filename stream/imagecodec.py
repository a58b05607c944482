"""Frames as encoded image bytes (PNG or JPEG) through PyAV: never pickled arrays."""
from __future__ import annotations

from fractions import Fraction

import av
import numpy as np


# How a frame is scaled to the model's input: "area" (the tiny model's rule: FFmpeg's area averaging) or one of
# PIL's filters (what transformers' image processors use: a checkpoint's preprocessor_config.json names one).
RESAMPLES = ("area", "nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


def resize(image: np.ndarray, size: int, resample: str = "area") -> np.ndarray:
    """Resize an RGB uint8 image to size x size (the model input): area-averaged, or with the named PIL filter
    (exactly as transformers' PIL image processors do it)."""
    if resample == "area":
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        return vf.reformat(width=size, height=size, format="rgb24", interpolation="AREA").to_ndarray()
    if resample not in RESAMPLES:
        raise ValueError(f"unknown resample {resample!r} (one of {', '.join(RESAMPLES)})")
    from PIL import Image

    filters = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
               "lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((size, size), filters[resample]))


def encode_image(image: np.ndarray, fmt: str = "png") -> bytes:
    h, w = image.shape[:2]
    if fmt == "png":
        ctx = av.CodecContext.create("png", "w")
        ctx.width, ctx.height, ctx.pix_fmt = w, h, "rgb24"
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    elif fmt == "jpeg":
        ctx = av.CodecContext.create("mjpeg", "w")
        ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuvj420p"
        ctx.time_base = Fraction(1, 25)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24").reformat(format="yuvj420p")
    else:
        raise ValueError(f"unknown image format {fmt!r} (png or jpeg)")
    packets = list(ctx.encode(frame)) + list(ctx.encode(None))
    return b"".join(bytes(p) for p in packets)


def decode_image(data: bytes) -> np.ndarray:
    """PNG or JPEG bytes -> RGB uint8 (H, W, 3). Raises ValueError on anything else."""
    codec = "png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "mjpeg" if data[:2] == b"\xff\xd8" else None
    if codec is None:
        raise ValueError("frame bytes are neither PNG nor JPEG")
    ctx = av.CodecContext.create(codec, "r")
    frames = ctx.decode(av.Packet(data))
    if not frames:
        raise ValueError("frame bytes did not decode")
    return frames[0].to_ndarray(format="rgb24")
