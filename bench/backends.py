"""torch vs onnxruntime (and TensorRT FP16 on a GPU) for the exported parts, side by side in one run:
the vision encoder on 16 frames, the space decoder (4 questions x 16 frames), and one whole window with 4 queries.

    .venv/bin/python bench/backends.py [--model models/tiny] [--repeats 20]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import median_time  # noqa: E402
from engine.model.checkpoint import load_model  # noqa: E402
from engine.serving.runtime import TorchBackend  # noqa: E402
from engine.serving.runtime.ort import OrtBackend  # noqa: E402
from engine.contracts.settings import DEFAULT_MODEL_DIR  # noqa: E402
from export.onnx_export import export_onnx  # noqa: E402

QUESTIONS = ["the red circle moving right", "the yellow triangle moving down", "the blue square", "the green triangle moving up"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=DEFAULT_MODEL_DIR)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0, help="torch and ONNX Runtime threads (0: their defaults; `up` uses 1 on 2 cores)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model)
    onnx_dir = Path(tempfile.mkdtemp()) / "onnx"
    export_onnx(args.model, onnx_dir)
    backends = {"torch": TorchBackend(model), "onnxruntime": OrtBackend(onnx_dir, threads=args.threads)}
    try:
        from engine.serving.runtime.trt import TensorRTBackend
        from export.tensorrt import build_engines

        build_engines(onnx_dir, onnx_dir / "trt", fp16=True)
        backends["tensorrt-fp16"] = TensorRTBackend(onnx_dir / "trt")
    except Exception as exc:  # no GPU / no TensorRT here: say so and go on
        print(f"(TensorRT skipped: {exc})")
    s = model.config.vision.image_size
    px = torch.rand(16, 3, s, s)
    ts = [0.5 * k for k in range(16)]
    with torch.no_grad():
        vis = model.encode_frames(px)
        prefix = model.encode_window(px, ts, visual_tokens=vis)
        q = torch.randn(4, 9, vis.shape[-1])
        mask = torch.ones(4, 9, dtype=torch.long)
        stq = prefix.stq_states[None].expand(4, -1, -1).contiguous()
        vis4 = vis[None].expand(4, -1, -1, -1).contiguous()
    rows = {}
    for name, b in backends.items():
        enc = median_time(lambda: b.encode_frames(px), args.repeats)
        dec = median_time(lambda: b.decode(stq, vis4, q, mask), args.repeats)
        win = median_time(lambda: model.ground(model.encode_window(px, ts, visual_tokens=b.encode_frames(px)), QUESTIONS,
                                       decoder=b.decode), max(5, args.repeats // 4))
        rows[name] = (enc, dec, win)
    t = rows["torch"]
    print(f"median of {args.repeats}; torch threads={torch.get_num_threads()}; ratios are torch time / backend time")
    print(f"{'backend':<14} | {'encoder 16f (ms)':>16} | {'decoder 4q (ms)':>15} | {'enc+dec speed-up':>16} | {'window 4q (ms)':>14} | {'window speed-up':>15}")
    for name, (e, d, w) in rows.items():
        print(f"{name:<14} | {e * 1000:>16.2f} | {d * 1000:>15.2f} | {(t[0] + t[1]) / (e + d):>16.2f} | {w * 1000:>14.1f} | {t[2] / w:>15.2f}")


if __name__ == "__main__":
    main()
