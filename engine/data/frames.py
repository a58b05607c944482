"""Frame preprocessing for training: decoded RGB frames -> what the model's vision tower takes.

The one place training turns frames into pixels (`to_model_frames` at decode time, `to_model_pixels`
in `collate`): area-resize to the model's square `vision.image_size`, then [0, 1] floats, CHW. The
vision tower normalises (mean/std) itself. When preprocessing is read from a checkpoint's
`preprocessor_config.json`, this module is what changes.
"""
from __future__ import annotations

import numpy as np
import torch

from stream.imagecodec import resize


def to_model_frames(frames_uint8_hwc: np.ndarray, image_size: int) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> (N, S, S, 3) uint8 (S = image_size). Frames already S x S are returned
    unchanged (a copy), so synthetic samples, rendered at the model size, pass through exactly."""
    frames = np.asarray(frames_uint8_hwc)
    assert frames.ndim == 4 and frames.shape[-1] == 3 and frames.dtype == np.uint8, f"expected (N, H, W, 3) uint8, got {frames.shape} {frames.dtype}"
    if frames.shape[1:3] == (image_size, image_size):
        return frames.copy()
    return np.stack([resize(f, image_size) for f in frames])


def to_model_pixels(frames_uint8_hwc: np.ndarray, image_size: int) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, S, S) float32 in [0, 1], the vision tower's input."""
    frames = to_model_frames(frames_uint8_hwc, image_size)
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0  # (N, 3, S, S)
