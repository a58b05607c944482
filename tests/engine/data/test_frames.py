"""Training's frame preprocessing: resize to the model's square, [0, 1] floats, CHW."""
from __future__ import annotations

import numpy as np
import torch

from engine.data.frames import to_model_frames, to_model_pixels


def test_to_model_pixels_resizes_scales_and_moves_channels_first():
    frames = np.zeros((2, 48, 64, 3), dtype=np.uint8)
    frames[:, :, :, 0] = 255
    px = to_model_pixels(frames, 32)
    assert px.shape == (2, 3, 32, 32) and px.dtype == torch.float32
    assert torch.allclose(px[:, 0], torch.ones(2, 32, 32)) and float(px[:, 1:].abs().max()) == 0.0


def test_to_model_frames_when_frames_already_have_the_model_size_returns_them_unchanged():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    out = to_model_frames(frames, 32)
    assert np.array_equal(out, frames) and out is not frames
    assert torch.equal(to_model_pixels(frames, 32), torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255)
