"""A camera whose decoding falls behind real time: key frames only until it catches up, every frame not decoded
counted (reason overload), windows still made of the right frames. Real Redis, real H.264 through PyAV, decoding
made slower than real time by a known amount of CPU per frame (tests/media.py `slow_decoding`)."""
from __future__ import annotations

import logging
import time

import numpy as np

import stream.camera
from stream.config import CameraSettings, IngestSettings, WindowSettings
from stream.health import CameraHealth, CameraState
from stream.imagecodec import decode_image
from stream.ingest import IngestService
from stream.keys import Keys
from stream.sources import PyAVSource, SourceEnded
from stream.types import Window
from tests.media import slow_decoding, write_h264

KEYS = Keys()


def _reference_frames(clip, size: int) -> list[np.ndarray]:
    """Every frame of the clip as the camera stores it (resized from YUV), in order."""
    src = PyAVSource(f"file://{clip}", realtime=False)
    out = []
    try:
        for raw in src.frames():
            out.append(raw.resized(size))
    except SourceEnded:
        pass
    finally:
        src.close()
    return out


def test_camera_when_decoding_is_slower_than_real_time_skips_to_key_frames_counts_and_keeps_windowing(
        redis_client, tmp_path, monkeypatch, caplog):
    # given a 10 s, 25 fps H.264 clip with a key frame every 2 s and a different picture in every frame, played in real
    # time by a camera whose decoding costs 80 ms of CPU a frame: twice the 40 ms a frame lasts
    fps, seconds = 25, 10
    clip = write_h264(tmp_path / "cam.mp4", seconds=seconds, fps=fps, size=(160, 120), gop=2 * fps, noise=True)
    monkeypatch.setattr(stream.camera, "open_source", slow_decoding(0.08))
    cam = CameraSettings(id="slow", url=f"file://{clip}")  # real time, played once; max_lag_s 1 s
    windows = WindowSettings(sample_fps=2, window_seconds=2, stride_seconds=1, input_size=32, preview_size=0)
    caplog.set_level(logging.INFO, logger="stream.camera")
    # when ingested to its end (at the engine's priority: this test is about decoding, test_ingest.py about priority)
    started = time.monotonic()
    IngestService(redis_client, KEYS, [cam], windows, IngestSettings(nice=0)).run(install_signals=False)
    took = time.monotonic() - started
    h = CameraHealth.from_dict("slow", redis_client.hgetall(KEYS.health("slow")))
    # then every frame was either decoded or counted as not decoded (reason overload), and most were not decoded
    assert h.state is CameraState.STOPPED
    assert h.frames_decoded + h.frames_dropped_overload == fps * seconds
    assert h.frames_dropped_overload > h.frames_decoded
    assert h.frames_dropped == h.frames_dropped_late + h.frames_dropped_redis + h.frames_dropped_overload
    # and it kept to real time, nothing piled up: about the clip's 10 s, where decoding every frame takes 20 s
    assert took < seconds + 4.0, took
    # and windows kept coming across the whole clip
    got = [Window.from_fields(f) for s in KEYS.all_shards() for _, f in redis_client.xrange(KEYS.windows(s))]
    assert len(got) >= seconds - 4 and got[-1].start_ms - got[0].start_ms >= (seconds - 4) * 1000
    # and each frame in them is the clip's frame at its timestamp: the timestamps came through skipping right
    reference = _reference_frames(clip, 32)
    t0 = got[0].frames_ms[0]
    for ts in sorted({ts for w in got for ts in w.frames_ms}):
        k = round((ts - t0) * fps / 1000)
        assert abs((ts - t0) - k * 1000 / fps) <= 1
        assert np.array_equal(decode_image(redis_client.get(KEYS.frame("slow", ts))), reference[k]), f"frame {k}"
    # and the log said it fell behind once, not once per group of pictures
    assert caplog.text.count("decoding fell") == 1
    assert "were not decoded while it was behind" in caplog.text
