"""Frame sampling by timestamp and sliding windows: pure logic, no I/O."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass


class FrameSampler:
    """Keeps frames at `sample_fps` by timestamp (not by counting frames).

    A frame is kept when it reaches the next due time; the due time advances on a fixed
    grid, so jitter does not accumulate; after a gap the grid restarts at the new frame.
    """

    def __init__(self, sample_fps: float) -> None:
        if sample_fps <= 0:
            raise ValueError("sample_fps must be > 0")
        self.period_ms = 1000.0 / sample_fps
        self.next_due_ms: float | None = None
        self.tolerance_ms = 0.0

    def keep(self, ts_ms: float, frame_period_ms: float = 0.0) -> bool:
        # a frame up to half a source frame early counts as on time (25 fps into 2 fps: 12.5 frames apart)
        tol = frame_period_ms / 2
        if self.next_due_ms is None or ts_ms >= self.next_due_ms + self.period_ms * 2:
            self.next_due_ms = ts_ms + self.period_ms
            return True
        if ts_ms + tol >= self.next_due_ms:
            self.next_due_ms += self.period_ms
            return True
        return False

    def reset(self) -> None:
        self.next_due_ms = None


@dataclass(frozen=True)
class WindowSpec:
    start_ms: int
    end_ms: int  # exclusive: start + window length
    frames_ms: tuple[int, ...]


class WindowBuilder:
    """Emits a window when the sampled frames cover [start, start + window); then start += stride."""

    def __init__(self, window_s: float, stride_s: float, sample_fps: float) -> None:
        if window_s <= 0 or stride_s <= 0:
            raise ValueError("window_seconds and stride_seconds must be > 0")
        self.window_ms = int(round(window_s * 1000))
        self.stride_ms = int(round(stride_s * 1000))
        self.period_ms = 1000.0 / sample_fps
        self.frames: deque[int] = deque()
        self.start_ms: int | None = None

    def add(self, ts_ms: int) -> list[WindowSpec]:
        if self.frames and ts_ms <= self.frames[-1]:
            return []  # out of order or duplicate: ignored (the caller logs discontinuities)
        if self.start_ms is None:
            self.start_ms = ts_ms
        self.frames.append(ts_ms)
        out = []
        # the window is complete when a frame at or beyond its last slot has arrived
        while ts_ms >= self.start_ms + self.window_ms - self.period_ms * 1.5:
            end = self.start_ms + self.window_ms
            inside = tuple(t for t in self.frames if self.start_ms - self.period_ms / 2 <= t < end - self.period_ms / 2)
            if inside:
                out.append(WindowSpec(self.start_ms, end, inside))
            self.start_ms += self.stride_ms
            if inside and self.frames and self.start_ms < self.frames[0] - self.period_ms:
                self.start_ms = self.frames[0]
            while self.frames and self.frames[0] < self.start_ms - self.period_ms:
                self.frames.popleft()
            if not self.frames:
                self.start_ms = ts_ms
                break
        return out

    def reset(self) -> None:
        self.frames.clear()
        self.start_ms = None
