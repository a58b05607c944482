"""The TensorRT backend keeps a CUDA model's tensors on the device (needs a GPU and TensorRT)."""
from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_tensorrt_backend_when_the_model_is_on_cuda_answers_on_the_device_in_its_dtype(tiny_model_dir, tmp_path):
    pytest.importorskip("tensorrt")
    from engine.model.checkpoint import load_model
    from engine.model.placement import place, resolve_placement
    from engine.serving.runtime.trt import TensorRTBackend
    from export.onnx_export import export_onnx
    from export.tensorrt import build_engines

    # given FP16 engines and the model on CUDA in bfloat16
    export_onnx(tiny_model_dir, tmp_path / "onnx")
    build_engines(tmp_path / "onnx", tmp_path / "trt", fp16=True)
    where = resolve_placement("cuda", "bfloat16")
    model = place(load_model(tiny_model_dir), where)
    backend = TensorRTBackend(tmp_path / "trt", device=where.device, dtype=where.dtype)
    # when device pixels are encoded
    s = model.config.vision.image_size
    px = torch.rand(4, 3, s, s, device=where.device, dtype=where.dtype)
    tokens = backend.encode_frames(px)
    # then the tokens are on the model's device in its dtype, close to torch's
    assert tokens.device == where.device and tokens.dtype == torch.bfloat16
    with torch.no_grad():
        assert (tokens.float() - model.encode_frames(px).float()).abs().max() < 0.1
