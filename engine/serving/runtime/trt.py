"""TensorRT backend: deserialises the two engines, checks their manifest against the running
TensorRT and GPU, binds device buffers (torch CUDA tensors) and runs on a CUDA stream.

Inputs are taken where the model made them (its CUDA device: no copy) and outputs stay on that device, in the
model's dtype, for the LLM: no round trip through host memory. The engines' stream waits for torch's current
stream before it reads, and torch's waits for the engines' before it reads the outputs (no host synchronisation)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from engine.model.graphs import DECODER_ENGINE, VISION_ENGINE, check_engine_manifest, require_tensorrt
from engine.model.space_decoder import SpaceDecoderOutput

log = logging.getLogger(__name__)

_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "INT64": torch.int64, "INT32": torch.int32}


class _Engine:
    def __init__(self, trt, runtime, path: Path) -> None:
        self.trt = trt
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not deserialise {path}")
        self.context = self.engine.create_execution_context()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]

    def _dtype(self, name: str) -> torch.dtype:
        return _DTYPES[str(self.engine.get_tensor_dtype(name)).split(".")[-1]]

    def run(self, inputs: dict[str, torch.Tensor], stream: torch.cuda.Stream, device: torch.device) -> dict[str, torch.Tensor]:
        trt = self.trt
        outputs = {}
        bound = []
        for name in self.names:
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                # on the device already (the model's): only a dtype cast, if the engine's input differs
                t = inputs[name].to(device=device, dtype=self._dtype(name)).contiguous()
                bound.append(t)
                self.context.set_input_shape(name, tuple(t.shape))
                self.context.set_tensor_address(name, t.data_ptr())
        for name in self.names:
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
                shape = tuple(self.context.get_tensor_shape(name))
                outputs[name] = torch.empty(shape, dtype=self._dtype(name), device=device)
                self.context.set_tensor_address(name, outputs[name].data_ptr())
        current = torch.cuda.current_stream(device)
        stream.wait_stream(current)  # the inputs torch wrote are ready before the engine reads them
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        for t in [*bound, *outputs.values()]:
            t.record_stream(stream)  # the caching allocator must not reuse them before the engine is done
        current.wait_stream(stream)  # torch reads the outputs after the engine wrote them
        return outputs


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, engine_dir: str | Path, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        trt, gpu = require_tensorrt()
        self.manifest = check_engine_manifest(engine_dir, trt.__version__, gpu)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        d = Path(engine_dir)
        self.vision = _Engine(trt, runtime, d / VISION_ENGINE)
        self.decoder = _Engine(trt, runtime, d / DECODER_ENGINE)
        # the model's device (a CPU model still gets CUDA engines: results then come back to the host for it)
        self.model_device = torch.device(device) if device is not None else torch.device("cpu")
        self.device = self.model_device if self.model_device.type == "cuda" else torch.device("cuda", torch.cuda.current_device())
        self.dtype = dtype or torch.float32
        self.stream = torch.cuda.Stream(self.device)

    def encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.cuda.device(self.device):
            out = self.vision.run({"pixels": pixels}, self.stream, self.device)["visual_tokens"]
        return out.to(self.model_device, self.dtype)

    def decode(self, stq, vis, question, mask) -> SpaceDecoderOutput:
        with torch.cuda.device(self.device):
            out = self.decoder.run({"stq_states": stq, "visual_tokens": vis, "question_states": question,
                                    "question_mask": mask}, self.stream, self.device)
        return SpaceDecoderOutput(*(out[k].float().to(self.model_device) for k in ("boxes_cxcywh", "presence_logits", "heatmap_logits")))
