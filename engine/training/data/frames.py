"""Frame preprocessing for training: decoded RGB frames -> frames at the model's input size.

Training resizes frames here (`to_model_frames`, at decode time) with the model's own `ImagePreprocessor`
(`engine.model.preprocess`: the tiny model's area resize, or the base checkpoint's preprocessor_config.json), the
same rule as evaluation and the engine. `collate` then makes them [0, 1] floats, CHW
(`engine.model.preprocess.frames_to_pixels`); the vision tower normalises (mean/std) itself.
"""
from __future__ import annotations

import numpy as np

from engine.model.preprocess import ImagePreprocessor


def to_model_frames(frames_uint8_hwc: np.ndarray, preprocessor: ImagePreprocessor | int) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> (N, S, S, 3) uint8, resized by the model's preprocessor (an int S: the tiny rule at
    S). Frames already S x S are returned unchanged (a copy), so synthetic samples, rendered at the model size, pass
    through exactly."""
    pre = ImagePreprocessor.tiny(preprocessor) if isinstance(preprocessor, int) else preprocessor
    frames = np.asarray(frames_uint8_hwc)
    assert frames.ndim == 4 and frames.shape[-1] == 3 and frames.dtype == np.uint8, f"expected (N, H, W, 3) uint8, got {frames.shape} {frames.dtype}"
    if frames.shape[1:3] == (pre.size, pre.size):
        return frames.copy()
    return np.stack([pre.resize(f) for f in frames])
