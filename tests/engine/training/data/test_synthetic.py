from __future__ import annotations

import re

import numpy as np
import pytest

from engine.training.data.synthetic import make_pair, make_sample, near_miss_caption
from stream.scenes import COLOURS, SHAPES, Scene, SceneObject, matches

GRAMMAR = re.compile(
    r"^the (?:(small|large) )?(" + "|".join(COLOURS) + r") (" + "|".join(SHAPES) + r")"
    r"(?: (moving (left|right|up|down)|standing still))?$"
)


@pytest.mark.parametrize("task", ["stvg", "vtg", "rec"])
def test_make_sample_is_deterministic_per_seed(task):
    a, b = make_sample(7, task), make_sample(7, task)
    assert a.caption == b.caption and a.span_s == b.span_s
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.boxes_cxcywh, b.boxes_cxcywh)
    assert not np.array_equal(a.frames, make_sample(8, task).frames)


def test_captions_follow_the_grammar_and_cover_it():
    samples = [make_sample(i, ("stvg", "vtg", "rec")[i % 3], frames=4, compress_rate=0.0) for i in range(150)]
    seen = {"size": False, "moving": False, "still": False, "negative": False}
    for s in samples:
        assert GRAMMAR.match(s.caption), s.caption
        seen["size"] |= bool(re.search(r"\b(small|large)\b", s.caption))
        seen["moving"] |= "moving" in s.caption
        seen["still"] |= "standing still" in s.caption
        seen["negative"] |= s.span_s is None
        if s.span_s is None:
            assert not s.present.any() and not s.in_span.any()
        elif s.task != "rec":
            assert 0 <= s.span_s[0] <= s.span_s[1] and s.present.any() <= s.in_span.any()
    assert all(seen.values()), seen


def test_boxes_are_normalised_and_inside_the_frame():
    s = make_sample(3, "stvg")
    b = s.boxes_cxcywh[s.present]
    assert ((b >= 0) & (b <= 1)).all()
    assert s.frames.shape == (16, 64, 64, 3) and s.frames.dtype == np.uint8


def _attributes(caption: str) -> dict[str, str | None]:
    m = GRAMMAR.match(caption)
    assert m, caption
    size, colour, shape, motion, direction = m.groups()
    return {"size": size, "colour": colour, "shape": shape, "direction": direction or ("still" if motion else None)}


def _scene(*objects: tuple[str, str, str, str]) -> Scene:
    objs = tuple(SceneObject(shape, colour, size, direction, 20.0, (80.0, 60.0), 10.0, 0.0, 8.0)
                 for shape, colour, size, direction in objects)
    return Scene(160, 120, 8.0, objs, "flat", 0, (0, 0, 0), (0, 0, 0), 0.0)


def test_a_near_miss_changes_one_attribute_and_names_no_object():
    # given a scene with a yellow triangle moving down and a white circle moving left
    scene = _scene(("triangle", "yellow", "large", "down"), ("circle", "white", "small", "left"))
    rng = np.random.default_rng(0)
    changed = set()
    for _ in range(200):
        # when near misses of the triangle's caption are drawn
        miss = near_miss_caption(scene, "the yellow triangle moving down", rng)
        if miss is None:
            continue
        # then each follows the grammar, differs from the caption in exactly one attribute, and names nothing
        a, b = _attributes("the yellow triangle moving down"), _attributes(miss)
        diff = [k for k in a if a[k] != b[k]]
        assert len(diff) == 1, (miss, diff)
        changed.add(diff[0])
        assert not any(matches(o, b["colour"], b["shape"], b["size"], b["direction"]) for o in scene.objects), miss
    # and every attribute gets changed sometimes
    assert changed == {"colour", "shape", "size", "direction"}


def test_a_near_miss_that_would_name_another_object_is_refused():
    # given a red circle and a green circle, both moving right
    scene = _scene(("circle", "red", "large", "right"), ("circle", "green", "large", "right"))
    rng = np.random.default_rng(1)
    misses = [near_miss_caption(scene, "the red circle", rng, with_motion=False) for _ in range(200)]
    # then "the green circle" (it is in the scene) is never offered, and REC captions get no motion words
    assert "the green circle" not in misses
    assert all(m is None or "moving" not in m and "still" not in m for m in misses)


@pytest.mark.parametrize("task", ["stvg", "rec"])
def test_a_contrastive_pair_shares_pixels_and_differs_in_one_word_of_its_caption(task):
    pos, neg = make_pair(11, task, frames=4, compress_rate=0.0)
    assert pos.span_s is not None and neg.span_s is None
    assert np.array_equal(pos.frames, neg.frames) and pos.timestamps_s == neg.timestamps_s
    assert not neg.present.any() and not neg.in_span.any() and not neg.boxes_cxcywh.any()
    a, b = _attributes(pos.caption), _attributes(neg.caption)
    assert sum(a[k] != b[k] for k in a) == 1, (pos.caption, neg.caption)
