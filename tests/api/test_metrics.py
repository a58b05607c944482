"""`/metrics` scraped over real HTTP and parsed with prometheus_client's parser; the deploy/ files use
exactly the exported names."""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import METRICS
from engine.contracts.telemetry import EngineTelemetry, RedisCounters, field_name
from stream.health import CameraHealth, CameraState
from stream.role import StatusBoard
from tests.api.conftest import KEYS
from tests.api.events_helpers import make_event

ROOT = Path(__file__).resolve().parents[2]


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample_names() -> set[str]:
    names = set()
    for name, (kind, _, _) in METRICS.items():
        names |= {name} if kind != "histogram" else {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def test_metrics_when_scraped_then_every_role_is_reported_and_parses(api, redis_client):
    # given a camera's health, engine counters, webhook counters and a consumer group with lag and pending windows
    h = CameraHealth("cam1").moved(CameraState.RUNNING, fps=9.5, frames_decoded=120, frames_dropped=10, frames_dropped_late=5,
                                   frames_dropped_redis=2, frames_dropped_overload=3, reconnects=3, windows=11)
    redis_client.sadd(KEYS.cameras(), "cam1")
    redis_client.hset(KEYS.health("cam1"), mapping=h.to_dict())
    tel = EngineTelemetry(redis_client, KEYS)
    tel.window_processed("cam1", 0.2, [make_event(1), make_event(2, type_="end")], newest_frame_ts=100.0, now=101.5)
    tel.window_processed("cam1", 0.03, [], newest_frame_ts=100.0, now=101.0)
    tel.window_dead("cam1")
    tel.window_skipped("cam1", "superseded")
    RedisCounters(redis_client, KEYS.telemetry("webhooks")).update(
        {field_name("svl_webhook_deliveries_total", {"result": "delivered"}): 4, "svl_webhook_attempt_failures_total": 2})
    RedisCounters(redis_client, KEYS.telemetry("mqtt")).update({field_name("svl_mqtt_deliveries_total", {"result": "published"}): 7})
    stream = KEYS.windows_for("cam1")
    for i in range(5):
        redis_client.xadd(stream, {"camera": "cam1", "i": i})
    redis_client.xgroup_create(stream, "engines", id="0")
    redis_client.xreadgroup("engines", "w1", {stream: ">"}, count=2)
    redis_client.set(KEYS.heartbeat("engine", "w1"), "x", ex=10)
    board = StatusBoard(redis_client, KEYS, "up-1")
    board.set("media", "restarting", "RuntimeError: disk full", restarts=2)
    # when /metrics is scraped
    with api.client("read") as http:
        http.get("/v1/queries")
        r = http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    got = samples(r.text)
    # then the values are there, under the conventional names
    cam = (("camera", "cam1"),)
    assert got[("svl_frames_decoded_total", cam)] == 120
    assert got[("svl_frames_dropped_total", (("camera", "cam1"), ("reason", "late")))] == 5
    assert got[("svl_frames_dropped_total", (("camera", "cam1"), ("reason", "redis")))] == 2
    assert got[("svl_frames_dropped_total", (("camera", "cam1"), ("reason", "overload")))] == 3
    assert got[("svl_camera_fps", cam)] == 9.5
    assert got[("svl_camera_state", (("camera", "cam1"), ("state", "running")))] == 1
    assert got[("svl_camera_state", (("camera", "cam1"), ("state", "failed")))] == 0
    assert got[("svl_camera_reconnects_total", cam)] == 3
    assert got[("svl_windows_produced_total", cam)] == 11
    assert got[("svl_windows_processed_total", cam)] == 2
    assert got[("svl_windows_dead_lettered_total", cam)] == 1
    assert got[("svl_windows_skipped_total", (("camera", "cam1"), ("reason", "superseded")))] == 1
    assert got[("svl_events_total", (("type", "new"),))] == 1 and got[("svl_events_total", (("type", "end"),))] == 1
    assert got[("svl_engine_window_duration_seconds_count", ())] == 2
    assert got[("svl_engine_window_duration_seconds_bucket", (("le", "0.05"),))] == 1
    assert got[("svl_engine_window_duration_seconds_bucket", (("le", "+Inf"),))] == 2
    assert abs(got[("svl_engine_window_duration_seconds_sum", ())] - 0.23) < 1e-9
    assert got[("svl_capture_to_event_latency_seconds_count", ())] == 2
    assert got[("svl_capture_to_event_latency_seconds_bucket", (("le", "1.0"),))] == 0
    assert got[("svl_capture_to_event_latency_seconds_bucket", (("le", "2.0"),))] == 2
    assert got[("svl_consumer_group_lag", ())] == 3 and got[("svl_consumer_group_pending", ())] == 2
    assert got[("svl_webhook_deliveries_total", (("result", "delivered"),))] == 4
    assert got[("svl_webhook_attempt_failures_total", ())] == 2
    assert got[("svl_mqtt_deliveries_total", (("result", "published"),))] == 7
    assert got[("svl_workers", (("role", "engine"),))] == 1 and got[("svl_workers", (("role", "ingest"),))] == 0
    assert got[("svl_workers", (("role", "media"),))] == 0 and got[("svl_workers", (("role", "webhooks"),))] == 0
    assert got[("svl_role_up", (("role", "media"), ("supervisor", "up-1")))] == 0
    assert got[("svl_role_restarts", (("role", "media"), ("supervisor", "up-1")))] == 2
    assert any(n == "svl_api_requests_total" and dict(lab).get("route") == "/v1/queries" for n, lab in got)
    assert {n for n, _ in got} >= sample_names()
    # and no high-cardinality label
    assert {k for _, lab in got for k, _ in lab} <= {"camera", "reason", "state", "type", "result", "role", "le",
                                                      "method", "route", "status", "supervisor"}


def test_deploy_files_when_read_then_use_only_exported_names():
    dashboard = (ROOT / "deploy" / "grafana-dashboard.json").read_text()
    json.loads(dashboard)
    prom = (ROOT / "deploy" / "prometheus.yml").read_text()
    assert yaml.safe_load(prom)["scrape_configs"][0]["metrics_path"] == "/metrics"
    used = set(re.findall(r"\bsvl_[a-z_]+", dashboard)) | set(re.findall(r"\bsvl_[a-z_]+", prom))
    assert used and used <= sample_names(), used - sample_names()
    # every exported metric is on the dashboard
    assert [n for n in METRICS if n not in dashboard] == []


def test_metrics_when_an_engine_worker_has_run_then_its_counters_moved(api, redis_client, tiny_model_dir):
    from tests.engine.harness import ALWAYS, add_queries, events_of, ingest, worker

    # given a camera's windows worked off by a real engine worker (its query always matches)
    ingest(redis_client, KEYS)
    add_queries(redis_client, KEYS, ALWAYS)
    w = worker(redis_client, KEYS, tiny_model_dir)
    w.run(idle_exit_s=1.0)
    events = events_of(redis_client, KEYS)
    # when /metrics is scraped
    with api.client("read") as http:
        got = samples(http.get("/metrics").text)
    # then the engine's windows, events and latencies are counted, per camera and type
    assert got[("svl_windows_processed_total", (("camera", "cam1"),))] == w.stats.processed > 0
    for kind in ("new", "update", "end"):
        assert got.get(("svl_events_total", (("type", kind),)), 0) == sum(e["type"] == kind for e in events)
    assert got[("svl_engine_window_duration_seconds_count", ())] == w.stats.processed
    assert got[("svl_capture_to_event_latency_seconds_count", ())] > 0
