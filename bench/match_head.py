"""What the match decision costs per window: the same model and windows grounded with the match head
(`score: match_head`: every query's span is decoded, then the head) and with the earlier score
(`answer_and_presence`: a query whose answer score cannot reach its threshold skips the space decoder), side by
side in one run, medians over repeats.

    .venv/bin/python bench/match_head.py [--model models/tiny] [--clips 12] [--repeats 5]

Windows: held-out spec-v1 clips (8 s, the model's 16 frames, through H.264) with 1, 4 and 16 standing queries each,
the prefix computed once per window (as the engine does), thresholds at the model's default.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.training.data.formats import draw_clip  # noqa: E402
from engine.training.evaluate import window_prefix  # noqa: E402
from engine.model.checkpoint import load_model  # noqa: E402
from engine.model.config import ScoreMode  # noqa: E402
from engine.contracts.settings import DEFAULT_MODEL_DIR  # noqa: E402
from engine.training.swaps import clip_frames  # noqa: E402

QUERIES = ["the red circle moving right", "the yellow triangle moving down", "the blue square", "the green triangle moving up",
           "the white circle moving left", "the small red circle", "the large blue square moving up", "the white square",
           "the green circle standing still", "the yellow square moving left", "the red triangle", "the blue circle moving down",
           "the small white triangle", "the large green square", "the yellow circle moving up", "the red square moving right"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL_DIR)
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    prefixes = []
    for i in range(args.clips):
        rng = np.random.default_rng([77, i])
        spec = draw_clip(rng, 8.0, negative_rate=0.0)
        frames, ts = clip_frames(spec, model.config.max_frames, rng, None)
        prefixes.append(window_prefix(model, frames, ts))
    modes = [ScoreMode.ANSWER_AND_PRESENCE, ScoreMode.MATCH_HEAD]
    print(f"model {args.model}, {args.clips} windows, {args.threads} thread(s); ms per window, median of {args.repeats}")
    print("| queries | " + " | ".join(m.value for m in modes) + " | ratio |")
    print("| --- | --- | --- | --- |")
    for n in (1, 4, 16):
        qs = QUERIES[:n]
        times = {m: [] for m in modes}
        for _ in range(args.repeats):
            for m in modes:  # interleaved: both modes see the same machine state
                model.config = dataclasses.replace(model.config, score=m)
                t0 = time.perf_counter()
                for p in prefixes:
                    model.ground(p, qs, min_scores=[model.config.default_threshold] * n)
                times[m].append((time.perf_counter() - t0) / len(prefixes) * 1e3)
        med = {m: statistics.median(v) for m, v in times.items()}
        print(f"| {n} | " + " | ".join(f"{med[m]:.1f}" for m in modes) + f" | {med[modes[1]] / med[modes[0]]:.2f} |")


if __name__ == "__main__":
    main()
