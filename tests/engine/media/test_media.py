"""The media worker on real Redis, real files and real H.264: snapshots, clips, missing frames, retention."""
from __future__ import annotations

import os
import threading
import time

import av
import numpy as np
import pytest
from PIL import Image

from engine.contracts.events import Box, EndReason, EventType, GroundingEvent
from engine.media.worker import MediaWorker
from engine.media.store import CLIP, SNAPSHOT, MediaStore
from engine.contracts.settings import MediaSettings
from stream.keys import Keys
from stream.preview import preview_jpeg
from stream.store import WindowStore
from tests.api.events_helpers import write_event

KEYS = Keys(shards=2)
T0 = 1_700_000_000.0
FRAME_WH = (640, 480)  # camera pixels; previews are 320x240


def store_previews(client, start_s: float, end_s: float, period_s: float = 0.5, skip: tuple[float, ...] = ()) -> list[float]:
    """Preview frames of a white square on grey, as ingest stores them (half the camera's size)."""
    store = WindowStore(client, KEYS, frame_ttl_s=3600)
    times = []
    t = start_s
    while t <= end_s + 1e-9:
        if round(t - T0, 3) not in skip:
            img = np.full((240, 320, 3), 90, np.uint8)
            img[100:140, 100:140] = 255
            store.put_preview("cam", int(round(t * 1000)), preview_jpeg(img, 640))
            times.append(t)
        t = round(t + period_s, 3)
    return times


def event(type_: str, score: float = 0.8, start: float = T0 + 2, end: float = T0 + 6) -> GroundingEvent:
    boxes = tuple(Box(round(start + k * 0.5, 3), (200.0, 200.0, 280.0, 280.0)) for k in range(int((end - start) / 0.5) + 1))
    return GroundingEvent(EventType(type_), "ev1", "q1", "cam", "the white square", score, start, end, boxes, FRAME_WH,
                          "cam:w", "test", reason=EndReason.ENDED if type_ == "end" else None)


@pytest.fixture
def worker(redis_client, tmp_path):
    settings = MediaSettings(pre_s=1.0, post_s=1.0, block_ms=50)
    return MediaWorker(redis_client, KEYS, settings, MediaStore(tmp_path / "media"), threading.Event(), now=lambda: T0 + 100)


def test_handle_when_new_then_snapshot_has_the_box_drawn_at_preview_scale(redis_client, worker):
    store_previews(redis_client, T0, T0 + 8)
    worker.handle(event("new"))
    st = worker.store.status("ev1")
    assert st["snapshot"]["state"] == "ok" and st["snapshot"]["score"] == 0.8
    img = np.asarray(Image.open(worker.store.path("ev1", SNAPSHOT)))
    assert img.shape == (240, 320, 3)
    # the box (200..280 camera px) is drawn at 100..140 preview px, in green; the caption bar is at the top
    assert img[120, 100, 1] > 200 and img[120, 100, 0] < 80
    assert img[1, 1].max() < 60 and img[1:14, 2:80].max() > 180  # a dark bar with white text


def test_handle_when_update_improves_the_score_then_snapshot_replaced_else_kept(redis_client, worker):
    store_previews(redis_client, T0, T0 + 8)
    worker.handle(event("new", score=0.8))
    first = worker.store.path("ev1", SNAPSHOT).read_bytes()
    worker.handle(event("update", score=0.7))
    assert worker.store.status("ev1")["snapshot"]["score"] == 0.8
    assert worker.store.path("ev1", SNAPSHOT).read_bytes() == first
    worker.handle(event("update", score=0.95))
    assert worker.store.status("ev1")["snapshot"]["score"] == 0.95
    assert worker.store.path("ev1", SNAPSHOT).read_bytes() != first


def test_clip_when_event_ends_then_h264_mp4_of_the_padded_span(redis_client, worker):
    store_previews(redis_client, T0, T0 + 8)
    worker.handle(event("new"))
    worker.handle(event("end"))
    assert worker.store.status("ev1")["clip"]["state"] == "pending"
    worker.make_due_clips()
    clip = worker.store.status("ev1")["clip"]
    assert clip["state"] == "ok" and clip["missing_frames"] == 0
    assert (clip["start_ts"], clip["end_ts"]) == (T0 + 1, T0 + 7)  # 2..6 s with 1 s either side
    with av.open(str(worker.store.path("ev1", CLIP))) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
        assert abs(c.duration / 1e6 - 6.0) < 0.6
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 12  # 6 s at the 2 fps sample rate
    # a green box inside the span (its edge on the white square loses red), none in the padding
    assert frames[6][120, 100:102, 0].max() < 100 and frames[0][120, 100:102, 0].min() > 200
    data = worker.store.path("ev1", CLIP).read_bytes()
    assert 0 < data.find(b"moov") < data.find(b"mdat")  # +faststart: the index first, so browsers play while loading
    assert "end_event" not in worker.store.status("ev1")


def test_clip_when_frames_expired_then_reported_missing_never_raised(redis_client, worker):
    store_previews(redis_client, T0, T0 + 8, skip=(3.0, 3.5, 4.0))
    worker.handle(event("end"))
    worker.make_due_clips()
    clip = worker.store.status("ev1")["clip"]
    assert clip["state"] == "ok" and clip["missing_frames"] == 3 and clip["missing_ts"] == [T0 + 3, T0 + 3.5, T0 + 4]
    # and when every frame is gone: the clip is missing, with the reason
    redis_client.flushdb()
    e2 = GroundingEvent(**{**event("end").__dict__, "event_id": "ev2"})
    worker.handle(e2)
    worker.make_due_clips()
    st = worker.store.status("ev2")
    assert st["snapshot"]["state"] == "missing" and st["clip"]["state"] == "missing" and "expired" in st["clip"]["reason"]
    assert not worker.store.path("ev2", CLIP).exists()


def test_run_when_events_are_on_the_feed_then_media_made_and_cursor_kept(redis_client, tmp_path):
    base = float(int(time.time()) - 8)  # previews and boxes on one 0.5 s grid, as ingest and the engine write them
    store_previews(redis_client, base, base + 8)
    e_new = event("new", start=base + 2, end=base + 4)
    e_end = event("end", start=base + 2, end=base + 5)
    write_event(redis_client, KEYS, e_new)
    write_event(redis_client, KEYS, e_end)
    w = MediaWorker(redis_client, KEYS, MediaSettings(pre_s=1.0, post_s=1.0, block_ms=50), MediaStore(tmp_path / "m"),
                    threading.Event())
    w.run(max_seconds=2.0)
    st = w.store.status("ev1")
    assert st["snapshot"]["state"] == "ok" and st["clip"]["state"] == "ok"
    assert redis_client.get(KEYS.media_cursor())
    # a restarted worker starts after what it did: nothing is made again
    mtime = w.store.path("ev1", CLIP).stat().st_mtime_ns
    MediaWorker(redis_client, KEYS, MediaSettings(block_ms=50), MediaStore(tmp_path / "m"), threading.Event()).run(max_seconds=0.5)
    assert w.store.path("ev1", CLIP).stat().st_mtime_ns == mtime


def test_prune_when_media_is_old_or_too_large_then_the_oldest_go(tmp_path):
    store = MediaStore(tmp_path)
    now = time.time()
    for k, age_s in enumerate([10 * 86400, 3000, 2000, 1000]):  # ev0 is older than the retention
        p = store.write(f"ev{k}", CLIP, b"x" * 400_000)
        os.utime(p, (now - age_s, now - age_s))
    result = store.prune(now, max_age_s=7 * 86400, max_bytes=900_000)
    assert sorted(d.name for d in tmp_path.iterdir()) == ["ev2", "ev3"]
    assert (result.removed, result.kept, result.bytes) == (2, 2, 800_000)


def test_handle_safely_when_a_preview_is_corrupt_then_logged_and_the_next_event_still_gets_media(redis_client, worker, caplog):
    # given a preview overwritten with garbage at the newest box of one event
    store_previews(redis_client, T0, T0 + 8)
    bad = event("new")
    redis_client.set(KEYS.preview("cam", int(round(bad.boxes[-1].ts * 1000))), b"not a jpeg")
    # when the worker handles it, then a good event
    worker.handle_safely(bad)
    good = GroundingEvent(EventType.NEW, "ev2", "q1", "cam", "the white square", 0.9, T0 + 1, T0 + 2,
                          (Box(T0 + 1.5, (200.0, 200.0, 280.0, 280.0)),), FRAME_WH, "cam:w2", "test")
    worker.handle_safely(good)
    # then the failure is one error line naming the event, and the next event's snapshot is made
    assert any(r.levelname == "ERROR" and "ev1" in r.getMessage() for r in caplog.records)
    assert worker.store.status("ev2")["snapshot"]["state"] == "ok"
