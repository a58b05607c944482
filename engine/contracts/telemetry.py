"""Redis-held counters and histograms, so that `/metrics` on the API shows every role's numbers.

Why Redis and not a `/metrics` port per process: engine workers scale out (`--scale engine=3`, any
host) and come and go; counters kept in one Redis hash per role (`Keys.telemetry(role)`) survive
restarts, add up across workers without a scrape target per worker, and the API turns them into
Prometheus metrics at scrape time (`api/metrics.py`). Each update is one HINCRBY/HINCRBYFLOAT
pipeline on one key (a single slot: Cluster-safe). A failed update is logged and dropped: telemetry
never stops the work.

Fields: `<name>|<label>=<value>,...` for counters; histograms as non-cumulative bucket counts
`<name>|le=<bound>` (`+Inf` last) plus `<name>_sum` and `<name>_count`.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable

import redis

from stream.keys import Keys
from stream.redis_link import text
from stream.role import require_client

log = logging.getLogger(__name__)

# capture of the newest frame of a window -> its events written (seconds)
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
# one window through the engine (load frames, ground every query, commit)
WINDOW_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def field_name(name: str, labels: dict[str, str] | None = None) -> str:
    if not labels:
        return name
    return name + "|" + ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def parse_field(field: str) -> tuple[str, dict[str, str]]:
    name, _, rest = field.partition("|")
    labels = dict(p.split("=", 1) for p in rest.split(",")) if rest else {}
    return name, labels


def bucket_of(value: float, buckets: tuple[float, ...]) -> str:
    for b in buckets:
        if value <= b:
            return repr(float(b))
    return "+Inf"


class RedisCounters:
    """Counters and histograms of one role in one Redis hash."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self.client = require_client(client, "RedisCounters")
        self.key = key

    def update(self, counts: dict[str, float] | None = None,
               observations: Iterable[tuple[str, float, tuple[float, ...]]] = ()) -> None:
        """Add `counts` (field -> amount) and histogram observations (name, value, buckets) in one round trip."""
        try:
            pipe = self.client.pipeline(transaction=False)
            for f, by in (counts or {}).items():
                pipe.hincrby(self.key, f, int(by)) if float(by).is_integer() else pipe.hincrbyfloat(self.key, f, by)
            for name, value, buckets in observations:
                if not math.isfinite(value):
                    continue
                pipe.hincrby(self.key, f"{name}|le={bucket_of(value, buckets)}", 1)
                pipe.hincrbyfloat(self.key, f"{name}_sum", value)
                pipe.hincrby(self.key, f"{name}_count", 1)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("telemetry %s not updated: %s", self.key, exc)

    def read(self) -> dict[str, float]:
        return {text(k): float(v) for k, v in self.client.hgetall(self.key).items()}


class EngineTelemetry:
    """What engine workers count (engine/serving/worker.py): windows processed (with their duration and the
    capture-to-event latency of their events), skipped when behind, dead-lettered, and events by type."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.counters = RedisCounters(client, keys.telemetry("engine"))

    def window_processed(self, camera_id: str, duration_s: float, events: Iterable = (), newest_frame_ts: float | None = None,
                         now: float | None = None) -> None:
        """One window done: its duration, its events by type and, per event, capture-to-event latency
        (`now` minus the capture time of the window's newest frame)."""
        now = time.time() if now is None else now
        counts = {field_name("svl_windows_processed_total", {"camera": camera_id}): 1}
        obs = [("svl_engine_window_duration_seconds", duration_s, WINDOW_BUCKETS)]
        for e in events:
            f = field_name("svl_events_total", {"type": e.type.value})
            counts[f] = counts.get(f, 0) + 1
            if newest_frame_ts is not None:
                obs.append(("svl_capture_to_event_latency_seconds", max(0.0, now - newest_frame_ts), LATENCY_BUCKETS))
        self.counters.update(counts, obs)

    def window_skipped(self, camera_id: str, reason: str) -> None:
        """A live window the engine skipped because it was behind (`superseded` by a newer one, or `stale`)."""
        self.counters.update({field_name("svl_windows_skipped_total", {"camera": camera_id, "reason": reason}): 1})

    def window_dead(self, camera_id: str) -> None:
        self.counters.update({field_name("svl_windows_dead_lettered_total", {"camera": camera_id}): 1})

    def events_published(self, events: Iterable) -> None:
        """Events written outside a window (ends for a stopped camera or a removed query)."""
        counts: dict[str, float] = {}
        for e in events:
            f = field_name("svl_events_total", {"type": e.type.value})
            counts[f] = counts.get(f, 0) + 1
        if counts:
            self.counters.update(counts)
