"""ONNX Runtime backend: providers TensorRT, CUDA, CPU in that order of preference, as available."""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from engine.model.space_decoder import SpaceDecoderOutput

log = logging.getLogger(__name__)

PREFERENCE = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def choose_providers(available: list[str], wanted: list[str] | None = None) -> list[str]:
    wanted = wanted or PREFERENCE
    chosen = [p for p in wanted if p in available]
    if not chosen:
        raise RuntimeError(f"none of the ONNX Runtime providers {wanted} is available (have {available})")
    if chosen[0] != wanted[0]:
        log.warning("ONNX Runtime: %s not available, falling back to %s", ", ".join(wanted[: wanted.index(chosen[0])]), chosen[0])
    return chosen


class OrtBackend:
    name = "onnxruntime"

    def __init__(self, onnx_dir: str | Path, providers: list[str] | None = None, threads: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise RuntimeError("onnxruntime is not installed: pip install '.[cpu]' (or '.[gpu]' on a CUDA host)") from None
        from export.onnx_export import DECODER_FILE, VISION_FILE, validate_manifest

        self.manifest = validate_manifest(onnx_dir)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # the LLM runs in PyTorch between calls: spinning ORT worker threads would steal its cores
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            so.intra_op_num_threads = threads
        self.providers = choose_providers(ort.get_available_providers(), providers)
        d = Path(onnx_dir)
        self.vision = ort.InferenceSession(str(d / VISION_FILE), so, providers=self.providers)
        self.decoder = ort.InferenceSession(str(d / DECODER_FILE), so, providers=self.providers)

    @classmethod
    def from_model(cls, model, onnx_dir: str | Path | None, model_dir: str | Path | None = None,
                   cache_dir: str | Path | None = None, threads: int = 0) -> "OrtBackend":
        """Use exported graphs from `onnx_dir`; else the graphs exported from `model_dir` into `cache_dir` (once per
        checkpoint: the directory is named by its sha256); else export the loaded model into a temp dir first."""
        if onnx_dir is None and model_dir is not None and cache_dir is not None:
            onnx_dir = cached_export(model_dir, cache_dir)
        if onnx_dir is None:
            from engine.model.checkpoint import save_model
            from export.onnx_export import export_onnx

            tmp = Path(tempfile.mkdtemp(prefix="spacevllm-onnx-"))
            save_model(model, tmp / "model")
            export_onnx(tmp / "model", tmp / "onnx")
            onnx_dir = tmp / "onnx"
            log.info("exported ONNX graphs to %s", onnx_dir)
        return cls(onnx_dir, threads=threads)

    def encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.vision.run(None, {"pixels": pixels.detach().numpy().astype(np.float32, copy=False)})[0]
        return torch.from_numpy(out)

    def decode(self, stq, vis, question, mask) -> SpaceDecoderOutput:
        feeds = {"stq_states": stq.detach().contiguous().numpy(), "visual_tokens": vis.detach().contiguous().numpy(),
                 "question_states": question.detach().contiguous().numpy(), "question_mask": mask.detach().to(torch.long).numpy()}
        boxes, presence, heat = self.decoder.run(None, feeds)
        return SpaceDecoderOutput(torch.from_numpy(boxes), torch.from_numpy(presence), torch.from_numpy(heat))


def cached_export(model_dir: str | Path, cache_dir: str | Path) -> Path:
    """`<cache_dir>/<sha256 of the weights, 16 hex>`: exported on first use (into a temporary sibling, then renamed, so
    a crash never leaves a half export), reused while its manifest matches the checkpoint."""
    import shutil

    from engine.model.checkpoint import file_sha256
    from export.onnx_export import ManifestError, export_onnx, validate_manifest

    target = Path(cache_dir) / file_sha256(Path(model_dir) / "model.safetensors")[:16]
    try:
        validate_manifest(target, model_dir)
        return target
    except ManifestError:
        pass
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    log.info("exporting the model's vision encoder and space decoder to ONNX (once per checkpoint) in %s", target)
    export_onnx(model_dir, tmp)
    shutil.rmtree(target, ignore_errors=True)
    try:
        tmp.rename(target)
    except OSError:  # another process exported it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return target
