"""`/metrics`: Prometheus exposition of the whole deployment, read from Redis at scrape time.

Every number that ingest and engine workers keep is in Redis already (camera health hashes, the
Redis-held engine and webhook counters of `engine/contracts/telemetry.py`, the window streams' consumer
groups), so one scrape of the API shows all of them, however many engine workers run and wherever.
Scrape one API process (several would report the same numbers). Names follow Prometheus
conventions: `svl_` prefix, `_total` counters, `_seconds` units, a `camera` label and no other
high-cardinality label. `deploy/prometheus.yml` and `deploy/grafana-dashboard.json` use exactly these.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import redis
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from engine.contracts.telemetry import LATENCY_BUCKETS, WINDOW_BUCKETS, parse_field
from stream.health import CameraState, read_health
from stream.keys import Keys
from stream.redis_link import text
from stream.role import ROLES, StatusBoard

log = logging.getLogger(__name__)

# name -> (type, help, labels); the one list of what /metrics exposes (tests and deploy/ files check against it)
METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "svl_frames_decoded_total": ("counter", "Frames decoded per camera", ("camera",)),
    "svl_frames_dropped_total": ("counter", "Frames dropped per camera, by reason (late: behind real time; redis: Redis could "
                                 "not store them; overload: not decoded, the camera was behind and decoded key frames only)",
                                 ("camera", "reason")),
    "svl_camera_fps": ("gauge", "Decoded frames per second per camera", ("camera",)),
    "svl_camera_state": ("gauge", "1 for the camera's current state (connecting, running, reconnecting, failed, stopped)",
                         ("camera", "state")),
    "svl_camera_reconnects_total": ("counter", "Reconnections per camera", ("camera",)),
    "svl_windows_produced_total": ("counter", "Windows written by ingest per camera", ("camera",)),
    "svl_windows_processed_total": ("counter", "Windows grounded by engine workers per camera", ("camera",)),
    "svl_windows_dead_lettered_total": ("counter", "Windows moved to the dead-letter stream per camera", ("camera",)),
    "svl_windows_skipped_total": ("counter", "Live windows the engine skipped because it was behind, by reason (superseded: "
                                  "a newer window of the camera was waiting; stale: older than engine.max_window_lag_s)",
                                  ("camera", "reason")),
    "svl_engine_window_duration_seconds": ("histogram", "Engine time per window (frames, grounding, commit)", ()),
    "svl_capture_to_event_latency_seconds": ("histogram", "From the capture of a window's newest frame to its events written", ()),
    "svl_consumer_group_lag": ("gauge", "Windows not yet delivered to any engine worker (all shards)", ()),
    "svl_consumer_group_pending": ("gauge", "Windows delivered to an engine worker and not yet acknowledged (all shards)", ()),
    "svl_events_total": ("counter", "Grounding events published, by type", ("type",)),
    "svl_webhook_deliveries_total": ("counter", "Webhook deliveries by final result (delivered, gave_up, dropped)", ("result",)),
    "svl_webhook_attempt_failures_total": ("counter", "Failed webhook attempts (each retry counts)", ()),
    "svl_mqtt_deliveries_total": ("counter", "Events the MQTT publisher delivered, by result (published: every message "
                                  "acknowledged by the broker; gave_up: skipped after an error)", ("result",)),
    "svl_workers": ("gauge", "Workers with a fresh heartbeat, by role", ("role",)),
    "svl_role_up": ("gauge", "1 while a supervised role runs, 0 while its supervisor restarts it or gave up", ("role", "supervisor")),
    "svl_role_restarts": ("gauge", "Times the supervisor restarted the role since it started", ("role", "supervisor")),
    "svl_api_requests_total": ("counter", "HTTP requests served by this API process", ("method", "route", "status")),
    "svl_api_event_streams": ("gauge", "Open SSE event streams on this API process", ()),
}
HISTOGRAM_BUCKETS = {"svl_engine_window_duration_seconds": WINDOW_BUCKETS,
                     "svl_capture_to_event_latency_seconds": LATENCY_BUCKETS}




def _family(name: str) -> Metric:
    kind, doc, labels = METRICS[name]
    if kind == "counter":
        return CounterMetricFamily(name, doc, labels=labels)
    if kind == "gauge":
        return GaugeMetricFamily(name, doc, labels=labels)
    return HistogramMetricFamily(name, doc, labels=labels)


class RedisCollector:
    """Builds the deployment's metrics from Redis on every scrape."""

    def __init__(self, client: redis.Redis, keys: Keys, camera_ids: Callable[[], set[str]],
                 open_streams: Callable[[], int] = lambda: 0) -> None:
        self.client = client
        self.keys = keys
        self.camera_ids = camera_ids
        self.open_streams = open_streams

    def describe(self) -> list:
        return []  # collected fresh at scrape time

    def collect(self) -> Iterator[Metric]:
        fam = {name: _family(name) for name, (kind, _, _) in METRICS.items() if name != "svl_api_requests_total"}
        try:
            self._cameras(fam)
            self._telemetry(fam, "engine")
            self._telemetry(fam, "webhooks")
            self._telemetry(fam, "mqtt")
            self._groups(fam)
            for role in ROLES:
                fam["svl_workers"].add_metric([role], sum(1 for _ in self.client.scan_iter(self.keys.heartbeat_pattern(role), count=100)))
            for st in StatusBoard.read(self.client, self.keys):
                fam["svl_role_up"].add_metric([st.role, st.supervisor], 1.0 if st.state == "running" else 0.0)
                fam["svl_role_restarts"].add_metric([st.role, st.supervisor], st.restarts)
        except redis.RedisError as exc:
            log.warning("metrics: Redis unavailable: %s", exc)
        fam["svl_api_event_streams"].add_metric([], self.open_streams())
        yield from fam.values()

    def _cameras(self, fam) -> None:
        for cam in sorted(self.camera_ids()):
            try:
                h = read_health(self.client, self.keys, cam)
            except ValueError as exc:
                log.warning("metrics: %s", exc)
                continue
            if h is None:
                continue
            fam["svl_frames_decoded_total"].add_metric([cam], h.frames_decoded)
            fam["svl_frames_dropped_total"].add_metric([cam, "late"], h.frames_dropped_late)
            fam["svl_frames_dropped_total"].add_metric([cam, "redis"], h.frames_dropped_redis)
            fam["svl_frames_dropped_total"].add_metric([cam, "overload"], h.frames_dropped_overload)
            fam["svl_camera_fps"].add_metric([cam], h.fps)
            for st in CameraState:
                fam["svl_camera_state"].add_metric([cam, st.value], 1.0 if h.state is st else 0.0)
            fam["svl_camera_reconnects_total"].add_metric([cam], h.reconnects)
            fam["svl_windows_produced_total"].add_metric([cam], h.windows)

    def _telemetry(self, fam, role: str) -> None:
        raw = {text(k): float(v) for k, v in self.client.hgetall(self.keys.telemetry(role)).items()}
        for field, value in raw.items():
            name, labels = parse_field(field)
            if name in fam and METRICS[name][0] == "counter":
                fam[name].add_metric([labels.get(label, "") for label in METRICS[name][2]], value)
        for name, buckets in HISTOGRAM_BUCKETS.items():
            if role != "engine":
                continue
            cumulative, out = 0.0, []
            for b in buckets:
                cumulative += raw.get(f"{name}|le={float(b)!r}", 0.0)
                out.append((repr(float(b)), cumulative))
            cumulative += raw.get(f"{name}|le=+Inf", 0.0)
            out.append(("+Inf", cumulative))
            fam[name].add_metric([], out, raw.get(f"{name}_sum", 0.0))

    def _groups(self, fam) -> None:
        lag = pending = 0
        for s in self.keys.all_shards():
            try:
                groups = self.client.xinfo_groups(self.keys.windows(s))
            except redis.ResponseError:  # no stream yet
                continue
            for g in groups:
                g = {text(k): v for k, v in g.items()}
                pending += int(g.get("pending") or 0)
                if g.get("lag") is not None:  # Redis >= 7
                    lag += int(g["lag"])
                else:  # Redis 6.2: what is left after the group's last delivered id
                    last = text(g.get("last-delivered-id", "0-0"))
                    lag += self.client.xlen(self.keys.windows(s)) if last == "0-0" else len(
                        self.client.xrange(self.keys.windows(s), f"({last}", "+", count=100_000))
        fam["svl_consumer_group_lag"].add_metric([], lag)
        fam["svl_consumer_group_pending"].add_metric([], pending)


def build_registry(client: redis.Redis, keys: Keys, camera_ids: Callable[[], set[str]],
                   open_streams: Callable[[], int]) -> tuple[CollectorRegistry, Counter]:
    """A registry of this app (never the process-global one) and its request counter."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(client, keys, camera_ids, open_streams))
    kind, doc, labels = METRICS["svl_api_requests_total"]
    requests = Counter("svl_api_requests", doc, labels, registry=registry)
    return registry, requests
