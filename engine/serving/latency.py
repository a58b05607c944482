"""Capture-to-event latency as a Prometheus-style histogram: cumulative bucket counts that a reader can diff
between two snapshots to get the quantiles of any interval (the engine's heartbeat carries a snapshot)."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

# seconds; fine below the 3 s target (stride + 1 s), coarse above
BUCKETS_S = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0, 3.5, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0,
             20.0, 30.0, 60.0, 120.0, float("inf"))


@dataclass
class LatencyHistogram:
    counts: list[int] = field(default_factory=lambda: [0] * len(BUCKETS_S))  # per bucket, not cumulative
    total_s: float = 0.0
    recent: deque = field(default_factory=deque)  # (monotonic time, seconds) of the last `RECENT_S`

    RECENT_S = 30.0

    def observe(self, seconds: float, now: float) -> None:
        for k, upper in enumerate(BUCKETS_S):
            if seconds <= upper:
                self.counts[k] += 1
                break
        self.total_s += seconds
        self.recent.append((now, seconds))
        self._trim(now)

    def recent_max(self, now: float) -> float:
        """The largest latency observed in the last RECENT_S seconds (0 when none)."""
        self._trim(now)
        return max((s for _, s in self.recent), default=0.0)

    def _trim(self, now: float) -> None:
        while self.recent and self.recent[0][0] < now - self.RECENT_S:
            self.recent.popleft()

    @property
    def count(self) -> int:
        return sum(self.counts)


def quantile(q: float, counts: list[int]) -> float:
    """The q-quantile of per-bucket counts (linear within a bucket, like Prometheus' histogram_quantile);
    NaN when empty; the last finite bound when it falls in the open top bucket."""
    n = sum(counts)
    if n == 0:
        return float("nan")
    rank = q * n
    seen = 0
    for k, c in enumerate(counts):
        if c and seen + c >= rank:
            lo = BUCKETS_S[k - 1] if k else 0.0
            hi = BUCKETS_S[k]
            if hi == float("inf"):
                return lo
            return lo + (hi - lo) * (rank - seen) / c
        seen += c
    return BUCKETS_S[-2]


def diff(after: list[int], before: list[int]) -> list[int]:
    return [a - b for a, b in zip(after, before)]
