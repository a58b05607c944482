"""ONNX export of the two parts that run outside PyTorch: the vision encoder (+ projector + pooling)
and the space decoder. Dynamic frame count, batch and question length; a manifest beside them.
File names, the manifest's check and the export cache are the graphs' contract, shared with the runtime:
`engine/model/graphs.py`."""
from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from engine.model.checkpoint import load_model
from engine.model.config import DECODER_MAX_PAIRS
from engine.model.graphs import (DECODER_FILE, DECODER_INPUTS, DECODER_OUTPUTS, MANIFEST, ONNX_FORMAT, OPSET, VISION_FILE,
                                 ManifestError, validate_manifest)
from engine.model.model_dir import file_sha256
from engine.model.preprocess import frames_to_pixels, preprocessor_of
from engine.model.spacevllm import SpaceVLLM

log = logging.getLogger(__name__)

# the export tool's callers (the CLI) also read the manifest's check here
__all__ = ["ExportResult", "ManifestError", "export_onnx", "parity", "validate_manifest"]


class VisionGraph(nn.Module):
    """frames (N, 3, S, S) in [0, 1] -> projected frame tokens (N, G, D) (pooled for the LLM in PyTorch)."""

    def __init__(self, model: SpaceVLLM) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_frames(pixels)


class DecoderGraph(nn.Module):
    def __init__(self, model: SpaceVLLM) -> None:
        super().__init__()
        self.decoder = model.space_decoder

    def forward(self, stq_states, visual_tokens, question_states, question_mask):
        out = self.decoder(stq_states, visual_tokens, question_states, question_mask)
        return out.boxes_cxcywh, out.presence_logits, out.heatmap_logits


@dataclass(frozen=True)
class ExportResult:
    directory: Path
    manifest: dict


def _io(model_proto: onnx.ModelProto) -> dict:
    def describe(values):
        out = []
        for v in values:
            t = v.type.tensor_type
            out.append({"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
                        "shape": [d.dim_param or d.dim_value for d in t.shape.dim]})
        return out

    return {"inputs": describe(model_proto.graph.input), "outputs": describe(model_proto.graph.output)}


def export_onnx(model_dir: str | Path, out: str | Path, progress=lambda msg: None) -> ExportResult:
    from torch.export import Dim

    model = load_model(model_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    s, d, p = cfg.vision.image_size, model.language_model.config.hidden_size, cfg.frame_tokens
    frames = Dim("frames", min=1, max=max(cfg.max_frames, 64))
    batch = Dim("batch", min=1, max=DECODER_MAX_PAIRS)
    qlen = Dim("question_len", min=1, max=max(cfg.max_question_tokens, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        progress(f"exporting {VISION_FILE} (frames -> {p} tokens x {d})")
        torch.onnx.export(VisionGraph(model).eval(), (torch.rand(4, 3, s, s),), str(out / VISION_FILE), dynamo=True,
                          input_names=["pixels"], output_names=["visual_tokens"], dynamic_shapes={"pixels": {0: frames}},
                          opset_version=OPSET, verbose=False, external_data=False)
        progress(f"exporting {DECODER_FILE}")
        example = (torch.rand(2, 4, d), torch.rand(2, 4, p, d), torch.rand(2, 7, d), torch.ones(2, 7, dtype=torch.long))
        torch.onnx.export(DecoderGraph(model).eval(), example, str(out / DECODER_FILE), dynamo=True,
                          input_names=DECODER_INPUTS, output_names=DECODER_OUTPUTS,
                          dynamic_shapes={"stq_states": {0: batch, 1: frames}, "visual_tokens": {0: batch, 1: frames},
                                          "question_states": {0: batch, 1: qlen}, "question_mask": {0: batch, 1: qlen}},
                          opset_version=OPSET, verbose=False, external_data=False)
    graphs = {}
    for name in (VISION_FILE, DECODER_FILE):
        proto = onnx.load(str(out / name))
        onnx.checker.check_model(proto, full_check=True)
        graphs[name] = {**_io(proto), "opset": max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                        "sha256": file_sha256(out / name)}
    manifest = {
        "format": ONNX_FORMAT,
        "exporter": f"torch.onnx (dynamo) {torch.__version__}, onnx {onnx.__version__}",
        "opset": OPSET,
        "source_checkpoint": {"path": str(Path(model_dir).resolve()), "sha256": file_sha256(Path(model_dir) / "model.safetensors")},
        "model_config": cfg.to_dict(),
        # the vision graph takes pixels resized and rescaled by this (it normalises them itself): engine/model/preprocess.py
        "preprocessor": preprocessor_of(model).to_dict(),
        "graphs": graphs,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    progress(f"wrote {out / MANIFEST}")
    return ExportResult(out, manifest)


def parity(model_dir: str | Path, onnx_dir: str | Path, frame_counts=(1, 4, 16), real_frames: np.ndarray | None = None,
           seed: int = 0) -> dict[str, float]:
    """Max abs difference ONNX Runtime (CPU) vs PyTorch, per graph, over random (and real) frames (N, S, S, 3)."""
    import onnxruntime as ort  # optional (the `cpu` / `gpu` extras): only the parity check needs it here

    model = load_model(model_dir)
    d = Path(onnx_dir)
    so = ort.SessionOptions()
    vis_sess = ort.InferenceSession(str(d / VISION_FILE), so, providers=["CPUExecutionProvider"])
    dec_sess = ort.InferenceSession(str(d / DECODER_FILE), so, providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(seed)
    s = model.config.vision.image_size
    worst = {"vision_encoder": 0.0, "space_decoder": 0.0}
    inputs = [torch.rand(n, 3, s, s, generator=g) for n in frame_counts]
    if real_frames is not None:
        inputs.append(frames_to_pixels(real_frames))
    with torch.no_grad():
        for px in inputs:
            ref = model.encode_frames(px)
            got = vis_sess.run(None, {"pixels": px.numpy()})[0]
            worst["vision_encoder"] = max(worst["vision_encoder"], float(np.abs(got - ref.numpy()).max()))
            n = px.shape[0]
            for b, lq in ((1, 5), (3, 11)):
                stq = torch.randn(b, n, ref.shape[-1], generator=g)
                q = torch.randn(b, lq, ref.shape[-1], generator=g)
                mask = torch.ones(b, lq, dtype=torch.long)
                mask[0, lq // 2:] = 0 if b > 1 else 1
                vis = ref[None].expand(b, -1, -1, -1).contiguous()
                want = DecoderGraph(model)(stq, vis, q, mask)
                got = dec_sess.run(None, dict(zip(DECODER_INPUTS, (stq.numpy(), vis.numpy(), q.numpy(), mask.numpy()))))
                diff = max(float(np.abs(a - w.numpy()).max()) for a, w in zip(got, want))
                worst["space_decoder"] = max(worst["space_decoder"], diff)
    return worst
