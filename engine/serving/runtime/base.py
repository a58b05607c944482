"""One interface, three implementations. `encode_frames` maps pixels to projected frame tokens
(`SpaceVLLM.encode_frames`); `decode` is the space decoder. Both take torch tensors on the model's device and
return them there (frame tokens in the model's dtype): a CUDA model's tensors never go through host memory with
the torch, TensorRT or ONNX Runtime CUDA backends."""
from __future__ import annotations

import logging
from typing import Protocol

import torch

from engine.model.graphs import Exporter
from engine.model.placement import placement_of
from engine.model.space_decoder import SpaceDecoderOutput

log = logging.getLogger(__name__)


class Backend(Protocol):
    name: str

    def encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:  # (N, 3, S, S) -> (N, G, D)
        ...

    def decode(self, stq: torch.Tensor, vis: torch.Tensor, question: torch.Tensor, mask: torch.Tensor) -> SpaceDecoderOutput:
        ...


class TorchBackend:
    name = "torch"

    def __init__(self, model) -> None:
        self.model = model

    @torch.no_grad()
    def encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_frames(pixels)

    @torch.no_grad()
    def decode(self, stq, vis, question, mask) -> SpaceDecoderOutput:
        return self.model.space_decoder(stq, vis, question, mask)


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(name: str) -> str:
    """`auto`: onnxruntime when it is installed (the exported encoder and decoder run 1.6-1.8x faster than eager
    torch on a CPU, bench/backends.py), else torch."""
    if name == "auto":
        return "onnxruntime" if onnxruntime_available() else "torch"
    return name


def build_backend(name: str, model, onnx_dir: str | None = None, engine_dir: str | None = None,
                  model_dir: str | None = None, cache_dir: str | None = None, threads: int = 0,
                  export: Exporter | None = None) -> Backend:
    """`torch`, `onnxruntime` (graphs from `onnx_dir`; else made by `export` once per checkpoint into `cache_dir`, or
    on the fly), `tensorrt` (needs `engine_dir`), or `auto` (see resolve_backend). `export`: the ONNX exporter
    (`export.onnx_export.export_onnx`), passed in by the app layer so that serving never imports the export tool."""
    name = resolve_backend(name)
    if name == "torch":
        return TorchBackend(model)
    if name == "onnxruntime":
        from engine.serving.runtime.ort import OrtBackend

        return OrtBackend.from_model(model, onnx_dir, model_dir, cache_dir, threads, export)
    if name == "tensorrt":
        from engine.serving.runtime.trt import TensorRTBackend

        if engine_dir is None:
            raise ValueError("the tensorrt backend needs engine_dir (built by `spacevllm export tensorrt`)")
        where = placement_of(model)
        return TensorRTBackend(engine_dir, device=where.device, dtype=where.dtype)
    raise ValueError(f"unknown backend {name!r} (auto, torch, onnxruntime, tensorrt)")
