"""The overload switch: key frames only once a camera is behind real time, every frame again once it caught up
(with hysteresis), behind measured above the lag's recent least (a constant delay is not a backlog), one episode
per stretch of falling behind, skipped frames counted exactly. Pure logic."""
from __future__ import annotations

import pytest

from stream.overload import Overload, OverloadSwitch


def _run(switch: OverloadSwitch, lags: list[float], dt: float = 0.04, t0: float = 0.0) -> list[tuple[bool, Overload | None]]:
    """Observe one lag per frame, `dt` apart from `t0`; (key frames only after it, what it said)."""
    out = []
    for k, lag in enumerate(lags):
        said = switch.observe(lag, t0 + k * dt)
        out.append((switch.keyframes_only, said))
    return out


def test_observe_when_nothing_is_late_decodes_every_frame():
    switch = OverloadSwitch(enter_lag_s=0.5, leave_lag_s=0.25)
    assert _run(switch, []) == []
    assert _run(switch, [0.0, 0.1, 0.5, -0.2]) == [(False, None)] * 4  # 0.5 is not above 0.5


def test_observe_when_behind_switches_with_hysteresis():
    # given a camera whose lag rises past the upper threshold, wavers between the two, then falls below the lower
    switch = OverloadSwitch(enter_lag_s=0.5, leave_lag_s=0.25)
    got = _run(switch, [0.0, 0.3, 0.51, 0.4, 0.3, 0.25, 0.24, 0.3, 0.45, 0.6])
    # then it decodes key frames only from the first frame over 0.5 s until the first under 0.25 s, and not between
    assert [k for k, _ in got] == [False, False, True, True, True, True, False, False, False, True]
    # and says so once: the second fall behind is the same episode
    assert [s for _, s in got] == [None, None, Overload.BEHIND] + [None] * 7
    assert switch.episode_entries == 2 and switch.in_episode


def test_observe_when_the_lag_is_a_constant_delay_or_a_slow_drift_never_switches():
    # given a camera that keeps up, 0.7 s behind its first frame from the start (a slower network path), and one whose
    # clock drifts from ours by 100 ppm over two hours (0.72 s), at 25 fps
    delayed = OverloadSwitch(enter_lag_s=0.5, leave_lag_s=0.25)
    drifting = OverloadSwitch(enter_lag_s=0.5, leave_lag_s=0.25)
    # then neither falls behind: the lags above their recent least are nothing
    assert _run(delayed, [0.7] * 500) == [(False, None)] * 500
    assert all(not drifting.observe(1e-4 * k * 0.04, k * 0.04) and not drifting.keyframes_only
               for k in range(0, 180_000, 7))
    # and a backlog on top of the delay is behind, and caught up once it is gone
    assert _run(delayed, [0.9, 1.3, 0.8], t0=20.0) == [(False, None), (True, Overload.BEHIND), (False, None)]


def test_observe_when_a_backlog_grows_too_slowly_to_show_is_behind_once_frames_would_be_dropped():
    # given a camera 0.5% short of real time (0.2 ms a frame at 25 fps): within a minute, never 0.5 s above its least
    switch = OverloadSwitch(enter_lag_s=0.5, leave_lag_s=0.25, drop_lag_s=1.0)
    lags = [0.0002 * k for k in range(6000)]  # 4 minutes, to 1.2 s
    got = _run(switch, lags)
    # then it goes to key frames only at the frame past the lag that drops frames, 1 s
    first = next(k for k, (key, _) in enumerate(got) if key)
    assert lags[first] > 1.0 >= lags[first - 1] and got[first][1] is Overload.BEHIND
    # and a key frame back near its least lag (the backlog drained) is caught up
    assert switch.observe(0.1, 240.0) is None and not switch.keyframes_only


def test_observe_when_caught_up_for_calm_s_ends_the_episode_with_its_skipped_frames():
    # given a camera that fell behind twice, skipping 24 and then 10 frames
    switch = OverloadSwitch(enter_lag_s=0.5, leave_lag_s=0.25, calm_s=10.0)
    assert switch.observe(0.0, now=99.0) is None
    assert switch.observe(0.6, now=100.0) is Overload.BEHIND
    switch.count_skipped(24)
    assert switch.observe(0.1, now=101.0) is None  # caught up at 101
    assert switch.observe(0.7, now=102.0) is None  # behind again: the same episode
    switch.count_skipped(10)
    assert switch.observe(0.0, now=103.0) is None  # caught up at 103
    # when it keeps up: nothing until 10 s after it last caught up, then the episode's end, once
    assert switch.observe(0.1, now=112.9) is None
    assert switch.observe(0.1, now=113.0) is Overload.CAUGHT_UP
    assert switch.observe(0.1, now=200.0) is None
    # then the episode's numbers: 34 frames skipped, behind twice, from 100 s to 103 s
    assert (switch.episode_skipped, switch.episode_entries, switch.episode_s) == (34, 2, 3.0)
    # and a later fall behind is a new episode, counted from zero; the total goes on
    assert switch.observe(0.9, now=201.0) is Overload.BEHIND
    switch.count_skipped(5)
    assert (switch.episode_skipped, switch.episode_entries, switch.skipped) == (5, 1, 39)


def test_init_when_thresholds_overlap_refuses():
    with pytest.raises(ValueError, match="below enter_lag_s"):
        OverloadSwitch(enter_lag_s=0.25, leave_lag_s=0.25)
