"""`spacevllm eval --suite swaps`: does the match score read every word of a caption?

For each held-out positive clip (spec-v1 scenes drawn from their own seed stream, never the training one), its
caption (as the grammar draws it: size only where needed, motion or not) and, for each attribute (colour, shape,
direction, size), a swap that replaces that attribute so that the caption names nothing in the clip are scored
on the same pixels. A swap never changes the word count against its reference (that would move the score for
reasons other than meaning): where the caption has no size or motion, the reference adds the target's true one
and the swap another (`swap_pairs`). through one shared window prefix
(the engine's path). Per attribute it reports how many swaps are rejected at the threshold (score below it) and
how many rank below their true caption (ties count half), beside a trivial baseline that gives every caption
the same score (rejects none, ranks at chance). `--style-shift` renders the clips through a camera style the
training data never shows (`engine.training.data.style_shift`); `--real-background` draws the same scenes over real
footage from time ranges training never uses (`engine.training.data.real_background`).

Frames: the model's uniformly sampled frames of an 8 s clip, rendered at the clip's resolution and taken
through H.264 (CRF 20-31, or the style's) as a camera would deliver them.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from engine.training.data.formats import draw_clip
from engine.training.data.real_background import RealBackground
from engine.training.data.style_shift import StyleShift
from engine.training.data.synthetic import h264_roundtrip, parse_caption, swap_attribute
from engine.training.evaluate import sample_indices, window_prefix
from stream.scenes import make_caption, render_frame

log = logging.getLogger(__name__)

ATTRIBUTES = ("colour", "shape", "direction", "size")
SEED_STREAM = 104729  # clips of this suite: [seed, SEED_STREAM, i]; training draws from plain integer seeds


def swap_pairs(scene, target, caption: str, rng: np.random.Generator, tries: int = 8) -> dict[str, tuple[str, str]]:
    """Per attribute, (reference, swap): the swap replaces one attribute so that it names nothing in the scene. For
    an attribute the caption names, the reference is the caption; for one it does not name (size, direction), the
    reference is the caption with the target's true value added, and the swap adds another value: within a pair
    the word count is the same."""
    size, colour, shape, direction = parse_caption(caption)
    out = {}
    for attribute in ATTRIBUTES:
        reference = caption
        if attribute == "size" and size is None:
            reference = make_caption(colour, shape, target.size, direction)
        elif attribute == "direction" and direction is None:
            reference = make_caption(colour, shape, size, target.direction)
        for _ in range(tries):
            swapped = swap_attribute(scene, reference, attribute, rng)
            if swapped is not None and swapped != reference:
                out[attribute] = (reference, swapped)
                break
    return out


def clip_frames(spec, count: int, rng: np.random.Generator, style: StyleShift | None,
                backdrop: RealBackground | None = None) -> tuple[list[np.ndarray], list[float]]:
    idx = sample_indices(spec.n_frames, count)
    ts = [i / spec.fps for i in idx]
    frames = [render_frame(spec.scene, t, rng, None if backdrop is None else backdrop.frame_at(t)) for t in ts]
    if style is not None:
        frames = [style.apply(f, rng) for f in frames]
    crf = style.crf if style is not None else int(rng.integers(20, 32))
    fps = max(1, round(len(ts) / max(spec.n_frames / spec.fps, 1e-3)))
    return h264_roundtrip(frames, fps, crf), ts


def rank_below(true_score: float, swap_score: float) -> float:
    return 1.0 if swap_score < true_score else 0.5 if swap_score == true_score else 0.0


def run_swaps(model_dir: str | Path, n: int, seed: int, out: str | Path, threshold: float | None = None,
              style_shift: bool = False, progress: bool = True, real_background: bool = False) -> dict:
    from engine.model.checkpoint import load_model

    model = load_model(model_dir)
    threshold = model.config.default_threshold if threshold is None else threshold
    rows: dict[str, list[tuple[float, float]]] = {a: [] for a in ATTRIBUTES}  # (true score, swap score)
    true_scores = []  # the clips' own captions: how many true matches the threshold keeps
    examples = []
    for i in tqdm(range(n), desc="swaps", dynamic_ncols=True, disable=not progress):
        rng = np.random.default_rng([seed, SEED_STREAM, i])
        spec = draw_clip(rng, 8.0, negative_rate=0.0)
        pairs = swap_pairs(spec.scene, spec.target, spec.caption, rng)
        style = StyleShift.draw(np.random.default_rng([seed, SEED_STREAM, i, 1])) if style_shift else None
        backdrop = (RealBackground.draw(np.random.default_rng([seed, SEED_STREAM, i, 2]), (spec.scene.width, spec.scene.height),
                                        "held_out", 8.0) if real_background else None)
        frames, ts = clip_frames(spec, model.config.max_frames, rng, style, backdrop)
        captions = list(dict.fromkeys([spec.caption, *(c for pair in pairs.values() for c in pair)]))
        score = dict(zip(captions, (g.score for g in model.ground(window_prefix(model, frames, ts), captions))))
        true_scores.append(score[spec.caption])
        for attribute, (reference, swapped) in pairs.items():
            rows[attribute].append((score[reference], score[swapped]))
            if len(examples) < 40:
                examples.append({"attribute": attribute, "true": reference, "swap": swapped,
                                 "true_score": round(score[reference], 4), "swap_score": round(score[swapped], 4)})
    result = {"n_clips": n, "seed": seed, "style_shift": style_shift, "real_background": real_background, "threshold": threshold,
              "true_matched_at_threshold": float(np.mean([s >= threshold for s in true_scores])) if true_scores else 0.0}
    for attribute, pairs in rows.items():
        result[attribute] = {
            "n": len(pairs),
            "rejected_at_threshold": float(np.mean([s < threshold for _, s in pairs])) if pairs else 0.0,
            "ranked_below_true": float(np.mean([rank_below(t, s) for t, s in pairs])) if pairs else 0.0,
        }
    result["baseline"] = {a: {"rejected_at_threshold": 0.0, "ranked_below_true": 0.5} for a in ATTRIBUTES}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "swaps.json").write_text(json.dumps({**result, "examples": examples}, indent=2) + "\n")
    return result
