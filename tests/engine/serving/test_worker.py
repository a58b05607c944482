"""The engine worker with real Redis and real model code: idempotency, crash, restart, end to end."""
from __future__ import annotations

from tests.engine.harness import ALWAYS, add_queries, events_of, ingest, pending, worker
from tests.waiting import pending_idle_at_least

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from engine.contracts.events import GroundingEvent
from engine.contracts.settings import DEFAULT_MODEL_DIR
from stream.config import WindowSettings
from stream.keys import Keys
from stream.types import Window

def test_the_same_window_processed_twice_yields_no_duplicate(redis_client, tiny_model_dir):
    keys = Keys("dup:")
    ingest(redis_client, keys)
    add_queries(redis_client, keys, ALWAYS)
    w = worker(redis_client, keys, tiny_model_dir)
    w.setup()
    w.watcher.refresh()
    delivery = w.source.next()[0]
    first = w.handle(delivery)
    assert first and {e.type.value for e in first} == {"new"}
    again = w.handle(delivery)  # the same window delivered again (claimed from a slow worker)
    assert again == [] and len(events_of(redis_client, keys)) == len(first)


def _reference(redis_client, model_dir) -> list[dict]:
    keys = Keys("ref:")
    ingest(redis_client, keys)
    add_queries(redis_client, keys, ALWAYS)
    worker(redis_client, keys, model_dir).run(idle_exit_s=1.0)
    ref = events_of(redis_client, keys)
    assert len(ref) > 10
    return ref


def test_restart_loses_and_repeats_nothing(redis_client, tiny_model_dir):
    ref = _reference(redis_client, tiny_model_dir)
    keys = Keys("rst:")
    ingest(redis_client, keys)
    add_queries(redis_client, keys, ALWAYS)
    # when the engine stops after 5 windows and a new one starts
    worker(redis_client, keys, tiny_model_dir).run(max_windows=5)
    worker(redis_client, keys, tiny_model_dir).run(idle_exit_s=1.0)
    # then the events are exactly those of an uninterrupted run
    assert events_of(redis_client, keys) == ref


def test_a_worker_killed_while_holding_a_window_loses_nothing(redis_client, redis_url, tiny_model_dir, tmp_path):
    ref = _reference(redis_client, tiny_model_dir)
    keys = Keys("crash:")
    ingest(redis_client, keys)
    add_queries(redis_client, keys, ALWAYS)
    cfg = tmp_path / "engine.yaml"
    cfg.write_text(yaml.safe_dump({"redis": {"url": redis_url, "prefix": "crash:"},
                                   "engine": {"model": str(tiny_model_dir), "claim_idle_ms": 200, "block_ms": 100}}))
    # given a worker process that is in the middle of a window
    proc = subprocess.Popen([sys.executable, "-m", "engine.app.cli", "engine", "--config", str(cfg), "--consumer", "victim"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        held = False

        done_pattern = keys.window_done("cam1", "*")
        while time.monotonic() < deadline and not held:
            done = len(list(redis_client.scan_iter(match=done_pattern)))
            if pending(redis_client, keys) == 1 and done >= 3:
                os.kill(proc.pid, signal.SIGSTOP)  # freeze it, then make sure it still holds the window
                held = pending(redis_client, keys) == 1
                if not held:
                    os.kill(proc.pid, signal.SIGCONT)
        assert held, "the worker never held a window"
        # when it is SIGKILLed while holding it
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert pending(redis_client, keys) >= 1
    for s in keys.all_shards():  # claimable by the second worker (claim_idle_ms 200)
        if redis_client.exists(keys.windows(s)):
            pending_idle_at_least(redis_client, keys.windows(s), "engines", 200)
    # then a second worker claims the window and finishes the stream
    worker(redis_client, keys, tiny_model_dir, claim_idle_ms=200).run(idle_exit_s=1.0)
    assert pending(redis_client, keys) == 0
    # and the events equal those of an uninterrupted run: no loss, no duplicate
    got = events_of(redis_client, keys)
    assert len({e["event_id"] + e["type"] + str(e["end_ts"]) for e in got}) == len(got)
    assert_same_events(got, ref)


def assert_same_events(got: list[dict], ref: list[dict]) -> None:
    """Identical event sequences; floats from another process may differ in the last digits."""
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        for k in ("type", "event_id", "query_id", "camera_id", "window_id", "start_ts", "end_ts", "frame_size"):
            assert g[k] == r[k], (k, g, r)
        assert abs(g["score"] - r["score"]) < 1e-3
        assert [b["ts"] for b in g["boxes"]] == [b["ts"] for b in r["boxes"]]
        for gb, rb in zip(g["boxes"], r["boxes"]):
            assert max(abs(x - y) for x, y in zip(gb["xyxy"], rb["xyxy"])) < 1.0


SHIPPED = pytest.mark.skipif(not (Path(DEFAULT_MODEL_DIR) / "model.safetensors").is_file(), reason="the shipped model is missing")
DEMO_URL = "synthetic://demo?fps=10&realtime=0&seconds=20&epoch=2000"


def _demo_events(redis_client, prefix: str, queries) -> list[GroundingEvent]:
    keys = Keys(prefix)
    ingest(redis_client, keys, DEMO_URL, WindowSettings(sample_fps=2, window_seconds=8, stride_seconds=2, input_size=64), cam="demo")
    add_queries(redis_client, keys, queries)
    worker(redis_client, keys, DEFAULT_MODEL_DIR).run(idle_exit_s=1.0)
    return [GroundingEvent.from_dict(e) for e in events_of(redis_client, keys)]


@SHIPPED
def test_end_to_end_synthetic_camera_to_events_with_the_shipped_model(redis_client):
    from engine.model.boxes import iou_xyxy
    from stream.scenes import box_at
    from stream.sources import SyntheticSource

    # given the demo camera (deterministic clock) and a query for an object it shows
    # when ingest and the engine process every window
    events = _demo_events(redis_client, "e2e:", [{"id": "red", "text": "the red circle moving right", "cooldown_s": 2.0}])
    red = [e for e in events if e.query_id == "red"]
    assert red, "no event for the red circle"
    last = red[-1]
    scene, _ = SyntheticSource(DEMO_URL).truth(0.0)
    target = next(o for o in scene.objects if o.colour == "red")
    true_span = (2000 + target.t_in, 2000 + target.t_out)  # episode 0 starts at the epoch
    # then the span overlaps the true span
    assert last.start_ts < true_span[1] and last.end_ts > true_span[0]
    # and the boxes overlap the true boxes (IoU > 0.3) on most frames inside the true span
    ious = []
    for b in last.boxes:
        t = b.ts - 2000
        if t >= 10.0:
            continue  # later episodes show other objects
        truth = box_at(target, t, scene.width, scene.height)
        if truth is not None:
            ious.append(float(iou_xyxy(b.xyxy, truth)))
    assert ious and sum(i > 0.3 for i in ious) / len(ious) > 0.5, ious


@SHIPPED
def test_end_to_end_a_query_for_an_absent_object_yields_no_event(redis_client):
    # given the demo camera, which never shows a green triangle (it shows a yellow one moving down)
    # when ingest and the engine process every window with a query for one, and one for the yellow triangle
    events = _demo_events(redis_client, "absent:", [{"id": "absent", "text": "the green triangle moving up", "cooldown_s": 2.0},
                                                    {"id": "present", "text": "the yellow triangle moving down", "cooldown_s": 2.0}])
    # then no event is published for the green triangle, while the same windows do yield the yellow one
    assert [e for e in events if e.query_id == "absent"] == []
    assert [e for e in events if e.query_id == "present"], "the yellow triangle was not found either"


# ---- admission: a live camera's windows when the engine is behind ------------------------------
def _live_windows(client, keys: Keys, cam: str, starts_ago_s: list[float], live: bool = True) -> list[Window]:
    """Windows of 4 s / 2 fps whose frames (random 32 px PNGs) were captured `starts_ago_s` before now."""
    import numpy as np

    from stream.imagecodec import encode_image
    from stream.store import WindowStore

    store = WindowStore(client, keys, frame_ttl_s=600)
    rng = np.random.default_rng(0)
    now_ms = int(time.time() * 1000)
    out = []
    for ago in starts_ago_s:
        start = now_ms - int(ago * 1000)
        frames = tuple(start + 500 * k for k in range(8))
        for ts in frames:
            store.put_frame(cam, ts, encode_image(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)))
        w = Window(cam, start, start + 4000, frames, (320, 240), 32, live)
        store.add_window(w)
        out.append(w)
    return out


def test_handle_batch_when_a_live_camera_is_behind_processes_its_newest_window_and_skips_the_rest(redis_client, tiny_model_dir, caplog):
    keys = Keys("adm:", shards=1)
    add_queries(redis_client, keys, ALWAYS)
    # given a live camera with three windows waiting (the engine is behind), a live window 60 s old,
    # and an old window of a file played offline
    behind = _live_windows(redis_client, keys, "cam-live", [9.0, 7.0, 5.0])
    stale = _live_windows(redis_client, keys, "cam-stale", [64.0])
    offline = _live_windows(redis_client, keys, "cam-file", [64.0], live=False)
    w = worker(redis_client, keys, tiny_model_dir, max_window_lag_s=30.0, batch_windows=8)
    # when the engine works off what is waiting
    with caplog.at_level("WARNING", logger="engine.serving.worker"):
        w.run(idle_exit_s=1.0)
    # then only the live camera's newest window and the offline window were grounded
    assert (w.stats.processed, w.stats.superseded, w.stats.stale) == (2, 2, 1)
    done = {win.window_id: redis_client.get(keys.window_done(win.camera_id, win.window_id)) for win in behind + stale + offline}
    assert done == {behind[0].window_id: b"superseded", behind[1].window_id: b"superseded", behind[2].window_id: b"1",
                    stale[0].window_id: b"stale", offline[0].window_id: b"1"}
    # and every window was acknowledged, the skips are counted in the heartbeat's metric and said in the log
    assert pending(redis_client, keys) == 0
    assert {e["window_id"] for e in events_of(redis_client, keys) if e["type"] == "new"} == {behind[2].window_id, offline[0].window_id}
    assert any("is behind: skipped" in r.getMessage() and "add engine workers" in r.getMessage() for r in caplog.records)


def test_heartbeat_when_windows_were_processed_carries_their_latency_histogram(redis_client, tiny_model_dir):
    import json

    from engine.serving.latency import quantile

    keys = Keys("lat:", shards=1)
    add_queries(redis_client, keys, ALWAYS)
    # given two live windows whose last frames were captured about 5.5 s and 3.5 s ago
    _live_windows(redis_client, keys, "cam-live", [9.0], live=True)
    _live_windows(redis_client, keys, "cam-live2", [7.0], live=True)
    w = worker(redis_client, keys, tiny_model_dir)
    w.run(idle_exit_s=1.0)
    # when the engine beats
    w.heartbeat()
    beat = json.loads(redis_client.get(keys.heartbeat("engine", w.consumer)))
    # then its latency histogram holds both windows, between 3.5 s and 10 s after capture
    assert sum(beat["latency_buckets"]) == 2 and beat["processed"] == 2
    assert 3.5 <= quantile(0.5, beat["latency_buckets"]) <= 10.0 and 3.5 <= beat["latency_max_30s"] <= 10.0


# ---- an overloaded ingest beside the engine ------------------------------------------------------
def test_run_when_ingest_is_overloaded_keeps_processing_its_windows(redis_client, tiny_model_dir, tmp_path, monkeypatch):
    import threading

    import stream.camera
    from stream.config import CameraSettings
    from stream.health import CameraHealth
    from stream.ingest import IngestService
    from tests.media import slow_decoding, write_h264
    from tests.waiting import wait_for

    keys = Keys("ovl:", shards=1)
    add_queries(redis_client, keys, ALWAYS)
    # given a real-time camera (12 s of 25 fps H.264, a key frame every 2 s) whose decoding needs 1.5x real time,
    # ingested at ingest's default priority, and an engine beside it in this process
    clip = write_h264(tmp_path / "cam.mp4", seconds=12, fps=25, size=(160, 120), gop=50, noise=True)
    monkeypatch.setattr(stream.camera, "open_source", slow_decoding(0.06))
    ingest_svc = IngestService(redis_client, keys, [CameraSettings(id="busy", url=f"file://{clip}")],
                               WindowSettings(sample_fps=2, window_seconds=4, stride_seconds=2, input_size=32, preview_size=0))
    ingesting = threading.Thread(target=ingest_svc.run, kwargs={"install_signals": False}, daemon=True)
    engine = worker(redis_client, keys, tiny_model_dir, batch_windows=1)
    grounding = threading.Thread(target=engine.run, daemon=True)

    def health() -> CameraHealth:
        return CameraHealth.from_dict("busy", redis_client.hgetall(keys.health("busy")))

    grounding.start()
    ingesting.start()
    try:
        # when the camera falls behind, then the engine grounds its windows while ingest is still skipping frames
        wait_for(lambda: engine.stats.processed >= 2 or not ingesting.is_alive(), 30, "two windows grounded")
        assert ingesting.is_alive() and health().frames_dropped_overload > 0
        # and once the camera has ended, every window it made was grounded (or skipped as the engine's own
        # admission allows), with events, and the frames not decoded are counted
        ingesting.join(30)
        assert not ingesting.is_alive()
        made = health().windows
        wait_for(lambda: engine.stats.processed + engine.stats.superseded + engine.stats.stale >= made, 20,
                 f"the engine to handle all {made} windows")
        assert made >= 3 and engine.stats.processed >= 3 and engine.stats.failed == 0
        assert events_of(redis_client, keys)
        h = health()
        assert h.frames_decoded + h.frames_dropped_overload == 300 and h.frames_dropped_overload > 0
    finally:
        ingest_svc.stop_event.set()
        engine.stop_event.set()
        ingesting.join(15)
        grounding.join(15)
