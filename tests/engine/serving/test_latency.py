"""The latency histogram the engine's heartbeat carries, and the quantiles read from two snapshots of it."""
from __future__ import annotations

import math

from engine.serving.latency import BUCKETS_S, LatencyHistogram, diff, quantile


def test_quantile_when_empty_is_nan():
    assert math.isnan(quantile(0.5, [0] * len(BUCKETS_S)))


def test_quantile_when_diffed_between_snapshots_covers_only_that_interval():
    h = LatencyHistogram()
    for s in (30.0, 40.0):  # warm-up: slow
        h.observe(s, now=0.0)
    before = list(h.counts)
    for k in range(100):  # steady state: 0.5 .. 1.5 s
        h.observe(0.5 + k / 100, now=1.0)
    steady = diff(h.counts, before)
    assert sum(steady) == 100
    assert 0.9 <= quantile(0.5, steady) <= 1.1 and 1.25 <= quantile(0.95, steady) <= 1.5
    assert quantile(0.99, h.counts) > 15.0  # the warm-up is in the totals


def test_recent_max_when_older_than_the_horizon_forgets():
    h = LatencyHistogram()
    h.observe(9.0, now=0.0)
    h.observe(1.0, now=20.0)
    assert h.recent_max(now=25.0) == 9.0
    assert h.recent_max(now=31.0) == 1.0
