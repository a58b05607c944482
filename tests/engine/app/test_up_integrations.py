"""A live `spacevllm up` where integrators meet it: a real mosquitto sees its events, retained states, snapshots and
Home Assistant discovery, then `offline` when it stops; a real Prometheus scrapes its /metrics with a read token and
an alert rule of deploy/alerts.yml goes to firing.

One `up` for the module (it is the slow part): a demo camera that runs and a camera that cannot connect."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from api.metrics import METRICS
from stream.redis_server import free_port
from tests.engine.app.up_process import UpProcess
from tests.mqtt_broker import MOSQUITTO, Mosquitto, Subscriber, retained
from tests.waiting import stop_process, wait_for, wait_until

ROOT = Path(__file__).resolve().parents[3]
BROKER_SECRET = "mqtt-Secret-9"
DEMO_QUERIES = ("red-circle", "yellow-triangle", "blue-square", "green-triangle")


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto not installed (apt-get install mosquitto mosquitto-clients; .ci/run does)")
    b = Mosquitto(tmp_path_factory.mktemp("mosquitto")).start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def subscriber(broker):
    sub = Subscriber(broker.port, ["spacevllm/#", "homeassistant/#"])
    wait_for(sub.subscribed.is_set, 10, "the subscription")
    yield sub
    sub.close()


@pytest.fixture(scope="module")
def up(tmp_path_factory, broker, subscriber):
    from api.auth import Scope, add_token

    tmp = tmp_path_factory.mktemp("up")
    (tmp / "data").mkdir(mode=0o700)
    read_token = add_token(tmp / "data" / "api-tokens.json", "prometheus", Scope.READ)
    config = ("api:\n  port: 0\nmqtt:\n  discovery_every_s: 1\ncameras:\n  - id: demo\n    url: synthetic://demo?fps=10\n"
              f"  - id: door\n    url: rtsp://127.0.0.1:{free_port()}/live\n"
              "    open_timeout_s: 1\n    backoff_initial_s: 0.2\n    backoff_max_s: 0.5\n")
    proc = UpProcess(tmp, config, env={"SVL_MQTT_URL": f"mqtt://svl:{BROKER_SECRET}@127.0.0.1:{broker.port}"})
    proc.read_token = read_token
    try:
        proc.api()
        yield proc
    finally:
        proc.stop()


def test_up_with_mqtt_when_events_happen_then_the_broker_has_events_states_snapshots_and_discovery(up, broker, subscriber):
    # then every event arrives on <prefix>/events exactly as the API serves it
    first = json.loads(wait_for(lambda: subscriber.on("spacevllm/events"), 120, "an event over MQTT")[0].payload)
    with up.client() as http:
        served = http.get("/v1/events", params={"camera": first["camera_id"], "limit": 100}).json()["events"]
    assert any(e == first for e in served), (first, served[:3])
    # and its (camera, query) state is ON, retained
    state = f"spacevllm/{first['camera_id']}/{first['query_id']}/state"
    assert subscriber.on(state)[0].payload == b"ON"
    # and the media worker's snapshot follows, retained
    snapshot = wait_for(lambda: [m for m in subscriber.messages if m.topic.endswith("/snapshot") and m.payload], 90,
                        "a snapshot over MQTT")[0]
    assert snapshot.payload[:2] == b"\xff\xd8"
    assert retained(broker.port, snapshot.topic)[snapshot.topic][:2] == b"\xff\xd8"
    # and Home Assistant discovery has a binary sensor per (camera, query): both cameras, every demo query
    configs = wait_for(lambda: (lambda r: r if len(r) == 8 else None)(retained(broker.port, "homeassistant/#")), 30,
                       "eight discovery configs")
    assert set(configs) == {f"homeassistant/binary_sensor/spacevllm_{c}_{q}/config"
                            for c in ("demo", "door") for q in DEMO_QUERIES}
    sensor = json.loads(configs["homeassistant/binary_sensor/spacevllm_demo_red-circle/config"])
    assert sensor["state_topic"] == "spacevllm/demo/red-circle/state" and sensor["name"] == "the red circle moving right"
    assert retained(broker.port, "spacevllm/available") == {"spacevllm/available": b"online"}


def _prometheus(tmp: Path, api_url: str, token: str, rules: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(rules)],
              "scrape_configs": [{"job_name": "spacevllm", "metrics_path": "/metrics",
                                  "authorization": {"type": "Bearer", "credentials": token},
                                  "static_configs": [{"targets": [api_url.removeprefix("http://")]}]}]}
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([shutil.which("prometheus"), f"--config.file={tmp / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=(tmp / "prometheus.log").open("w"))
    return proc, f"http://127.0.0.1:{port}"


def test_prometheus_when_scraping_up_then_svl_series_have_their_labels_and_a_forced_rule_fires(up, tmp_path):
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus not installed (apt-get install prometheus; .ci/run does)")
    # given deploy/alerts.yml with its waits shortened to seconds (the conditions themselves as shipped)
    rules = (ROOT / "deploy" / "alerts.yml").read_text()
    rules = re.sub(r"for: \d+m", "for: 2s", rules)
    (tmp_path / "alerts.yml").write_text(rules)
    prom, url = _prometheus(tmp_path, up.api(), up.read_token, tmp_path / "alerts.yml")

    def query(q: str) -> list[dict]:
        try:
            r = httpx.get(f"{url}/api/v1/query", params={"query": q}, timeout=5)
        except httpx.HTTPError:
            return []
        return r.json()["data"]["result"] if r.status_code == 200 else []

    try:
        # then the target is scraped with the read token
        wait_for(lambda: query('up{job="spacevllm"} == 1'), 60,
                 f"a successful scrape ({(tmp_path / 'prometheus.log').read_text()[-1500:]})")
        # and the svl_ series are there, each with its documented labels (plus job and instance)
        wait_for(lambda: query('svl_mqtt_deliveries_total{result="published"} > 0'), 60, "the MQTT deliveries counter")
        series = query('{__name__=~"svl_.+"}')
        documented = {}
        for name, (kind, _, labels) in METRICS.items():
            names = {"counter": [name, name.removesuffix("_total") + "_created"],  # _created: prometheus_client's own
                     "gauge": [name], "histogram": [f"{name}_bucket", f"{name}_sum", f"{name}_count"]}[kind]
            for n in names:
                documented[n] = set(labels) | ({"le"} if n.endswith("_bucket") else set())
        seen = {s["metric"]["__name__"] for s in series}
        for s in series:
            name = s["metric"]["__name__"]
            assert set(s["metric"]) - {"__name__", "job", "instance"} == documented[name], s["metric"]
        assert {"svl_workers", "svl_camera_state", "svl_events_total", "svl_role_up", "svl_consumer_group_lag",
                "svl_capture_to_event_latency_seconds_bucket", "svl_windows_processed_total"} <= seen
        assert {s["metric"]["role"] for s in query("svl_workers > 0")} >= {"ingest", "engine", "media", "mqtt"}
        # and the camera that cannot connect fires SpaceVLLMCameraNotRunning (and only for that camera)
        def firing():
            r = httpx.get(f"{url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
            return [a for a in r if a["state"] == "firing" and a["labels"]["alertname"] == "SpaceVLLMCameraNotRunning"]

        alerts = wait_for(firing, 60, "SpaceVLLMCameraNotRunning firing")
        assert {a["labels"]["camera"] for a in alerts} == {"door"} and alerts[0]["labels"]["severity"] == "page"
    finally:
        stop_process(prom)


def test_up_with_mqtt_when_stopped_then_offline_and_states_off_are_retained(up, broker, subscriber):
    wait_until(lambda: subscriber.on("spacevllm/events"), 120)
    out = up.stop()
    # then the publisher said goodbye after the engine's last ends: offline, and every state the broker holds is OFF
    subscriber.wait_last("spacevllm/available", b"offline", timeout_s=30)
    states = retained(broker.port, "spacevllm/+/+/state")
    assert states and set(states.values()) == {b"OFF"}, states
    # and the broker's password was never printed
    assert BROKER_SECRET not in out and f"mqtt://svl:***@127.0.0.1:{broker.port}" in out
