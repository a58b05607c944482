"""Shared window prefix vs recomputing the window per question, one 16-frame window, tiny config.

    .venv/bin/python bench/prefix_sharing.py [--model models/tiny] [--repeats 7]

Prints medians over repeats and the ratios, all measured in this one run (the machine is noisy).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import median_time  # noqa: E402

QUESTIONS = ["the red circle moving right", "the small blue square", "the yellow triangle moving down", "the white circle",
             "the large green square standing still", "the red triangle moving left", "the blue circle", "the white square moving up"]


def load(model_dir: str | None):
    from engine.model.checkpoint import load_model
    from engine.model.config import SpaceVLLMConfig
    from engine.model.spacevllm import build_spacevllm
    from engine.model.tokenizer import train_tokenizer

    if model_dir and (Path(model_dir) / "model.safetensors").is_file():
        return load_model(model_dir)
    torch.manual_seed(0)
    return build_spacevllm(SpaceVLLMConfig(), train_tokenizer(60.0)).eval()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(Path(__file__).resolve().parent.parent / "models" / "tiny"))
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load(args.model)
    s = model.config.vision.image_size
    px = torch.rand(16, 3, s, s)
    ts = [0.5 * k for k in range(16)]
    rows = []
    for n in (1, 4, 16):
        qs = [QUESTIONS[k % len(QUESTIONS)] for k in range(n)]

        def shared():
            model.ground(model.encode_window(px, ts), qs)

        def naive():
            for q in qs:
                model.ground_from_scratch(px, ts, q)

        rows.append((n, median_time(shared, args.repeats), median_time(naive, args.repeats)))
    base_s, base_n = rows[0][1], rows[0][2]
    print(f"one 16-frame window, {model.config.name} model, torch threads={torch.get_num_threads()}, median of {args.repeats}")
    print(f"{'questions':>9} | {'shared (ms)':>11} | {'naive (ms)':>10} | {'naive/shared':>12} | {'shared(n)/shared(1)':>19} | {'naive(n)/naive(1)':>17}")
    for n, sh, nv in rows:
        print(f"{n:>9} | {sh * 1000:>11.1f} | {nv * 1000:>10.1f} | {nv / sh:>12.2f} | {sh / base_s:>19.2f} | {nv / base_n:>17.2f}")


if __name__ == "__main__":
    main()
