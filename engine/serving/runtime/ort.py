"""ONNX Runtime backend: providers TensorRT, CUDA, CPU in that order of preference, as available.

With a CUDA (or TensorRT) provider and a model on a CUDA device, inputs and outputs are bound to torch CUDA tensors
(`io_binding` with their `data_ptr`), ONNX Runtime runs on torch's current CUDA stream, and the results stay on the
device for the LLM: no round trip through host memory. Otherwise (CPU provider) tensors go through numpy as before,
and results are moved to the model's device and dtype (a no-op for a CPU float32 model).

Graphs not exported yet are made by the exporter the caller passes in (`export.onnx_export.export_onnx`, from the
app layer): serving reads the graphs' contract (`engine/model/graphs.py`) and never imports the export tool."""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from engine.model.checkpoint import save_model
from engine.model.config import SpaceVLLMConfig
from engine.model.graphs import DECODER_FILE, VISION_FILE, Exporter, cached_export, export_quietly, validate_manifest
from engine.model.placement import placement_of
from engine.model.space_decoder import SpaceDecoderOutput

log = logging.getLogger(__name__)

PREFERENCE = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
DEVICE_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")  # run on a CUDA device: io_binding
_NP_DTYPES = {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64, torch.int32: np.int32}


def choose_providers(available: list[str], wanted: list[str] | None = None, device_type: str = "cpu") -> list[str]:
    """The providers to use, in order. Falling back is worth a warning only when it is a surprise: providers asked
    for by name, or a model on a CUDA device; a CPU-only host without the GPU providers is the expected case (the
    backend names the provider it uses at INFO)."""
    surprise = wanted is not None or device_type == "cuda"
    wanted = wanted or PREFERENCE
    chosen = [p for p in wanted if p in available]
    if not chosen:
        raise RuntimeError(f"none of the ONNX Runtime providers {wanted} is available (have {available})")
    if chosen[0] != wanted[0]:
        (log.warning if surprise else log.debug)("ONNX Runtime: %s not available, falling back to %s", ", ".join(wanted[: wanted.index(chosen[0])]), chosen[0])
    return chosen


class OrtBackend:
    name = "onnxruntime"

    def __init__(self, onnx_dir: str | Path, providers: list[str] | None = None, threads: int = 0,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise RuntimeError("onnxruntime is not installed: pip install '.[cpu]' (or '.[gpu]' on a CUDA host)") from None
        self.manifest = validate_manifest(onnx_dir)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # the LLM runs in PyTorch between calls: spinning ORT worker threads would steal its cores
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            so.intra_op_num_threads = threads
        self.device = torch.device(device) if device is not None else torch.device("cpu")  # the model's: results go there
        self.providers = choose_providers(ort.get_available_providers(), providers, self.device.type)
        self.dtype = dtype or torch.float32
        # device tensors in and out when the graphs run on the GPU the model is on
        self.bound = self.providers[0] in DEVICE_PROVIDERS and self.device.type == "cuda"
        d = Path(onnx_dir)
        providers_arg = self._provider_options() if self.bound else self.providers
        self.vision = ort.InferenceSession(str(d / VISION_FILE), so, providers=providers_arg)
        self.decoder = ort.InferenceSession(str(d / DECODER_FILE), so, providers=providers_arg)
        cfg = SpaceVLLMConfig.from_dict(self.manifest["model_config"])
        self.token_shape = (cfg.frame_tokens, cfg.llm.hidden_size)  # one frame's output of the vision graph
        log.info("ONNX Runtime: %s%s", ", ".join(self.providers), f" (io_binding on {self.device})" if self.bound else "")

    def _provider_options(self) -> list:
        """The GPU providers on the model's device and on torch's current stream (so ONNX Runtime reads what torch
        wrote and torch reads what it wrote, in order, without host synchronisation in between)."""
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        stream = torch.cuda.current_stream(index).cuda_stream
        opts = {"device_id": str(index), "user_compute_stream": str(stream)}
        return [(p, opts) if p in DEVICE_PROVIDERS else p for p in self.providers]

    def _run_bound(self, session, feeds: dict[str, torch.Tensor], outputs: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
        """Run `session` on device tensors: inputs bound by pointer, outputs preallocated as torch CUDA float32 tensors."""
        binding = session.io_binding()
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        kept = []  # the bound tensors must outlive the run
        for name, t in feeds.items():
            t = t.detach().to(self.device).contiguous()
            kept.append(t)
            binding.bind_input(name, "cuda", index, _NP_DTYPES[t.dtype], tuple(t.shape), t.data_ptr())
        out = {}
        for name, shape in outputs.items():
            out[name] = torch.empty(shape, dtype=torch.float32, device=self.device)
            binding.bind_output(name, "cuda", index, np.float32, tuple(shape), out[name].data_ptr())
        session.run_with_iobinding(binding)
        return out

    @classmethod
    def from_model(cls, model, onnx_dir: str | Path | None, model_dir: str | Path | None = None,
                   cache_dir: str | Path | None = None, threads: int = 0, export: Exporter | None = None) -> "OrtBackend":
        """Use exported graphs from `onnx_dir`; else `export` them from `model_dir` into `cache_dir` (once per
        checkpoint: the directory is named by its sha256); else `export` the loaded model into a temp dir first."""
        if onnx_dir is None:
            if export is None:
                raise ValueError("the onnxruntime backend needs onnx_dir (from `spacevllm export onnx`) or an exporter")
            if model_dir is not None and cache_dir is not None:
                onnx_dir = cached_export(model_dir, cache_dir, export)
            else:
                tmp = Path(tempfile.mkdtemp(prefix="spacevllm-onnx-"))
                save_model(model, tmp / "model")
                export_quietly(export, tmp / "model", tmp / "onnx", tmp / "onnx")
                onnx_dir = tmp / "onnx"
        where = placement_of(model)
        return cls(onnx_dir, threads=threads, device=where.device, dtype=where.dtype)

    def encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.bound:
            out = self._run_bound(self.vision, {"pixels": pixels.float()}, {"visual_tokens": (pixels.shape[0], *self.token_shape)})
            return out["visual_tokens"].to(self.dtype)
        out = self.vision.run(None, {"pixels": _host(pixels).astype(np.float32, copy=False)})[0]
        return torch.from_numpy(out).to(self.device, self.dtype)

    def decode(self, stq, vis, question, mask) -> SpaceDecoderOutput:
        if self.bound:
            b, f = stq.shape[:2]
            out = self._run_bound(self.decoder, {"stq_states": stq.float(), "visual_tokens": vis.float(),
                                                 "question_states": question.float(), "question_mask": mask.long()},
                                  {"boxes_cxcywh": (b, f, 4), "presence_logits": (b, f), "heatmap_logits": (b, f, vis.shape[2])})
            return SpaceDecoderOutput(out["boxes_cxcywh"], out["presence_logits"], out["heatmap_logits"])
        feeds = {"stq_states": _host(stq), "visual_tokens": _host(vis), "question_states": _host(question),
                 "question_mask": mask.detach().to(torch.long).cpu().numpy()}
        boxes, presence, heat = self.decoder.run(None, feeds)
        return SpaceDecoderOutput(*(torch.from_numpy(x).to(self.device) for x in (boxes, presence, heat)))


def _host(t: torch.Tensor) -> np.ndarray:
    """A float tensor as a contiguous float32 numpy array on the host (a no-op view for a CPU float32 tensor)."""
    return t.detach().contiguous().cpu().float().numpy()
