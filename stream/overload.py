"""A camera that falls behind real time decodes key frames only until it catches up: pure logic, no I/O.

Decoding is most of ingest's CPU, and a camera that cannot decode every frame in real time would otherwise
decode each one anyway and then drop it as late (`max_lag_s`): the CPU that is short spent on frames nobody
keeps. Instead, once a decoded frame is `enter_lag_s` behind, the source hands only key frames to the decoder
(the frames between two key frames depend on each other, so skipping any one means skipping to the next key
frame); the first key frame back within `leave_lag_s` returns it to decoding every frame. The gap between the two
thresholds (hysteresis) keeps it from flapping on jitter.

Behind what: the lag of a frame is measured from the capture clock, anchored when the connection's first frame
arrived (stream/camera.py), so it also holds delays that are not work piling up: a network path that got slower,
a camera clock drifting from ours (50 ppm is 0.18 s an hour). Those would hold a camera that keeps up in key
frames only for good. So the thresholds apply to the lag above the least lag of the last `baseline_s`: a backlog
shows there at once, a constant delay never. A backlog that grows too slowly to show (under `enter_lag_s` a
`baseline_s`) still reaches `drop_lag_s`, where frames are dropped as late: past it the camera is behind
whatever the baseline says.

Under a lasting overload the camera alternates: every group of pictures is decoded from its key frame until the
lag builds up again, and its rest is skipped. That is one *episode* for the operator: it starts the first time the
camera falls behind and ends once it has decoded every frame for `calm_s` without falling behind again, so the log
says one line when it starts and one when it ends (with the frames skipped), not one per group of pictures.
"""
from __future__ import annotations

from collections import deque
from enum import Enum

CALM_S = 10.0  # an episode ends after this long decoding every frame without falling behind again
BASELINE_S = 60.0  # the lag's baseline is its least value over this long


class Overload(str, Enum):
    BEHIND = "behind"  # the episode's first fall behind: key frames only from now
    CAUGHT_UP = "caught_up"  # decoded every frame for `calm_s`: the episode is over


class OverloadSwitch:
    """Decides, frame by frame from the lag of each decoded frame, whether the source decodes key frames only."""

    def __init__(self, enter_lag_s: float, leave_lag_s: float, drop_lag_s: float | None = None,
                 baseline_s: float = BASELINE_S, calm_s: float = CALM_S) -> None:
        if not 0 <= leave_lag_s < enter_lag_s:
            raise ValueError(f"leave_lag_s ({leave_lag_s}) must be >= 0 and below enter_lag_s ({enter_lag_s})")
        self.enter_lag_s = enter_lag_s
        self.leave_lag_s = leave_lag_s
        self.drop_lag_s = drop_lag_s  # None: no limit on the lag itself
        self.baseline_s = baseline_s
        self.calm_s = calm_s
        self.keyframes_only = False
        self.in_episode = False
        self.episode_since = 0.0  # when the current (or last) episode started
        self.episode_entries = 0  # times it fell behind in the current (or last) episode
        self.episode_skipped = 0  # frames not decoded in the current (or last) episode
        self.episode_s = 0.0  # the last episode's length, from falling behind to the last time it caught up
        self.skipped = 0  # frames not decoded, in all
        self._caught_up_at = 0.0
        self._lows: deque[tuple[float, float]] = deque()  # (when, lag), lags increasing: the window's minimum first

    def baseline(self, lag_s: float, now: float) -> float:
        """The least lag over the last `baseline_s`, this one included (a sliding-window minimum)."""
        while self._lows and self._lows[-1][1] >= lag_s:
            self._lows.pop()
        self._lows.append((now, lag_s))
        while self._lows[0][0] < now - self.baseline_s:
            self._lows.popleft()
        return self._lows[0][1]

    def observe(self, lag_s: float, now: float) -> Overload | None:
        """A frame was decoded `lag_s` behind real time at `now` (seconds, any clock): switch modes as due; says when
        an episode starts or ends."""
        excess = lag_s - self.baseline(lag_s, now)
        if self.keyframes_only:
            if excess < self.leave_lag_s:
                self.keyframes_only = False
                self._caught_up_at = now
            return None
        if excess > self.enter_lag_s or (self.drop_lag_s is not None and lag_s > self.drop_lag_s):
            self.keyframes_only = True
            self.episode_entries += 1
            if not self.in_episode:
                self.in_episode = True
                self.episode_since, self.episode_entries, self.episode_skipped = now, 1, 0
                return Overload.BEHIND
            return None
        if self.in_episode and now - self._caught_up_at >= self.calm_s:
            self.in_episode = False
            self.episode_s = self._caught_up_at - self.episode_since
            return Overload.CAUGHT_UP
        return None

    def count_skipped(self, frames: int) -> None:
        """`frames` were not decoded (the source skipped them while `keyframes_only`)."""
        self.skipped += frames
        self.episode_skipped += frames
