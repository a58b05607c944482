from __future__ import annotations

import json

import av
import numpy as np
import pytest

from engine.training.data.footage import FOOTAGE, footage_path
from engine.training.data.real_background import LEVELS, RealBackground, _bounce, footage_bank
from engine.training.data.synthetic import SceneMix, make_sample


def test_each_clips_training_and_held_out_ranges_never_overlap():
    for f in FOOTAGE:
        assert f.train is not None
        if f.held_out is not None:
            assert f.train[1] < f.held_out[0], f.name
        with av.open(str(footage_path(f.name))) as c:  # the ranges lie inside the clip
            s = c.streams.video[0]
            assert f.train[1] <= float(s.duration * s.time_base) + 1e-6


def test_the_banks_hold_only_their_splits_frames():
    # given the footage decoded per split
    train, held = footage_bank("train"), footage_bank("held_out")
    # then a clip's frames are divided as its ranges say (25 fps bikes: 6.8 s -> 170 frames; 2.8 s held out -> 70)
    by_name = {c.name: c for c in train}
    assert len(by_name["bikes.mp4"].frames) == 170
    assert {c.name for c in held} == {"bikes.mp4", "carphone_pristine.mp4"}  # the animation is training only
    assert len({c.name: c for c in held}["bikes.mp4"].frames) == 70
    # and no held-out frame is a training frame
    bikes_train, bikes_held = by_name["bikes.mp4"].frames, {c.name: c for c in held}["bikes.mp4"].frames
    assert not any(np.array_equal(bikes_held[0], f) for f in bikes_train)
    with pytest.raises(ValueError, match="train or held_out"):
        footage_bank("test")


def test_a_background_moves_keeps_its_size_and_stays_in_the_muted_levels():
    # given a real background drawn for a 192x144 scene
    bg = RealBackground.draw(np.random.default_rng(3), (192, 144), "held_out")
    # when two moments are rendered
    a, b = bg.frame_at(0.0), bg.frame_at(1.0)
    # then they have the scene's size, muted levels, texture, and the footage moves
    assert a.shape == (144, 192, 3) and a.dtype == np.float32
    assert LEVELS[0] - 1e-3 <= a.min() and a.max() <= LEVELS[1] + 1e-3
    assert a.std() > 5 and np.abs(a - b).mean() > 1


def test_footage_plays_forwards_then_backwards():
    assert [_bounce(k, 4) for k in range(8)] == [0, 1, 2, 3, 2, 1, 0, 1]
    assert _bounce(5, 1) == 0


def test_scene_mix_defaults_reproduce_the_sample_stream_and_real_backgrounds_change_only_pixels():
    # given the same seed with the default mix and with every clip on real footage
    plain = make_sample(21, "stvg", frames=4, compress_rate=0.0)
    assert np.array_equal(plain.frames, make_sample(21, "stvg", frames=4, compress_rate=0.0, mix=SceneMix()).frames)
    real = make_sample(21, "stvg", frames=4, compress_rate=0.0, mix=SceneMix(real_background_rate=1.0))
    # then captions and labels are the scene's, and the pixels differ
    assert real.caption == plain.caption and real.span_s == plain.span_s
    assert np.array_equal(real.boxes_cxcywh, plain.boxes_cxcywh)
    assert np.abs(real.frames.astype(float) - plain.frames.astype(float)).mean() > 3


def test_look_alike_distractors_grow_with_their_rate():
    from stream.scenes import random_scene

    def share(rate):
        rng = np.random.default_rng(0)
        scenes = [random_scene(rng, 6.0, (160, 120), n_objects=3, look_alike_rate=rate) for _ in range(300)]
        return np.mean([len({(o.colour, o.shape) for o in s.objects}) < 3 for s in scenes])

    assert share(0.0) < share(0.35) < share(0.9)


def test_a_real_background_eval_set_has_the_same_scenes_and_captions_over_footage(tmp_path):
    from engine.training.data.formats import write_hcstvg_clips

    # given the same seed rendered plainly and over held-out footage
    plain = write_hcstvg_clips(tmp_path / "plain", 2, seed=4, seconds=1.0)
    real = write_hcstvg_clips(tmp_path / "real", 2, seed=4, seconds=1.0, real_background=True)
    # then the annotations are identical and the pixels are not
    assert plain.read_text() == real.read_text()
    vid = next(iter(json.loads(plain.read_text())))

    def first_frame(p):
        with av.open(str(p)) as c:
            return next(c.decode(video=0)).to_ndarray(format="rgb24").astype(np.float32)

    a, b = (first_frame(tmp_path / d / "videos" / f"{vid}.mp4") for d in ("plain", "real"))
    assert a.shape == b.shape and np.abs(a - b).mean() > 5
