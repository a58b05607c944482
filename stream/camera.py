"""One camera: connect, decode, timestamp on the capture clock, sample, store, window; reconnect forever.

Latest-frame semantics: a frame that is more than `max_lag_s` behind real time when it
reaches us is dropped and counted, so latency never grows; and a camera whose decoding falls
behind decodes key frames only until it catches up (stream/overload.py), so the CPU that is
short is not spent decoding frames that would be dropped. The thread runs at ingest's lower
priority (stream/priority.py).
"""
from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

import redis

from stream.config import CameraSettings, WindowSettings
from stream.health import CameraHealth, CameraState
from stream.imagecodec import encode_image
from stream.keys import Keys
from stream.overload import Overload, OverloadSwitch
from stream.preview import preview_jpeg
from stream.priority import ThreadPriority
from stream.redis_link import RedisLink, backoff_delay
from stream.role import require_client
from stream.sources import RawFrame, SourceEnded, SourceError, open_source
from stream.store import WindowStore
from stream.types import Window
from stream.urls import redact_text
from stream.windowing import FrameSampler, WindowBuilder

log = logging.getLogger(__name__)

PTS_JUMP_S = 5.0  # a PTS step larger than this (or backwards) re-anchors the capture clock


class CaptureClock:
    """Capture time = wall time at the anchor frame + PTS delta; re-anchors on jumps and wrap-around."""

    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now
        self.anchor_wall: float | None = None
        self.anchor_pts = 0.0
        self.last_pts: float | None = None
        self.last_ts: float | None = None
        self.reanchors = 0

    def stamp(self, pts_s: float, period_s: float, epoch: float | None = None) -> float:
        jumped = self.last_pts is not None and (pts_s < self.last_pts or pts_s - self.last_pts > PTS_JUMP_S)
        if self.anchor_wall is None or jumped:
            if jumped:
                self.reanchors += 1
                log.info("PTS discontinuity (%.3f -> %.3f): capture clock re-anchored", self.last_pts, pts_s)
            base = epoch if (epoch is not None and self.anchor_wall is None) else self.now()
            if self.last_ts is not None:
                base = max(base, self.last_ts + period_s)
            self.anchor_wall, self.anchor_pts = base, pts_s
        self.last_pts = pts_s
        self.last_ts = self.anchor_wall + (pts_s - self.anchor_pts)
        return self.last_ts


class CameraWorker(threading.Thread):
    def __init__(self, settings: CameraSettings, windows: WindowSettings, client: redis.Redis, keys: Keys,
                 stop: threading.Event, health_ttl_s: float = 300.0, now: Callable[[], float] = time.time,
                 decoder_threads: int = 0, priority: ThreadPriority | None = None) -> None:
        super().__init__(name=f"camera-{settings.id}", daemon=True)
        require_client(client, "CameraWorker")
        if windows.input_size is None:
            raise ValueError(f"camera {settings.id}: windows.input_size is not set; the service fills in the model's "
                             "(engine.app.service.model_windows) before ingest starts")
        self.settings = settings
        self.windows = windows
        self.client = client
        self.keys = keys
        self.store = WindowStore(client, keys, windows.frame_ttl_seconds, windows.windows_maxlen)
        self.stop_event = stop
        self.health_ttl_s = health_ttl_s
        self.now = now
        self.decoder_threads = decoder_threads  # FFmpeg threads for this camera's decoder (0: FFmpeg's default)
        self.priority = priority  # lowered in this thread as it starts (None: left as it is)
        self.health = CameraHealth(settings.id)
        self._rng = random.Random(hash(settings.id))
        self._last_health_write = 0.0
        self._fps_count, self._fps_since = 0, time.monotonic()
        self._ran_ok = False  # the last connection delivered frames (resets the backoff)
        self.frame_wh: tuple[int, int] | None = None
        self.link = RedisLink(f"camera {settings.id}")
        self._retry_at = 0.0
        self._said_at = 0.0
        self._live = False

    # ---- health ------------------------------------------------------------------------
    def _set(self, state: CameraState, **changes) -> None:
        if changes.get("last_error"):  # the one place a camera's error text is made safe to store, show and log
            changes["last_error"] = redact_text(changes["last_error"], self.settings.url)
        if state is not self.health.state:
            log.info("camera %s: %s -> %s%s", self.settings.id, self.health.state.value, state.value,
                     f" ({changes['last_error']})" if changes.get("last_error") else "")
        self.health = self.health.moved(state, **changes)
        self._write_health(force=True)

    def _write_health(self, force: bool = False) -> None:
        mono = time.monotonic()
        if not force and mono - self._last_health_write < 1.0:
            return
        elapsed = mono - self._fps_since
        if elapsed >= 1.0:
            self.health = self.health.moved(self.health.state, fps=self._fps_count / elapsed)
            self._fps_count, self._fps_since = 0, mono
        self.health = self.health.moved(self.health.state, updated_at=self.now())
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.sadd(self.keys.cameras(), self.settings.id)
            pipe.hset(self.keys.health(self.settings.id), mapping=self.health.to_dict())
            pipe.expire(self.keys.health(self.settings.id), int(self.health_ttl_s))
            pipe.execute()
            self._last_health_write = mono
            self.link.ok()
        except redis.RedisError as exc:
            self._last_health_write = mono  # retried with the next write, not per frame
            self.link.failed(exc)

    # ---- main loop ---------------------------------------------------------------------
    def run(self) -> None:
        s = self.settings
        attempt = 0
        if self.priority is not None:  # before the source opens: FFmpeg's threads, made by this one, inherit it
            self.priority.lower()
        try:
            while not self.stop_event.is_set():
                if self.health.state is CameraState.RECONNECTING:
                    self._set(CameraState.CONNECTING)
                source = None
                try:
                    source = open_source(s.url, s.transport, s.open_timeout_s, s.read_timeout_s, s.loop, s.realtime,
                                         self.decoder_threads)
                    self._consume(source)
                except SourceEnded:
                    log.info("camera %s: source ended", s.id)
                    self._set(CameraState.STOPPED)
                    return
                except SourceError as exc:
                    if not exc.retryable:
                        self._set(CameraState.FAILED, last_error=str(exc))
                        return
                    self._reconnect_after(str(exc), attempt)
                    attempt = 0 if self.health.frames_decoded and self._ran_ok else attempt + 1
                except Exception as exc:  # an unexpected decoder error must not kill the camera thread
                    log.error("camera %s: unexpected %s", s.id, type(exc).__name__, exc_info=log.isEnabledFor(logging.DEBUG))
                    self._reconnect_after(f"{type(exc).__name__}: {exc}", attempt)
                    attempt += 1
                finally:
                    if source is not None:
                        source.close()
                if s.max_retries is not None and attempt > s.max_retries:
                    self._set(CameraState.FAILED, last_error=f"gave up after {s.max_retries} retries: {self.health.last_error}")
                    return
        finally:  # teardown: a failed camera keeps its error; anything else is marked stopped
            if self.health.state is CameraState.FAILED:
                self._write_health(force=True)
            elif self.health.state is not CameraState.STOPPED:
                self._set(CameraState.STOPPED)

    def _reconnect_after(self, error: str, attempt: int) -> None:
        if self.stop_event.is_set():
            return
        before = self.health.last_error
        self._set(CameraState.RECONNECTING, last_error=error, reconnects=self.health.reconnects + 1)
        repeated = self.health.last_error == before  # compared as stored: both redacted by `_set`
        delay = backoff_delay(attempt, self.settings.backoff_initial_s, self.settings.backoff_max_s, self._rng)
        # the same error again is logged at most once a minute (a camera that is down for hours says so, not 600 times)
        if not repeated or time.monotonic() - self._said_at >= 60.0:
            log.info("camera %s: reconnecting in %.1f s (%s)%s", self.settings.id, delay, self.health.last_error,
                     f"; {self.health.reconnects} attempts so far" if repeated else "")
            self._said_at = time.monotonic()
        self.stop_event.wait(delay)

    def _consume(self, source) -> None:
        w, s = self.windows, self.settings
        sampler, builder = FrameSampler(w.sample_fps), WindowBuilder(w.window_seconds, w.stride_seconds, w.sample_fps)
        clock = CaptureClock(self.now)
        epoch = getattr(source, "epoch", None)
        check_lag = epoch is None and source.live
        self._live = check_lag  # its windows carry capture times on the wall clock: the engine may skip stale ones
        self._ran_ok = False
        # half the lag that drops frames: key frames only; back within a quarter of it: every frame again (lags above
        # their recent least, stream/overload.py). Files played offline (and synthetic cameras with an epoch) have no
        # real time to fall behind.
        overload = OverloadSwitch(s.max_lag_s / 2, s.max_lag_s / 4, s.max_lag_s) if check_lag else None
        try:
            for raw in source.frames():
                if self.stop_event.is_set():
                    return
                if self.health.state is not CameraState.RUNNING:
                    self._set(CameraState.RUNNING)
                self._ran_ok = True
                self._fps_count += 1
                self._count_skipped(source, overload)
                reanchors = clock.reanchors
                ts = clock.stamp(raw.pts_s, raw.period_s, epoch)
                if clock.reanchors != reanchors:
                    sampler.reset()
                    builder.reset()
                self.health = self.health.moved(CameraState.RUNNING, frames_decoded=self.health.frames_decoded + 1, last_frame_ts=ts)
                lag = self.now() - ts
                if overload is not None:
                    self._follow_lag(overload, source, lag)
                if check_lag and lag > s.max_lag_s:
                    self.health = self.health.moved(CameraState.RUNNING, frames_dropped=self.health.frames_dropped + 1,
                                                    frames_dropped_late=self.health.frames_dropped_late + 1)
                    self._write_health()
                    continue
                ts_ms = int(round(ts * 1000))
                if sampler.keep(ts_ms, raw.period_s * 1000):
                    self._store(raw, ts_ms, builder)
                self._write_health()
        finally:  # the frames skipped since the last one decoded (the stream ended, failed or was stopped meanwhile)
            self._count_skipped(source, overload)
            if overload is not None and overload.in_episode:
                log.info("camera %s: %d frames were not decoded while it was behind real time (the last %.0f s)",
                         s.id, overload.episode_skipped, time.monotonic() - overload.episode_since)

    def _count_skipped(self, source, overload: OverloadSwitch | None) -> None:
        """Frames the source did not decode (key frames only): dropped, reason overload."""
        n = source.take_skipped()
        if n:
            self.health = self.health.moved(self.health.state, frames_dropped=self.health.frames_dropped + n,
                                            frames_dropped_overload=self.health.frames_dropped_overload + n)
            if overload is not None:
                overload.count_skipped(n)

    def _follow_lag(self, overload: OverloadSwitch, source, lag: float) -> None:
        """Key frames only while behind real time; one line when the camera falls behind, one when it has caught up."""
        change = overload.observe(lag, time.monotonic())
        source.keyframes_only = overload.keyframes_only
        if change is Overload.BEHIND:
            log.warning("camera %s: decoding fell %.1f s behind real time: decoding key frames only until it catches up "
                        "(the frames skipped are counted as dropped, reason overload)", self.settings.id, lag)
        elif change is Overload.CAUGHT_UP:
            log.info("camera %s: caught up: decoding every frame again; %d frames were not decoded while it was behind "
                     "(over %.0f s, %d times)", self.settings.id, overload.episode_skipped, overload.episode_s,
                     overload.episode_entries)

    def _store(self, raw: RawFrame, ts_ms: int, builder: WindowBuilder) -> None:
        w, h = raw.size_wh
        self.frame_wh = (w, h)
        if not self.link.up and time.monotonic() < self._retry_at:  # Redis is away: drop (counted), do not queue
            self._drop_unstored(builder)
            return
        data = encode_image(raw.resized(self.windows.input_size, self.windows.input_resample or "area"), self.windows.image_format)  # only kept frames are converted
        specs = builder.add(ts_ms)
        try:
            pipe = self.client.pipeline(transaction=False)
            self.store.put_frame(self.settings.id, ts_ms, data, pipeline=pipe)
            if self.windows.preview_size:  # the preview JPEG of the same frame, beside it (scaled from YUV)
                jpeg = preview_jpeg(raw.preview(self.windows.preview_size), self.windows.preview_size, self.windows.preview_quality)
                self.store.put_preview(self.settings.id, ts_ms, jpeg, pipeline=pipe)
            for spec in specs:
                self.store.add_window(Window(self.settings.id, spec.start_ms, spec.end_ms, spec.frames_ms, (w, h),
                                             self.windows.input_size, self._live), pipeline=pipe)
            pipe.execute()
            self.health = self.health.moved(self.health.state, frames_stored=self.health.frames_stored + 1,
                                            windows=self.health.windows + len(specs))
            self.link.ok()
        except redis.RedisError as exc:
            self._retry_at = time.monotonic() + self.link.failed(exc)
            self.health = self.health.moved(self.health.state, last_error=f"redis unavailable: {exc}")
            self._drop_unstored(builder)

    def _drop_unstored(self, builder: WindowBuilder) -> None:
        """A sampled frame that could not be stored: counted as dropped, and the window builder starts afresh,
        so no later window references a frame that is not in Redis."""
        self.health = self.health.moved(self.health.state, frames_dropped=self.health.frames_dropped + 1,
                                        frames_dropped_redis=self.health.frames_dropped_redis + 1)
        self.link.dropped += 1
        builder.reset()
