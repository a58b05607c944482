"""Ingest with real parts: real Redis, real H.264 through PyAV, a real RTSP server."""
from __future__ import annotations

import json
import logging
import socket
import threading
import time

import pytest

from stream.cameras import CameraRegistry
from stream.config import CameraSettings, IngestSettings, WindowSettings
from stream.health import CameraHealth, CameraState
from stream.ingest import IngestService
from stream.keys import Keys
from stream.types import Window
from tests.waiting import redis_contents
from tests.waiting import wait_until as _wait

KEYS = Keys()


def _health(client, cam) -> CameraHealth | None:
    d = client.hgetall(KEYS.health(cam))
    return CameraHealth.from_dict(cam, d) if d else None


def _windows(client) -> list[Window]:
    return [Window.from_fields(f) for s in KEYS.all_shards() for _, f in client.xrange(KEYS.windows(s))]


def _start(client, cameras, windows):
    svc = IngestService(client, KEYS, cameras, windows)
    t = threading.Thread(target=svc.run, kwargs={"install_signals": False}, daemon=True)
    t.start()
    return svc, t


def test_windows_from_a_file_source_are_exact(redis_client, h264_file):
    # given a 6 s, 25 fps H.264 file, sampled at 2 fps into 2 s windows every 1 s
    cam = CameraSettings(id="file1", url=f"file://{h264_file}", realtime=False)
    windows = WindowSettings(sample_fps=2, window_seconds=2, stride_seconds=1, input_size=32)
    # when ingested to the end
    IngestService(redis_client, KEYS, [cam], windows).run(install_signals=False)
    got = _windows(redis_client)
    # then: 5 windows (starts 0..4 s), 4 frames each on the 0.5 s grid (within one source frame), stride 1 s
    assert len(got) == 5
    t0 = got[0].start_ms
    assert [w.start_ms - t0 for w in got] == [0, 1000, 2000, 3000, 4000]
    for w in got:
        assert w.end_ms - w.start_ms == 2000 and len(w.frames_ms) == 4
        assert w.frame_wh == (320, 240) and w.input_size == 32
        for k, ts in enumerate(w.frames_ms):
            assert abs(ts - (w.start_ms + 500 * k)) <= 20
    # and overlapping windows share frames: each frame is stored once, as a decodable 32x32 image
    from stream.imagecodec import decode_image

    frames = {ts for w in got for ts in w.frames_ms}
    assert len(frames) == 12
    for ts in frames:
        assert decode_image(redis_client.get(KEYS.frame("file1", ts))).shape == (32, 32, 3)
    h = _health(redis_client, "file1")
    assert h.state is CameraState.STOPPED and h.frames_decoded == 150 and h.windows == 5


def test_rtsp_camera_reconnects_after_the_server_restarts(redis_client, rtsp_server):
    # given an RTSP camera that is running
    cam = CameraSettings(id="rtsp1", url=rtsp_server.url, open_timeout_s=3, read_timeout_s=2,
                         backoff_initial_s=0.2, backoff_max_s=1.0)
    windows = WindowSettings(sample_fps=2, window_seconds=1, stride_seconds=1, input_size=32)
    svc, thread = _start(redis_client, [cam], windows)
    try:
        assert _wait(lambda: (h := _health(redis_client, "rtsp1")) and h.state is CameraState.RUNNING and h.windows > 0, 20)
        # when the server dies mid-stream
        rtsp_server.stop()
        assert _wait(lambda: _health(redis_client, "rtsp1").state in (CameraState.RECONNECTING, CameraState.CONNECTING), 10)
        before = _health(redis_client, "rtsp1").windows
        time.sleep(1.0)
        # and comes back
        rtsp_server.start()
        back = time.monotonic()
        # then the camera runs again within 5 s, windows resume, the process never exited
        assert _wait(lambda: _health(redis_client, "rtsp1").state is CameraState.RUNNING, 5.0)
        assert time.monotonic() - back <= 5.0
        assert _wait(lambda: _health(redis_client, "rtsp1").windows > before, 10)
        h = _health(redis_client, "rtsp1")
        assert h.reconnects >= 1 and h.last_error
        assert thread.is_alive()
    finally:
        svc.stop_event.set()
        thread.join(15)
    assert _health(redis_client, "rtsp1").state is CameraState.STOPPED


def _stalling_server():
    """A TCP server that accepts connections and never answers (a stalled camera)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    conns = []
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    return srv, stop, conns


def test_bad_cameras_show_clear_errors_and_others_keep_running(redis_client, tmp_path):
    # given a bad scheme (refused when the camera is configured, naming the schemes)
    with pytest.raises(ValueError, match="use one of rtsp://"):
        CameraSettings(id="bad-scheme", url="ftp://example/cam")
    # and an unreachable host, a file of random bytes, a stalled stream, and a good camera
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(bytes(range(256)) * 400)
    stall, stop_stall, _ = _stalling_server()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    quick = dict(open_timeout_s=1.5, read_timeout_s=1.5, backoff_initial_s=0.2, backoff_max_s=0.5)
    cams = [
        CameraSettings(id="unreachable", url=f"rtsp://127.0.0.1:{closed_port}/x", **quick),
        CameraSettings(id="junk", url=f"file://{junk}", **quick),
        CameraSettings(id="stalled", url=f"rtsp://127.0.0.1:{stall.getsockname()[1]}/x", **quick),
        CameraSettings(id="good", url="synthetic://demo?fps=10", **quick),
    ]
    windows = WindowSettings(sample_fps=2, window_seconds=1, stride_seconds=1, input_size=32)
    svc, thread = _start(redis_client, cams, windows)
    try:
        # then each bad camera says what is wrong
        assert _wait(lambda: (h := _health(redis_client, "junk")) and h.state is CameraState.FAILED, 5)
        assert "not a playable video" in _health(redis_client, "junk").last_error
        assert _wait(lambda: (h := _health(redis_client, "unreachable")) and h.reconnects >= 1, 10)
        assert "cannot open" in _health(redis_client, "unreachable").last_error
        assert _wait(lambda: (h := _health(redis_client, "stalled")) and h.reconnects >= 1, 15)
        assert _health(redis_client, "stalled").last_error
        # and the good camera keeps producing windows
        assert _wait(lambda: (h := _health(redis_client, "good")) and h.windows >= 2, 15)
        assert _health(redis_client, "good").state is CameraState.RUNNING
    finally:
        svc.stop_event.set()
        thread.join(15)
        stop_stall.set()
        stall.close()


def test_memory_stays_bounded_with_a_short_ttl(redis_client):
    # given a fast synthetic camera, frames that expire after 1 s and a windows stream capped near 10
    cam = CameraSettings(id="fast", url="synthetic://random?fps=20&realtime=0&seconds=60&epoch=1000")
    windows = WindowSettings(sample_fps=10, window_seconds=1, stride_seconds=0.1, input_size=16,
                             frame_ttl_seconds=1, windows_maxlen=10)
    # when it runs through 60 s of video (about 600 windows)
    IngestService(redis_client, KEYS, [cam], windows).run(install_signals=False)
    # then the stream was trimmed (approximate MAXLEN trims whole nodes of <= 100 entries)
    assert _health(redis_client, "fast").windows > 500
    assert redis_client.xlen(KEYS.windows_for("fast")) <= 110
    # and after the TTL no frame is left behind
    assert _wait(lambda: not list(redis_client.scan_iter(KEYS.frame_pattern("fast"))), 15)
    assert redis_client.ttl(KEYS.health("fast")) > 0  # health expires too


def test_camera_worker_when_the_input_size_was_not_resolved_refuses_naming_the_setting(redis_client):
    from stream.camera import CameraWorker

    with pytest.raises(ValueError, match="windows.input_size is not set"):
        CameraWorker(CameraSettings(id="c", url="synthetic://demo"), WindowSettings(), redis_client, Keys(), threading.Event())


def _registry_ingest(client, seed, **settings):
    svc = IngestService(client, KEYS, seed, WindowSettings(sample_fps=2, window_seconds=1, stride_seconds=1, input_size=32),
                        IngestSettings(**settings), registry=CameraRegistry(client, KEYS), reload_s=0.2)
    t = threading.Thread(target=svc.run, kwargs={"install_signals": False}, daemon=True)
    t.start()
    return svc, t


def test_ingest_when_a_configured_camera_with_a_password_keeps_failing_then_the_password_is_nowhere(redis_client, caplog):
    # given a configured camera whose password holds '#' and '/', on a port where nothing listens, beside a good one
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    secret = "s3cr#t/pw"
    bad = CameraSettings(id="door", url=f"rtsp://admin:{secret}@127.0.0.1:{port}/live", open_timeout_s=1.0,
                         backoff_initial_s=0.1, backoff_max_s=0.2)
    good = CameraSettings(id="good", url="synthetic://demo?fps=10")
    caplog.set_level(logging.DEBUG)
    # when ingest runs them (the registry seeded from the config) and the bad one reconnects a few times
    svc, t = _registry_ingest(redis_client, [bad, good])
    try:
        assert _wait(lambda: (h := _health(redis_client, "door")) and h.reconnects >= 3, 20)
        assert _wait(lambda: (h := _health(redis_client, "good")) and h.windows >= 2, 20)
        # then the health says what is wrong, without the password; neither the logs nor Redis hold it
        assert "cannot open" in _health(redis_client, "door").last_error
        assert "***" in _health(redis_client, "door").last_error
        for form in (secret, "s3cr%23t%2Fpw"):
            assert form not in caplog.text
            assert form.encode() not in redis_contents(redis_client)
        # and the configured camera is the one that runs (its credentials from the config, not from Redis)
        assert svc._running["door"][0].url == bad.url
    finally:
        svc.stop_event.set()
        t.join(15)


def test_ingest_when_a_camera_url_is_invalid_in_the_registry_then_the_others_keep_running(redis_client, caplog):
    # given a stored camera whose port is out of range (written past validation, e.g. by an older version)
    good = CameraSettings(id="good", url="synthetic://demo?fps=10")
    redis_client.hset(KEYS.camera_configs(), "bad", json.dumps({"id": "bad", "url": "http://admin:pw@127.0.0.1:99999/x"}))
    # when ingest follows the registry
    svc, t = _registry_ingest(redis_client, [good])
    try:
        # then the good camera runs, the bad one is skipped with one clear line (its password not shown), ingest lives
        assert _wait(lambda: (h := _health(redis_client, "good")) and h.windows >= 2, 20)
        assert _wait(lambda: "skipping stored camera 'bad'" in caplog.text, 10)
        assert "Port out of range" in caplog.text and ":pw@" not in caplog.text
        assert caplog.text.count("skipping stored camera 'bad'") == 1  # once, not at every reload
        assert t.is_alive()
    finally:
        svc.stop_event.set()
        t.join(15)


def test_ingest_when_a_file_camera_is_added_at_run_time_outside_the_file_roots_then_it_is_refused(redis_client, tmp_path,
                                                                                                   h264_file, caplog):
    # given file roots holding one directory, and two cameras added at run time: one inside, one outside
    inside = tmp_path / "cams"
    inside.mkdir()
    (inside / "clip.mp4").write_bytes(h264_file.read_bytes())
    svc, t = _registry_ingest(redis_client, [], file_roots=[str(inside)])
    try:
        reg = CameraRegistry(redis_client, KEYS)
        reg.add(CameraSettings(id="inside", url=f"file://{inside}/clip.mp4", loop=True))
        reg.add(CameraSettings(id="outside", url=f"file://{inside}/../{h264_file.name}"))
        # then the camera inside plays, the one outside is refused with one line naming the setting
        assert _wait(lambda: (h := _health(redis_client, "inside")) and h.windows >= 1, 20)
        assert _wait(lambda: "refused" in caplog.text and "ingest.file_roots" in caplog.text, 10)
        assert "outside" not in svc._running and _health(redis_client, "outside") is None
    finally:
        svc.stop_event.set()
        t.join(15)


def test_file_camera_when_the_file_is_text_then_it_fails_and_shows_nothing_of_it(redis_client, tmp_path):
    # given a text file (FFmpeg's tty demuxer would render it into frames)
    key = tmp_path / "notes.nfo"
    key.write_text("-----BEGIN PGP PRIVATE KEY BLOCK-----\nverysecret\n")
    cam = CameraSettings(id="text", url=f"file://{key}", realtime=False)
    # when ingested
    IngestService(redis_client, KEYS, [cam], WindowSettings(sample_fps=2, window_seconds=1, stride_seconds=1,
                                                             input_size=32)).run(install_signals=False)
    # then it failed as not a video, and no frame or preview was stored
    h = _health(redis_client, "text")
    assert h.state is CameraState.FAILED and "not a video or image file" in h.last_error
    assert list(redis_client.scan_iter(KEYS.frame_pattern("text"))) == []


# ---- sharing the CPU with the engine: camera threads at a lower priority ----------------------------
def _nice_of_tasks() -> dict[int, int]:
    """Every thread of this process: its id -> its nice value (/proc/self/task/<tid>/stat, field 19)."""
    import os

    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        out[int(tid)] = int(stat[stat.rindex(")") + 2:].split()[16])
    return out


def test_ingest_when_nice_is_set_lowers_its_camera_threads_and_their_decoder_threads_only(redis_client, h264_file, caplog):
    import os

    # given this process's threads and their priority, and ingest with ingest.nice 7 and two FFmpeg threads a camera
    base = os.getpriority(os.PRIO_PROCESS, 0)
    before = set(_nice_of_tasks())
    cam = CameraSettings(id="nice", url=f"file://{h264_file}", loop=True)
    svc = IngestService(redis_client, KEYS, [cam], WindowSettings(sample_fps=2, window_seconds=1, stride_seconds=1, input_size=32),
                        IngestSettings(nice=7, decoder_threads=2))
    caplog.set_level(logging.INFO, logger="stream.priority")
    t = threading.Thread(target=svc.run, kwargs={"install_signals": False}, daemon=True)
    t.start()
    try:
        # when its camera is decoding
        assert _wait(lambda: (h := _health(redis_client, "nice")) and h.frames_decoded > 10, 20)
        tasks = _nice_of_tasks()
        camera = svc.workers[0].native_id
        # then the camera thread and the decoder threads it made run 7 levels lower, the ingest loop and this thread
        # at the priority they had, and the log said so once
        new = {tid: nice for tid, nice in tasks.items() if tid not in before and tid != t.native_id}
        assert camera in new and len(new) >= 2, new  # the camera's thread and FFmpeg's (it asked for 2)
        assert set(new.values()) == {min(19, base + 7)}, new
        assert tasks[t.native_id] == base and os.getpriority(os.PRIO_PROCESS, 0) == base
        assert caplog.text.count(f"ingest camera threads run at nice {min(19, base + 7)}") == 1
    finally:
        svc.stop_event.set()
        t.join(15)


def test_ingest_when_the_priority_cannot_be_lowered_warns_and_its_cameras_run(redis_client, monkeypatch, caplog):
    import os

    # given a system that refuses to change priorities (a sandbox)
    def refuse(*_):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "setpriority", refuse)
    cam = CameraSettings(id="plain", url="synthetic://demo?fps=10")
    # when ingest starts its camera
    svc, t = _start(redis_client, [cam], WindowSettings(sample_fps=2, window_seconds=1, stride_seconds=1, input_size=32))
    try:
        # then the camera runs and makes windows, and one warning says the priority was not lowered
        assert _wait(lambda: (h := _health(redis_client, "plain")) and h.windows >= 2, 20)
        assert _wait(lambda: "could not lower their priority (ingest.nice: 10)" in caplog.text, 5)
        assert t.is_alive()
    finally:
        svc.stop_event.set()
        t.join(15)
