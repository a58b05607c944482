from __future__ import annotations

import random

import pytest

from stream.camera import CaptureClock
from stream.redis_link import backoff_delay
from stream.health import CameraHealth, CameraState
from stream.keys import shard_tag, Keys, check_id
from stream.types import Window
from stream.windowing import FrameSampler, WindowBuilder


def _run(fps_in: float, seconds: float, sample_fps=2.0, window=8.0, stride=2.0):
    s, b = FrameSampler(sample_fps), WindowBuilder(window, stride, sample_fps)
    out = []
    period = 1000 / fps_in
    for i in range(int(seconds * fps_in)):
        ts = int(round(i * period))
        if s.keep(ts, period):
            out += b.add(ts)
    return out


def test_sampler_when_no_frames_keeps_nothing():
    assert _run(25, 0) == []


@pytest.mark.parametrize("fps_in", [10, 25, 30])
def test_windows_have_16_frames_on_a_half_second_grid(fps_in):
    wins = _run(fps_in, 20)
    assert [w.start_ms for w in wins] == [0, 2000, 4000, 6000, 8000, 10000, 12000]
    for w in wins:
        assert len(w.frames_ms) == 16
        assert all(abs(t - (w.start_ms + 500 * k)) <= 1000 / fps_in / 2 for k, t in enumerate(w.frames_ms))


def test_sampler_restarts_after_a_gap():
    s = FrameSampler(2.0)
    assert s.keep(0) and not s.keep(100) and s.keep(500) and s.keep(60_000) and not s.keep(60_100)


def test_capture_clock_re_anchors_on_backwards_pts_and_jumps():
    now = [1000.0]
    clock = CaptureClock(lambda: now[0])
    assert clock.stamp(10.0, 0.04) == 1000.0
    assert clock.stamp(10.04, 0.04) == pytest.approx(1000.04)
    # wrap-around: pts goes back to 0; time keeps going forward
    now[0] = 1000.5
    assert clock.stamp(0.0, 0.04) == pytest.approx(1000.5)
    assert clock.reanchors == 1
    # a jump forward of more than 5 s re-anchors too; never earlier than the last stamp
    now[0] = 900.0
    assert clock.stamp(100.0, 0.04) == pytest.approx(1000.54)
    assert clock.reanchors == 2


def test_backoff_is_exponential_capped_and_jittered():
    rng = random.Random(0)
    delays = [backoff_delay(a, 0.5, 4.0, rng) for a in range(8)]
    assert all(0.25 <= delays[0] <= 0.5 for _ in [0])
    assert all(d <= 4.0 for d in delays) and delays[-1] >= 2.0


def test_health_rejects_illegal_transitions():
    h = CameraHealth("c").moved(CameraState.RUNNING)
    with pytest.raises(ValueError, match="illegal transition stopped -> running"):
        h.moved(CameraState.STOPPED).moved(CameraState.RUNNING)


def test_health_and_window_round_trip():
    h = CameraHealth("c", CameraState.RUNNING, 2.5, 10.0, 3, 1, 2, 1, 0, "x", 11.0)
    assert CameraHealth.from_dict("c", {k.encode(): v.encode() for k, v in h.to_dict().items()}) == h
    w = Window("cam", 1000, 9000, (1000, 1500), (640, 480), 64)
    assert Window.from_fields(w.to_fields()) == w
    with pytest.raises(ValueError, match="malformed window entry"):
        Window.from_fields({"camera": "x"})


@pytest.mark.parametrize("value", ["", "a b", "x" * 65, "cam/1", "é"])
def test_ids_are_checked_before_becoming_key_parts(value):
    with pytest.raises(ValueError, match="invalid camera id"):
        check_id(value, "camera id")


def test_keys_use_camera_hash_tags():
    k = Keys("p:")
    assert k.frame("c1", 5) == "p:{c1}:frame:5" and k.health("c1") == "p:{c1}:health"
    tag = shard_tag(k.shard_of("c1"), k.shards)
    assert k.event_state("c1", "q") == f"p:{{{tag}}}:event:c1:q" and k.windows_for("c1") == f"p:{{{tag}}}:windows"
