"""The onnxruntime backend's export cache: exported once per checkpoint, reused after, redone when the weights change."""
from __future__ import annotations

import pytest
import torch

from engine.model.checkpoint import save_model
from engine.model.graphs import cached_export
from engine.serving.runtime.base import build_backend, resolve_backend
from export.onnx_export import export_onnx


def test_resolve_backend_when_auto_picks_onnxruntime_here():
    assert resolve_backend("auto") == "onnxruntime" and resolve_backend("torch") == "torch"


def test_cached_export_when_called_again_reuses_it_and_when_the_weights_change_exports_anew(tiny_model_dir, tiny_model, tmp_path):
    cache = tmp_path / "onnx"
    # given a first export
    first = cached_export(tiny_model_dir, cache, export_onnx)
    stamp = (first / "manifest.json").stat().st_mtime_ns
    # when asked again for the same checkpoint, then the same directory is returned untouched
    assert cached_export(tiny_model_dir, cache, export_onnx) == first and (first / "manifest.json").stat().st_mtime_ns == stamp
    # and a backend built from it agrees with torch
    backend = build_backend("auto", tiny_model, model_dir=str(tiny_model_dir), cache_dir=str(cache), export=export_onnx)
    s = tiny_model.config.vision.image_size
    px = torch.rand(3, 3, s, s)
    with torch.no_grad():
        assert torch.allclose(backend.encode_frames(px), tiny_model.encode_frames(px), atol=1e-4)
    # when the weights change, then another directory is exported
    with torch.no_grad():
        tiny_model.stq.add_(0.01)
    save_model(tiny_model, tiny_model_dir)
    assert cached_export(tiny_model_dir, cache, export_onnx) != first


def test_build_backend_when_onnxruntime_has_neither_graphs_nor_an_exporter_says_so(tiny_model):
    with pytest.raises(ValueError, match="needs onnx_dir .* or an exporter"):
        build_backend("onnxruntime", tiny_model)


def _cuda_provider() -> bool:
    import onnxruntime

    return torch.cuda.is_available() and "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_provider(), reason="needs CUDA and onnxruntime-gpu (CUDAExecutionProvider)")
def test_ort_backend_when_the_model_is_on_cuda_binds_device_tensors_and_answers_on_the_device(tiny_model_dir, tmp_path):
    from engine.model.checkpoint import load_model
    from engine.model.placement import place, resolve_placement
    from engine.serving.runtime.ort import OrtBackend

    # given the model on CUDA and ONNX Runtime with the CUDA provider
    where = resolve_placement("cuda", "float32")
    model = place(load_model(tiny_model_dir), where)
    backend = OrtBackend(cached_export(tiny_model_dir, tmp_path / "onnx", export_onnx), providers=["CUDAExecutionProvider"],
                         device=where.device, dtype=where.dtype)
    assert backend.bound
    # when frames are encoded and decoded from device tensors
    s = model.config.vision.image_size
    px = torch.rand(3, 3, s, s, device=where.device)
    tokens = backend.encode_frames(px)
    q = torch.randn(2, 5, tokens.shape[-1], device=where.device)
    dec = backend.decode(torch.randn(2, 3, tokens.shape[-1], device=where.device), tokens[None].expand(2, -1, -1, -1),
                         q, torch.ones(2, 5, dtype=torch.long, device=where.device))
    # then the results are on the device and agree with torch
    with torch.no_grad():
        assert tokens.is_cuda and torch.allclose(tokens, model.encode_frames(px), atol=1e-3)
    assert dec.boxes_cxcywh.is_cuda and dec.boxes_cxcywh.shape == (2, 3, 4)
