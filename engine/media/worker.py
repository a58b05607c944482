"""The media worker: follows the event feed and makes what an operator looks at.

- `new`: the snapshot (the preview frame of the event's newest box, box drawn, query text and score as caption).
- `update` whose score beats the snapshot's: the snapshot again (from the newest box: boxes carry no score of
  their own, and the update that raised the event's score is the window that added the newest boxes).
- `end`: the clip, from `start_ts - pre_s` to `end_ts + post_s`, once the frames up to `end_ts + post_s` exist
  (or a second later by the capture clock, e.g. the camera stopped): preview frames at the sample rate, boxes
  drawn on the frames that have them.

A separate role (`spacevllm media`; `up` runs it as a thread; a compose service), one per deployment: it keeps
its feed position in Redis (`Keys.media_cursor`), moved after each batch, and pending clips in their status
files, so a restart neither misses nor repeats work. Frames that expired are reported in the event's
media status (`engine.media.store`), never raised.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

import redis

from engine.contracts.events import EventType, GroundingEvent
from engine.contracts.feed import Cursor, EventFeed, FeedFollower
from engine.contracts.settings import MediaSettings
from engine.media.render import ClipFrame, caption_of, encode_clip, render_snapshot, sample_period_ms
from engine.media.store import CLIP, SNAPSHOT, MediaStore
from stream.keys import Keys
from stream.role import Heartbeat, Isolated, RoleLoop, isolate, require_client
from stream.store import preview_times

log = logging.getLogger(__name__)

LOOKBACK_S = 60.0  # a first start (no stored cursor) makes media for events of the last minute
PRUNE_EVERY_S = 60.0
CLIP_GRACE_S = 1.0  # a clip waits for frames up to end + post_s, at most this long past it on the capture clock


def _ms(ts: float) -> int:
    return int(round(ts * 1000))


class MediaWorker:
    def __init__(self, client: redis.Redis, keys: Keys, settings: MediaSettings, store: MediaStore,
                 stop: threading.Event, now: Callable[[], float] = time.time, worker_id: str | None = None) -> None:
        self.client = require_client(client, "MediaWorker")
        self.keys = keys
        self.settings = settings
        self.store = store
        self.stop = stop
        self.now = now
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.follower = FeedFollower(EventFeed(client, keys), keys.media_cursor(), count=100,
                                     start_at=lambda feed: Cursor.at_time(keys.shards, self.now() - LOOKBACK_S))
        self.pending: dict[str, dict] = {}  # event id -> end event dict, clips waiting for their post padding
        self.failed = Isolated()  # events whose media failed, by kind (snapshot or clip)
        self._last_prune = 0.0
        self.loop = RoleLoop("media worker", stop, Heartbeat(client, keys, "media", self.worker_id, settings.heartbeat_s))

    # ---- loop ----------------------------------------------------------------------------
    def run(self, max_seconds: float | None = None) -> None:
        log.info("media worker %s: media in %s", self.worker_id, self.store.root)
        for st in self.store.pending_clips():
            self.pending[st["event_id"]] = st["end_event"]
        self.loop.run(self.step, stats=lambda: {"pending_clips": len(self.pending), "failed": self.failed.total},
                      max_seconds=max_seconds)

    def step(self) -> bool:
        """The events after the stored cursor (each event's media isolated), due clips, housekeeping; the cursor
        moves after the batch, so a restart neither misses nor repeats work."""
        entries = self.follower.read(block_ms=self.settings.block_ms)
        for entry in entries:
            self.handle_safely(entry.event)
        if entries:
            self.follower.commit()
        self.make_due_clips()
        self._housekeeping()
        return bool(entries)

    def _housekeeping(self) -> None:
        mono = time.monotonic()
        if mono - self._last_prune >= PRUNE_EVERY_S:
            self.store.prune(self.now(), self.settings.retention_s, self.settings.max_bytes)
            self._last_prune = mono

    # ---- one event -----------------------------------------------------------------------
    def _status(self, e: GroundingEvent) -> dict:
        st = self.store.status(e.event_id) or {"event_id": e.event_id, "snapshot": None, "clip": None}
        st.update(camera_id=e.camera_id, query_id=e.query_id, query_text=e.query_text, start_ts=e.start_ts, end_ts=e.end_ts)
        return st

    def handle_safely(self, e: GroundingEvent) -> None:
        """One event's media; a failure (a bad frame, a full disk) is logged and counted, never the worker's end."""
        isolate(f"event {e.event_id} (camera {e.camera_id}): media", "snapshot", lambda: self.handle(e), self.failed)

    def handle(self, e: GroundingEvent) -> None:
        st = self._status(e)
        snap = st.get("snapshot") or {}
        if e.type is EventType.NEW or snap.get("state") != "ok" or e.score > float(snap.get("score", -1.0)) + 1e-6:
            st["snapshot"] = self.snapshot(e)
        if e.type is EventType.END:
            st["clip"] = {"state": "pending", "due_ts": round(e.end_ts + self.settings.post_s, 3)}
            st["end_event"] = e.to_dict()
            self.pending[e.event_id] = st["end_event"]
        st["updated_at"] = round(self.now(), 3)
        self.store.write_status(e.event_id, st)

    def snapshot(self, e: GroundingEvent) -> dict:
        t0 = time.perf_counter()
        for box in sorted(e.boxes, key=lambda b: b.ts, reverse=True):
            jpeg = self.client.get(self.keys.preview(e.camera_id, _ms(box.ts)))
            if jpeg is None:
                continue
            data = render_snapshot(jpeg, box.xyxy, e.frame_size, caption_of(e.query_text, e.score), self.settings.snapshot_quality)
            self.store.write(e.event_id, SNAPSHOT, data)
            took = time.perf_counter() - t0
            return {"state": "ok", "ts": box.ts, "score": round(e.score, 4), "bytes": len(data), "render_s": round(took, 4)}
        why = "the event has no boxes" if not e.boxes else "no preview frame of its boxes is stored (expired, or previews disabled)"
        log.info("event %s: no snapshot: %s", e.event_id, why)
        return {"state": "missing", "reason": why, "score": round(e.score, 4)}

    # ---- clips ---------------------------------------------------------------------------
    def make_due_clips(self) -> None:
        for event_id, d in list(self.pending.items()):
            e = GroundingEvent.from_dict(d)
            due_ms = _ms(e.end_ts + self.settings.post_s)
            latest = preview_times(self.client, self.keys, e.camera_id, latest=True)
            if (latest and latest[0] >= due_ms) or self.now() * 1000 >= due_ms + CLIP_GRACE_S * 1000:
                st = self._status(e)
                try:
                    st["clip"] = self.clip(e)
                except redis.RedisError:
                    raise
                except Exception as exc:  # recorded in the status; not retried forever
                    self.failed.count("clip")
                    log.error("event %s (camera %s): clip failed: %s: %s", event_id, e.camera_id, type(exc).__name__, exc)
                    st["clip"] = {"state": "failed", "reason": f"{type(exc).__name__}: {exc}"}
                st.pop("end_event", None)
                st["updated_at"] = round(self.now(), 3)
                self.store.write_status(event_id, st)
                del self.pending[event_id]

    def clip(self, e: GroundingEvent) -> dict:
        t0 = time.perf_counter()
        start_ms, end_ms = _ms(e.start_ts - self.settings.pre_s), _ms(e.end_ts + self.settings.post_s)
        span = {"start_ts": round(start_ms / 1000, 3), "end_ts": round(end_ms / 1000, 3)}
        times = preview_times(self.client, self.keys, e.camera_id, start_ms, end_ms)
        if not times:
            log.info("event %s: no clip: no preview frames in its span", e.event_id)
            return {"state": "missing", "reason": "no preview frames in the span (expired, or previews disabled)", **span}
        self.store.dir(e.event_id).mkdir(parents=True, exist_ok=True)
        jpegs = self.client.mget([self.keys.preview(e.camera_id, t) for t in times])  # one slot: the camera's
        boxes = {_ms(b.ts): b.xyxy for b in e.boxes}
        frames = [ClipFrame(t, j, boxes.get(t)) for t, j in zip(times, jpegs)]
        period = sample_period_ms(times)
        try:
            info = encode_clip(frames, start_ms, end_ms, period, e.frame_size, caption_of(e.query_text, e.score),
                               self.store.dir(e.event_id) / CLIP, self.settings.clip_crf)
        except ValueError as exc:  # every listed preview expired before it was read
            return {"state": "missing", "reason": f"{exc} (expired)", **span}
        took = time.perf_counter() - t0
        return {"state": "ok", **span, "duration_s": info.duration_s, "fps": round(info.fps, 3), "frames": info.frames,
                "missing_frames": len(info.missing_ts), "missing_ts": list(info.missing_ts[:50]), "bytes": info.bytes,
                "render_s": round(took, 4)}
