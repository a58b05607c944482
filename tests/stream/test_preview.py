"""Preview JPEGs: sizes, quality, and how ingest stores them beside the model's frames (real Redis, a real camera)."""
from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from stream.camera import CameraWorker
from stream.config import CameraSettings, WindowSettings
from stream.keys import Keys
from stream.preview import preview_jpeg, preview_wh
from stream.store import WindowStore, preview_times


def _frame(w: int, h: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.linspace(0, 255, w)[None, :]
    return img + rng.integers(0, 20, img.shape, dtype=np.uint8)


@pytest.mark.parametrize("wh, side, expected", [((1280, 720), 640, (640, 360)), ((320, 240), 640, (320, 240)),
                                                ((720, 1280), 640, (360, 640)), ((1920, 1080), 100, (100, 56))])
def test_preview_wh_when_scaled_then_longest_side_fits_and_sides_are_even(wh, side, expected):
    assert preview_wh(wh, side) == expected


def test_preview_jpeg_when_frame_is_720p_then_a_640_wide_jpeg():
    data = preview_jpeg(_frame(1280, 720))
    img = Image.open(io.BytesIO(data))
    assert img.format == "JPEG" and img.size == (640, 360)


def test_preview_jpeg_when_quality_is_lower_then_the_file_is_smaller():
    frame = _frame(640, 480)
    assert len(preview_jpeg(frame, quality=30)) < len(preview_jpeg(frame, quality=90))


def test_put_preview_when_stored_then_frame_ttl_and_index_trimmed_to_it(redis_client):
    keys = Keys(shards=2)
    store = WindowStore(redis_client, keys, frame_ttl_s=10.0)
    # given previews 20 s apart (the older is outside the TTL of the newer)
    store.put_preview("cam", 1_000_000, b"\xff\xd8old")
    store.put_preview("cam", 1_020_000, b"\xff\xd8new")
    # then each has the frame TTL, and the index keeps only the ones within it
    assert 9_000 < redis_client.pttl(keys.preview("cam", 1_020_000)) <= 10_000
    assert preview_times(redis_client, keys, "cam") == [1_020_000]
    assert preview_times(redis_client, keys, "cam", latest=True) == [1_020_000]
    assert 0 < redis_client.pttl(keys.preview_index("cam")) <= 10_000


@pytest.mark.parametrize("preview_size, expect_previews", [(0, False), (640, True)])
def test_camera_worker_when_frames_are_sampled_then_previews_follow_the_setting(redis_client, preview_size, expect_previews):
    keys = Keys(shards=2)
    windows = WindowSettings(sample_fps=2, window_seconds=2, stride_seconds=1, input_size=32, preview_size=preview_size)
    cam = CameraSettings(id="cam", url=f"synthetic://random?seed=1&fps=10&realtime=0&seconds=3&epoch={time.time() - 3:.3f}")
    worker = CameraWorker(cam, windows, redis_client, keys, threading.Event())
    worker.run()  # the source ends after 3 s of frames
    frames = sorted(int(k.decode().rsplit(":", 1)[1]) for k in redis_client.scan_iter(keys.frame_pattern("cam")))
    assert len(frames) >= 5
    previews = preview_times(redis_client, keys, "cam")
    if not expect_previews:
        assert previews == []
        return
    # one preview per stored frame, same timestamps ("stored once": windows reference both by timestamp)
    assert previews == frames
    img = Image.open(io.BytesIO(redis_client.get(keys.preview("cam", frames[0]))))
    assert img.size == (320, 240)  # the synthetic camera's size: not upscaled
    assert abs(redis_client.pttl(keys.preview("cam", frames[-1])) - redis_client.pttl(keys.frame("cam", frames[-1]))) < 1000
