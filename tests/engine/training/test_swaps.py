"""The attribute-swap suite: swaps name nothing in the clip, keep the word count, and are scored on shared pixels."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine.training.data.formats import draw_clip
from engine.training.data.synthetic import parse_caption
from engine.training.swaps import ATTRIBUTES, rank_below, run_swaps, swap_pairs
from stream.scenes import matches


def names_something(scene, caption: str) -> bool:
    size, colour, shape, direction = parse_caption(caption)
    return any(matches(o, colour, shape, size, direction) for o in scene.objects)


@pytest.mark.parametrize("i", range(30))
def test_swap_pairs_name_nothing_change_one_attribute_and_keep_the_word_count(i):
    rng = np.random.default_rng([5, i])
    spec = draw_clip(rng, 8.0, negative_rate=0.0)
    pairs = swap_pairs(spec.scene, spec.target, spec.caption, rng)
    assert {"colour", "shape"} <= set(pairs)
    for attribute, (reference, swapped) in pairs.items():
        assert names_something(spec.scene, reference) and not names_something(spec.scene, swapped)
        assert len(reference.split()) == len(swapped.split())
        ref, swp = parse_caption(reference), parse_caption(swapped)
        changed = [a for a, x, y in zip(("size", "colour", "shape", "direction"), ref, swp) if x != y]
        assert changed == [attribute]


@pytest.mark.parametrize("true,swap,expected", [(0.9, 0.1, 1.0), (0.5, 0.5, 0.5), (0.1, 0.9, 0.0)])
def test_rank_below_counts_ties_as_half(true, swap, expected):
    assert rank_below(true, swap) == expected


def test_run_swaps_when_run_then_every_attribute_is_measured_and_saved_with_examples(tmp_path, tiny_model_dir):
    # given the random-weight test model, 6 rendered clips
    result = run_swaps(tiny_model_dir, 6, seed=3, out=tmp_path, threshold=0.5, progress=False)
    saved = json.loads((tmp_path / "swaps.json").read_text())
    # then every attribute was measured on the clips, and the file holds the same figures with examples
    assert result["colour"]["n"] == result["shape"]["n"] == 6
    assert all(0.0 <= result[a]["rejected_at_threshold"] <= 1.0 for a in ATTRIBUTES)
    assert saved["colour"] == result["colour"] and saved["examples"]
    assert result["baseline"]["colour"] == {"rejected_at_threshold": 0.0, "ranked_below_true": 0.5}
