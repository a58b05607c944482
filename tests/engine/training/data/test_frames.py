"""Training's frame preprocessing: resize to the model's square (then [0, 1] floats, CHW, as collate makes them)."""
from __future__ import annotations

import numpy as np
import torch

from engine.model.preprocess import frames_to_pixels
from engine.training.data.frames import to_model_frames


def test_to_model_frames_then_pixels_resizes_scales_and_moves_channels_first():
    frames = np.zeros((2, 48, 64, 3), dtype=np.uint8)
    frames[:, :, :, 0] = 255
    px = frames_to_pixels(to_model_frames(frames, 32))
    assert px.shape == (2, 3, 32, 32) and px.dtype == torch.float32
    assert torch.allclose(px[:, 0], torch.ones(2, 32, 32)) and float(px[:, 1:].abs().max()) == 0.0


def test_to_model_frames_when_frames_already_have_the_model_size_returns_them_unchanged():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    out = to_model_frames(frames, 32)
    assert np.array_equal(out, frames) and out is not frames


def test_to_model_frames_with_a_base_checkpoints_preprocessor_resizes_by_its_filter():
    from engine.model.preprocess import ImagePreprocessor, Resample

    # given real-size frames and a SigLIP-style preprocessor (bicubic to 32 px)
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    pre = ImagePreprocessor(32, Resample.BICUBIC)
    # when training preprocesses them
    out = to_model_frames(frames, pre)
    # then each frame is exactly what the engine's preprocessor makes of it (and not the tiny rule's area resize)
    assert all(np.array_equal(o, pre.resize(f)) for o, f in zip(out, frames))
    assert not np.array_equal(out, to_model_frames(frames, 32))
