"""A camera style the training data never shows, for the style-shifted evaluation set.

Training renders spec-v1 scenes with sensor noise of std 0-8, muted backgrounds, no blur, no tone curve and
H.264 at CRF 18-36. A `StyleShift` draws, per clip, from outside those ranges: stronger noise (10-16), a lens
blur (sigma 0.8-1.6 px), a tone curve (gamma 0.65-0.8 or 1.25-1.5) with a brightness offset, a mild colour cast
(gains 0.92-1.08, small enough that no object colour turns into another), a vignette, a JPEG round trip at
quality 20-40 per frame and H.264 at CRF 36-40 for the file. The object geometry and the captions are unchanged,
so the same metrics apply; only the pixels move away from the training distribution.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StyleShift:
    noise: float
    blur_sigma: float
    gamma: float
    brightness: float
    gains: tuple[float, float, float]
    vignette: float  # darkening at the corners, 0-1
    jpeg_quality: int
    crf: int

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "StyleShift":
        gamma = float(rng.uniform(0.65, 0.8) if rng.random() < 0.5 else rng.uniform(1.25, 1.5))
        return cls(noise=float(rng.uniform(10, 16)), blur_sigma=float(rng.uniform(0.8, 1.6)), gamma=gamma,
                   brightness=float(rng.uniform(-20, 20)), gains=tuple(float(g) for g in rng.uniform(0.92, 1.08, 3)),
                   vignette=float(rng.uniform(0.2, 0.45)), jpeg_quality=int(rng.integers(20, 41)), crf=int(rng.integers(36, 41)))

    def apply(self, frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One RGB uint8 frame (H, W, 3) through the shifted camera."""
        img = frame.astype(np.float32)
        img = _blur(img, self.blur_sigma)
        h, w = img.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((xx / max(w - 1, 1) - 0.5) ** 2 + (yy / max(h - 1, 1) - 0.5) ** 2) / 0.5  # 0 centre, 1 corners
        img *= (1.0 - self.vignette * r2)[..., None]
        img = 255.0 * np.power(np.clip(img / 255.0, 0, 1), self.gamma) + self.brightness
        img *= np.asarray(self.gains, dtype=np.float32)
        img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(self.noise)
        return _jpeg(np.clip(img, 0, 255).astype(np.uint8), self.jpeg_quality)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (edges repeated)."""
    radius = max(1, int(round(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1, dtype=np.float32) / sigma) ** 2)
    k /= k.sum()
    for axis in (0, 1):
        pad = [(0, 0)] * 3
        pad[axis] = (radius, radius)
        padded = np.pad(img, pad, mode="edge")
        n = img.shape[axis]
        img = sum(k[j] * np.take(padded, np.arange(j, j + n), axis=axis) for j in range(len(k)))
    return img


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))
