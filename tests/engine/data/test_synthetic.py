from __future__ import annotations

import re

import numpy as np
import pytest

from engine.data.synthetic import make_sample
from stream.scenes import COLOURS, SHAPES

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
