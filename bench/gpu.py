"""Grounding speed and memory on a device: windows/s and per-window latency at 16 and 32 frames.

    python bench/gpu.py --device cuda --size 7b --frames 16 32 --out results.json     # a GPU host
    python bench/gpu.py --device cpu --size tiny --frames 4 --repeats 1               # anywhere (the test runs this)

The model is built from its config with random weights (speed does not depend on them), directly on the device
in the bench's dtype (`engine.model.placement.building_on`: the 7B model is never materialised in float32 on the
host), with the tiny model's word-level tokenizer (the prompt grammar is the same at every size). Per window: the
vision encoder on the window's new frames (`--new-frames`, the stride's worth: the engine caches the rest), the
video prefix through the LLM (once per window), then `--questions` standing queries grounded against it
(question + constrained answer + space decoder). Backends for the encoder and the space decoder: torch, and
TensorRT FP16 when `import tensorrt` works (exported through ONNX from this model), else reported unavailable;
the LLM is PyTorch on the device either way. Peak memory per GPU is torch.cuda.max_memory_allocated.
`--train-steps N` also times N forward/backward steps of the tiny model (one process; the distributed trainer is
`spacevllm train` under torchrun).

Imports only engine.model.* (torch, transformers, tokenizers, numpy, yaml): no Redis, PyAV or web stack, so it runs
on a bare GPU box. Prints a markdown table and writes JSON (`--out`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.model.config import SpaceVLLMConfig, load_config  # noqa: E402
from engine.model.placement import Placement, building_on, resolve_placement  # noqa: E402
from engine.model.spacevllm import SpaceVLLM, build_spacevllm  # noqa: E402
from engine.model.tokenizer import load_tokenizer  # noqa: E402

CONFIGS = {"tiny": ROOT / "configs" / "model" / "tiny.yaml", "7b": ROOT / "configs" / "model" / "spacevllm-7b.yaml"}
TOKENIZER = ROOT / "models" / "tiny" / "tokenizer.json"
QUESTIONS = ["the red circle moving right", "the small blue square", "the yellow triangle moving down", "the white circle",
             "the large green square standing still", "the red triangle moving left", "the blue circle", "the white square moving up"]
SAMPLE_FPS = 2.0  # the service's default sampling: window frame k at k / 2 s


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> tuple[float, object]:
    """Median seconds over `repeats` calls after one warm-up, and the last result."""
    out = fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def build_model(config: SpaceVLLMConfig, placement: Placement, frames: int) -> SpaceVLLM:
    """Random weights, built on the device in the placement's dtype; max_frames raised to the frames benched."""
    config = dataclasses.replace(config, max_frames=max(config.max_frames, frames), base_checkpoint=None)
    torch.manual_seed(0)
    with building_on(placement):
        model = build_spacevllm(config, load_tokenizer(TOKENIZER))
    return model.to(device=placement.device, dtype=placement.dtype).eval()


class TorchParts:
    name = "torch"

    def __init__(self, model: SpaceVLLM) -> None:
        self.model = model

    def encode_frames(self, pixels):
        return self.model.encode_frames(pixels)

    def decode(self, stq, vis, question, mask):
        return self.model.space_decoder(stq, vis, question, mask)


def tensorrt_parts(model: SpaceVLLM, placement: Placement, work: Path):
    """TensorRT FP16 engines for this model's encoder and decoder, or the reason they are unavailable."""
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        return None, f"unavailable (import tensorrt: {exc})"
    if placement.device.type != "cuda":
        return None, "unavailable (needs --device cuda)"
    try:
        from engine.model.checkpoint import save_model
        from engine.serving.runtime.trt import TensorRTBackend
        from export.onnx_export import export_onnx
        from export.tensorrt import build_engines

        save_model(model.float().cpu(), work / "model")  # export reads a model directory (float32)
        model.to(device=placement.device, dtype=placement.dtype)
        export_onnx(work / "model", work / "onnx")
        build_engines(work / "onnx", work / "trt", fp16=True)
        return TensorRTBackend(work / "trt", device=placement.device, dtype=placement.dtype), "fp16"
    except Exception as exc:  # report, keep the torch numbers
        return None, f"failed: {type(exc).__name__}: {exc}"


def bench_window(model: SpaceVLLM, parts, placement: Placement, frames: int, new_frames: int, questions: int,
                 repeats: int) -> dict:
    dev, dt = placement.device, placement.dtype
    s = model.config.vision.image_size
    g = torch.Generator(device="cpu").manual_seed(1)
    pixels = torch.rand(frames, 3, s, s, generator=g).to(dev, dt)  # (F, 3, S, S) as the grounder builds them
    ts = [k / SAMPLE_FPS for k in range(frames)]
    qs = [QUESTIONS[k % len(QUESTIONS)] for k in range(questions)]
    new = min(new_frames, frames)
    with torch.no_grad():
        t_encode_all, tokens = timed(lambda: parts.encode_frames(pixels), dev, repeats)
        tokens = tokens.to(dev, dt)
        t_encode_new, _ = timed(lambda: parts.encode_frames(pixels[:new]), dev, repeats)
        t_prefix, prefix = timed(lambda: model.encode_window(None, ts, visual_tokens=tokens), dev, repeats)
        t_ground, _ = timed(lambda: model.ground(prefix, qs, decoder=parts.decode), dev, repeats)
    latency = t_encode_new + t_prefix + t_ground
    return {"frames": frames, "new_frames": new, "questions": questions, "backend": parts.name,
            "encode_all_ms": t_encode_all * 1e3, "encode_new_ms": t_encode_new * 1e3, "prefix_ms": t_prefix * 1e3,
            "ground_ms": t_ground * 1e3, "window_latency_ms": latency * 1e3, "windows_per_s": 1.0 / latency}


def bench_train(config: SpaceVLLMConfig, placement: Placement, steps: int, frames: int = 8, batch: int = 2) -> dict:
    """Forward + backward + AdamW step of the tiny architecture (random weights, a synthetic batch), one process."""
    model = build_model(config, placement, frames).train()
    dev = placement.device
    s = model.config.vision.image_size
    ts = [k / SAMPLE_FPS for k in range(frames)]
    video = model.prefix_ids(ts)
    qids = model.question_ids(QUESTIONS[0])
    answer = [model.vocab.from_, model.vocab.time_id(0.5), model.vocab.to, model.vocab.time_id(2.0), model.vocab.eos]
    seq = video + qids + answer
    ids = torch.tensor([seq] * batch, device=dev)
    q_pos = torch.tensor([list(range(len(video), len(video) + len(qids)))] * batch, device=dev)
    pixels = torch.rand(batch, frames, 3, s, s, device=dev, dtype=placement.dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        out = model(pixels, ids, torch.ones_like(ids), q_pos, torch.ones_like(q_pos))
        logits = out.logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        loss = loss + (out.decoder.boxes_cxcywh.float() - 0.5).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    t, loss = timed(step, dev, steps)
    return {"train_step_ms": t * 1e3, "batch": batch, "frames": frames, "loss": float(loss.detach()), "steps": steps}


def peak_memory() -> dict:
    if not torch.cuda.is_available():
        return {}
    return {f"cuda:{i}": torch.cuda.max_memory_allocated(i) / 2**30 for i in range(torch.cuda.device_count())}


def markdown(rows: list[dict]) -> str:
    head = ("| size | backend | frames | new | questions | encode new (ms) | prefix (ms) | ground (ms) | window (ms) | "
            "windows/s | peak GiB |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        lines.append(f"| {r['size']} | {r['backend']} | {r['frames']} | {r['new_frames']} | {r['questions']} | "
                     f"{r['encode_new_ms']:.1f} | {r['prefix_ms']:.1f} | {r['ground_ms']:.1f} | {r['window_latency_ms']:.1f} | "
                     f"{r['windows_per_s']:.2f} | {r.get('peak_gib', float('nan')):.2f} |")
    return "\n".join(lines)


def run(args) -> dict:
    dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    placement = resolve_placement(args.device, dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.config or CONFIGS[args.size])
    result = {"device": str(placement.device), "dtype": dtype, "size": args.size, "config": config.name,
              "torch": torch.__version__, "python": platform.python_version(), "rows": [], "backends": {}}
    if placement.device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(placement.device)
    try:
        import transformers

        result["transformers"] = transformers.__version__
    except ImportError:
        pass
    t0 = time.perf_counter()
    model = build_model(config, placement, max(args.frames))
    _sync(placement.device)
    result["build_s"] = time.perf_counter() - t0
    result["parameters"] = sum(p.numel() for p in model.parameters())
    backends = [TorchParts(model)]
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as work:
        trt, status = tensorrt_parts(model, placement, Path(work)) if "tensorrt" in args.backends else (None, "not requested")
        result["backends"] = {"torch": "ok", "tensorrt-fp16": status}
        if trt is not None:
            backends.append(trt)
        for parts in backends:
            for frames in args.frames:
                if placement.device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(placement.device)
                row = bench_window(model, parts, placement, frames, args.new_frames, args.questions, args.repeats)
                row["size"] = args.size
                if placement.device.type == "cuda":
                    row["peak_gib"] = torch.cuda.max_memory_allocated(placement.device) / 2**30
                    row["peak_gib_per_gpu"] = peak_memory()
                result["rows"].append(row)
    if args.train_steps:
        del model, backends
        if placement.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(placement.device)
        tiny = load_config(CONFIGS["tiny"])
        result["train"] = bench_train(tiny, resolve_placement(args.device, "float32"), args.train_steps)
        result["train"]["peak_gib"] = peak_memory()
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cpu | cuda | cuda:N | auto")
    ap.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: bfloat16 on CUDA, float32 on the CPU)")
    ap.add_argument("--size", choices=sorted(CONFIGS), default="7b")
    ap.add_argument("--config", default=None, help="model config YAML (default: the --size one)")
    ap.add_argument("--frames", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--new-frames", type=int, default=4, help="frames per window the encoder sees (the stride's; the cache has the rest)")
    ap.add_argument("--questions", type=int, default=4, help="standing queries per window")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--backends", nargs="+", default=["torch", "tensorrt"], choices=["torch", "tensorrt"])
    ap.add_argument("--train-steps", type=int, default=0, help="also time this many tiny forward/backward steps")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the results here (JSON)")
    args = ap.parse_args(argv)
    result = run(args)
    print(f"{result['config']} on {result.get('gpu', result['device'])} ({result['dtype']}), "
          f"{result['parameters'] / 1e9:.2f} B parameters, built in {result['build_s']:.1f} s; "
          f"TensorRT FP16: {result['backends'].get('tensorrt-fp16')}")
    print(markdown(result["rows"]))
    if "train" in result:
        t = result["train"]
        print(f"\ntiny train step (batch {t['batch']} x {t['frames']} frames, fp32): {t['train_step_ms']:.1f} ms")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
