"""`/v1/cameras` against a running ingest: a camera added over HTTP produces windows without any
restart, shows its health, and stops when deleted."""
from __future__ import annotations

import threading

from engine.contracts.settings import CameraSettings, WindowSettings
from stream.cameras import CameraRegistry
from stream.ingest import IngestService
from tests.api.conftest import KEYS, RunningApi, start_api
from tests.waiting import still_true, wait_until

FAST = {"sample_fps": 4, "window_seconds": 1, "stride_seconds": 0.5, "input_size": 32, "frame_ttl_seconds": 30}


def test_add_camera_when_ingest_runs_then_windows_appear_without_restart(api, redis_client):
    # given an ingest that follows the camera registry, running with no camera at all
    stop = threading.Event()
    ingest = IngestService(redis_client, KEYS, [], WindowSettings(**FAST), stop=stop, registry=CameraRegistry(redis_client, KEYS),
                           reload_s=30.0)
    t = threading.Thread(target=ingest.run, kwargs={"install_signals": False}, daemon=True)
    t.start()
    try:
        with api.client("admin") as http:
            assert http.get("/v1/cameras").json() == []
            # when a camera is added over HTTP
            body = {"id": "live1", "url": "synthetic://demo?fps=10", "windows": FAST}
            r = http.post("/v1/cameras", json=body)
            assert r.status_code == 201, r.text
            assert http.post("/v1/cameras", json=body).status_code == 409
            # then windows appear for it, and its health is shown
            assert wait_until(timeout_s=15.0, predicate=lambda: redis_client.xlen(KEYS.windows_for("live1")) > 0)
            cam = wait_until(timeout_s=15.0, predicate=lambda: (c := http.get("/v1/cameras/live1").json())["health"] and c["health"]["frames_decoded"] > 0 and c)
            assert cam["health"]["state"] == "running" and cam["registered"] and cam["config"]["url"].startswith("synthetic://")
            assert set(cam["health"]) >= {"state", "fps", "frames_decoded", "frames_dropped", "reconnects", "last_error"}
            assert [c["id"] for c in http.get("/v1/cameras").json()] == ["live1"]
            # when it is deleted, then ingest stops it (no restart) and it stops producing windows
            assert http.delete("/v1/cameras/live1").status_code == 204
            assert wait_until(timeout_s=15.0, predicate=lambda: http.get("/v1/cameras/live1").json()["health"]["state"] == "stopped")
            n = redis_client.xlen(KEYS.windows_for("live1"))
            assert still_true(lambda: redis_client.xlen(KEYS.windows_for("live1")) == n, for_s=1.5)
            assert http.delete("/v1/cameras/live1").status_code == 404
            assert t.is_alive()  # the ingest process kept running throughout
    finally:
        stop.set()
        t.join(timeout=15)


def test_get_camera_when_url_has_a_password_then_it_is_redacted(api, redis_client):
    CameraRegistry(redis_client, KEYS).add(CameraSettings(id="door", url="rtsp://admin:hunter2@10.0.0.5:554/s1"))
    with api.client("read") as http:
        text = http.get("/v1/cameras").text
        assert "hunter2" not in text and "rtsp://admin:***@10.0.0.5:554/s1" in text
        assert http.get("/v1/cameras/nope").status_code == 404


def test_post_camera_when_invalid_then_422_names_the_field(api):
    with api.client("admin") as http:
        r = http.post("/v1/cameras", json={"id": "bad/id", "url": "x", "fps": 3})
        locs = [d["loc"] for d in r.json()["detail"]]
        assert r.status_code == 422 and ["body", "id"] in locs and ["body", "fps"] in locs


def test_post_camera_when_a_number_is_huge_then_422_and_ingest_never_sees_it(api, redis_client):
    # found by schemathesis: a frame TTL of 1e300 was stored, and every SET of that camera's frames then failed
    with api.client("admin") as http:
        for body in ({"id": "c1", "url": "synthetic://demo", "windows": {"frame_ttl_seconds": 1e300}},
                     {"id": "c2", "url": "synthetic://demo", "open_timeout_s": 1e12},
                     {"id": "c3", "url": "synthetic://demo", "max_retries": -1}):
            r = http.post("/v1/cameras", json=body)
            assert r.status_code == 422, r.text
    assert CameraRegistry(redis_client, KEYS).all() == []


def test_post_camera_when_the_url_is_bad_then_422_with_the_url_redacted(api, redis_client):
    with api.client("admin") as http:
        for url in ("rtsp://admin:hunter2@10.0.0.5:99999/s1", "gopher://admin:hunter2@10.0.0.5/s1",
                    "rtsp://admin:hunter2@:554/s1", "rtsp://admin:hunter2@10.0.0.5:5x4/s1"):
            r = http.post("/v1/cameras", json={"id": "door", "url": url})
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "url"], r.text
            assert "hunter2" not in r.text and "admin:***@" in r.text
    assert CameraRegistry(redis_client, KEYS).all() == []


def test_post_camera_when_a_file_is_outside_ingest_file_roots_then_422_naming_the_setting(redis_client, tmp_path):
    allowed = tmp_path / "videos"
    allowed.mkdir()
    (allowed / "a.mp4").write_bytes(b"")
    server = start_api(redis_client, webhooks=False)
    try:
        with RunningApi(server, server.url).client("admin") as http:
            # given no file_roots: no file camera at all
            r = http.post("/v1/cameras", json={"id": "f1", "url": f"file://{allowed}/a.mp4"})
            assert r.status_code == 422 and "ingest.file_roots (none configured)" in r.text
    finally:
        server.close()
    server = start_api(redis_client, webhooks=False, file_roots=(str(allowed),))
    try:
        with RunningApi(server, server.url).client("admin") as http:
            for url in ("file:///etc/passwd", f"file://{allowed}/../../etc/passwd", f"file://{allowed}/..%2F..%2Fx.mp4"):
                r = http.post("/v1/cameras", json={"id": "f1", "url": url})
                assert r.status_code == 422 and "ingest.file_roots" in r.text and r.json()["detail"][0]["loc"] == ["body", "url"]
            # given a file under a root: accepted
            assert http.post("/v1/cameras", json={"id": "f1", "url": f"file://{allowed}/a.mp4"}).status_code == 201
    finally:
        server.close()
