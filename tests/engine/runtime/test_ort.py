"""The onnxruntime backend's export cache: exported once per checkpoint, reused after, redone when the weights change."""
from __future__ import annotations

import torch

from engine.model.checkpoint import save_model
from engine.runtime.base import build_backend, resolve_backend
from engine.runtime.ort import cached_export


def test_resolve_backend_when_auto_picks_onnxruntime_here():
    assert resolve_backend("auto") == "onnxruntime" and resolve_backend("torch") == "torch"


def test_cached_export_when_called_again_reuses_it_and_when_the_weights_change_exports_anew(tiny_model_dir, tiny_model, tmp_path):
    cache = tmp_path / "onnx"
    # given a first export
    first = cached_export(tiny_model_dir, cache)
    stamp = (first / "manifest.json").stat().st_mtime_ns
    # when asked again for the same checkpoint, then the same directory is returned untouched
    assert cached_export(tiny_model_dir, cache) == first and (first / "manifest.json").stat().st_mtime_ns == stamp
    # and a backend built from it agrees with torch
    backend = build_backend("auto", tiny_model, model_dir=str(tiny_model_dir), cache_dir=str(cache))
    s = tiny_model.config.vision.image_size
    px = torch.rand(3, 3, s, s)
    with torch.no_grad():
        assert torch.allclose(backend.encode_frames(px), tiny_model.encode_frames(px), atol=1e-4)
    # when the weights change, then another directory is exported
    with torch.no_grad():
        tiny_model.stq.add_(0.01)
    save_model(tiny_model, tiny_model_dir)
    assert cached_export(tiny_model_dir, cache) != first
