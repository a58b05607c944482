"""TensorRT backend: deserialises the two engines, checks their manifest against the running
TensorRT and GPU, binds device buffers (torch CUDA tensors) and runs on a CUDA stream."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

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

    def run(self, inputs: dict[str, torch.Tensor], stream: torch.cuda.Stream) -> dict[str, torch.Tensor]:
        trt = self.trt
        outputs = {}
        for name in self.names:
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                t = inputs[name].contiguous().cuda(non_blocking=True)
                inputs[name] = t
                self.context.set_input_shape(name, tuple(t.shape))
                self.context.set_tensor_address(name, t.data_ptr())
        for name in self.names:
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
                shape = tuple(self.context.get_tensor_shape(name))
                dtype = _DTYPES[str(self.engine.get_tensor_dtype(name)).split(".")[-1]]
                outputs[name] = torch.empty(shape, dtype=dtype, device="cuda")
                self.context.set_tensor_address(name, outputs[name].data_ptr())
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return outputs


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, engine_dir: str | Path) -> None:
        from export.tensorrt import check_engine_manifest, require_tensorrt

        trt, gpu = require_tensorrt()
        self.manifest = check_engine_manifest(engine_dir, trt.__version__, gpu)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        d = Path(engine_dir)
        self.vision = _Engine(trt, runtime, d / "vision_encoder.plan")
        self.decoder = _Engine(trt, runtime, d / "space_decoder.plan")
        self.stream = torch.cuda.Stream()

    def encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vision.run({"pixels": pixels.float()}, self.stream)["visual_tokens"].float().cpu()

    def decode(self, stq, vis, question, mask) -> SpaceDecoderOutput:
        out = self.decoder.run({"stq_states": stq.float(), "visual_tokens": vis.float(), "question_states": question.float(),
                                "question_mask": mask.long()}, self.stream)
        return SpaceDecoderOutput(out["boxes_cxcywh"].float().cpu(), out["presence_logits"].float().cpu(),
                                  out["heatmap_logits"].float().cpu())
