"""The engine worker: a loop that ties four parts together.

    source   (engine/serving/window_source.py)  windows from the shards' streams: new, stale, retries; dead letters
    grounder (engine/serving/grounder.py)       the ready windows x their cameras' queries -> observations, as one batch
    store    (engine/serving/event_store.py)    lifecycle state + events + done marker + XACK, one transaction
    watcher  (engine/serving/query_watcher.py)  query changes and stopped cameras -> `end` events

One window's failure never stops the loop: the error is logged with the camera and window, counted,
and the window retried; after `max_deliveries` it is dead-lettered. Redis going away is waited out
with capped, jittered backoff (one log line when it goes, one when it is back); after it returns,
the worker re-creates its groups and subscription and carries on.

Admission (windows from live cameras only; a file played offline is processed in full): when the engine
falls behind, the newest window of a camera goes first. A live window whose camera has a newer window in
the same read is skipped (`superseded`: with 8 s windows and a 2 s stride its frames are all in the windows
around it), and one whose last frame is older than `engine.max_window_lag_s` is skipped (`stale`). Skipped
windows are marked done and acknowledged, counted in the heartbeat, and logged (one line per 10 s at most),
so latency stays bounded and the degradation is visible.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import redis

from engine.serving.event_store import EventStore
from engine.contracts.events import GroundingEvent
from engine.contracts.queries import StandingQuery
from engine.serving.grounder import MissingFrames, WindowGrounder
from engine.serving.latency import LatencyHistogram
from engine.serving.query_watcher import QueryWatcher
from engine.contracts.settings import EngineSettings
from engine.contracts.telemetry import EngineTelemetry
from engine.serving.window_source import Delivery, WindowSource
from stream.keys import Keys
from stream.role import Heartbeat, RoleLoop, require_client
from stream.store import WindowStore
from stream.types import Window

log = logging.getLogger(__name__)


@dataclass
class WorkerStats:
    processed: int = 0  # windows committed
    frames_gone: int = 0  # windows whose frames had expired or were never stored
    failed: int = 0  # failed attempts (each retried or dead-lettered)
    dead_lettered: int = 0
    events: int = 0
    # live windows skipped because the engine was behind (svl_windows_skipped_total{reason}):
    superseded: int = 0  # a newer window of the camera was waiting
    stale: int = 0  # older than max_window_lag_s
    batches: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)  # capture of the last frame -> committed


@dataclass(frozen=True)
class ReadyWindow:
    """A window admitted for grounding: its delivery, its camera's queries and its frames (None: a frame is gone)."""

    delivery: Delivery
    window: Window
    queries: list[StandingQuery]
    frames: list[bytes | None]


class EngineWorker:
    def __init__(self, client: redis.Redis, keys: Keys, grounder: WindowGrounder, settings: EngineSettings,
                 stop: threading.Event | None = None, consumer: str | None = None, model_name: str = "tiny",
                 on_event: Callable[[GroundingEvent], None] | None = None, frame_ttl_s: float = 60.0) -> None:
        self.client = require_client(client, "EngineWorker")
        self.keys = keys
        self.grounder = grounder
        self.settings = settings
        self.stop_event = stop or threading.Event()
        self.consumer = consumer or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        self.on_event = on_event or (lambda e: None)
        self.frame_ttl_s = frame_ttl_s
        self.frames = WindowStore(client, keys)
        self.source = WindowSource(client, keys, settings.group, self.consumer, settings.block_ms, settings.claim_idle_ms,
                                   settings.max_deliveries, settings.retry_backoff_s, batch=settings.batch_windows)
        self.store = EventStore(client, keys, settings, model_name)
        self.watcher = QueryWatcher(client, keys, self.store, drained=self.source.drained,
                                    max_per_camera=settings.max_queries_per_camera)
        self.telemetry = EngineTelemetry(client, keys)
        self.beats = Heartbeat(client, keys, "engine", self.consumer, settings.heartbeat_s)
        self.loop = RoleLoop(f"engine {self.consumer}", self.stop_event, self.beats)
        self.stats = WorkerStats()
        self._ready = False
        self._finish_by: float | None = None
        self._skip_logged = (0.0, 0, 0)  # (when, superseded, stale) at the last admission log line

    def finish(self, timeout_s: float) -> None:
        """Work off what is waiting (up to `timeout_s`), then stop: how `up` stops its engine after its cameras."""
        self._finish_by = time.monotonic() + timeout_s

    # ---- the loop ----------------------------------------------------------------------
    def run(self, max_windows: int | None = None, idle_exit_s: float | None = None) -> None:
        """Process windows until stopped (or `max_windows`, or idle for `idle_exit_s`: bounded exits for tests)."""
        self.loop.run(lambda: self.step(max_windows), stats=self.heartbeat_stats, teardown=self.teardown,
                      on_outage=self._lost_redis, idle_exit_s=idle_exit_s)

    def step(self, max_windows: int | None = None) -> bool | str:
        """One turn: (re)subscribe, query changes, the next batch of windows, or an idle check."""
        self.setup()
        self.publish(self.watcher.refresh(), counted=False)
        deliveries = self.source.next(block=self._finish_by is None)
        if deliveries:  # the windows that were ready together: one grounding batch
            self.handle_batch(deliveries)
        else:  # idle: windows read so far are done, so a stopped camera's events can end
            self.publish(self.watcher.idle_check(), counted=False)
        if max_windows is not None and self.stats.processed + self.stats.frames_gone >= max_windows:
            return "stop"
        if self._finish_by is not None and (not deliveries or time.monotonic() >= self._finish_by):
            return "stop"
        return bool(deliveries)

    def _lost_redis(self) -> None:
        self._ready = False  # groups and the subscription are made again when Redis is back

    def setup(self) -> None:
        """Consumer groups and the query subscription: at start and again after Redis comes back."""
        if not self._ready:
            self.source.ensure_groups()
            self.watcher.subscribe()
            self._ready = True

    def teardown(self) -> None:
        """End the events of cameras that have stopped (an `up` stops its cameras first), then leave."""
        try:
            if self._ready:
                self.publish(self.watcher.reconcile(cameras=True), counted=False)
            self.watcher.close()
            self._ready = False
        except redis.RedisError as exc:
            log.warning("engine %s: could not finish cleanly (%s)", self.consumer, exc)
        log.info("engine worker %s stopped: %d windows processed, %d with frames gone, %d failed attempts, %d dead-lettered",
                 self.consumer, self.stats.processed, self.stats.frames_gone, self.stats.failed, self.stats.dead_lettered)

    def heartbeat(self) -> None:
        self.beats.beat(self.heartbeat_stats(), force=True)

    def heartbeat_stats(self) -> dict:
        st = self.stats
        counts = {f.name: getattr(st, f.name) for f in fields(st) if f.name != "latency"}
        return {**counts, "latency_buckets": st.latency.counts, "latency_sum_s": round(st.latency.total_s, 3),
                "latency_max_30s": round(st.latency.recent_max(time.monotonic()), 3)}

    def publish(self, events: list[GroundingEvent], counted: bool = True) -> None:
        """Hand written events to the caller's hook; `counted=False`: events written outside a window (ends for a
        removed query or a stopped camera), which telemetry counts here."""
        self.stats.events += len(events)
        if events and not counted:
            self.telemetry.events_published(events)
        for e in events:
            self.on_event(e)

    # ---- a batch of windows -------------------------------------------------------------
    def handle(self, d: Delivery) -> list[GroundingEvent]:
        """One delivery (a batch of one); any error but Redis's own is contained."""
        return self.handle_batch([d])

    def handle_batch(self, deliveries: list[Delivery]) -> list[GroundingEvent]:
        """The windows that were ready together: admission, then one grounding batch per `batch_windows`, then one
        commit each."""
        admitted = [(d, w) for d in deliveries if (w := self._admit(d)) is not None]
        ready = []
        for d, window in self._newest_first(admitted):
            if self.store.is_done(window):
                log.info("window %s already done (re-delivered); acknowledging", window.window_id)
                self.source.ack(d)
                continue
            queries = self.watcher.for_camera(window.camera_id)
            ready.append(ReadyWindow(d, window, queries, self.frames.load_frames(window) if queries else []))
        return [e for at in range(0, len(ready), self.settings.batch_windows)
                for e in self._ground_and_commit(ready[at : at + self.settings.batch_windows])]

    def _ground_and_commit(self, ready: list[ReadyWindow]) -> list[GroundingEvent]:
        """Ground the windows as one batch and commit each. A window whose grounding fails is retried (or
        dead-lettered); should a batch of several fail, its windows are grounded one at a time, so a bad one fails alone."""
        if not ready:
            return []
        started = time.monotonic()
        try:
            results = self.grounder.ground_many([(r.window, r.frames, r.queries) for r in ready])
        except redis.RedisError:
            raise  # an outage, not these windows' fault: the loop waits for Redis; the windows stay pending
        except Exception as exc:
            if len(ready) == 1:
                self._failed(ready[0].delivery, ready[0].window, exc)
                return []
            log.warning("a batch of %d windows failed (%s: %s); processing them one at a time", len(ready), type(exc).__name__, exc)
            return [e for r in ready for e in self._ground_and_commit([r])]
        self.stats.batches += 1
        events = []
        for r, res in zip(ready, results):
            d, window, queries = r.delivery, r.window, r.queries
            if isinstance(res, MissingFrames):
                log.warning("%s; skipped", self._missing_reason(window, res))
                self.store.skip(window, d.entry_id, "skipped")
                self.stats.frames_gone += 1
                continue
            try:
                got = self.store.commit(window, d.entry_id, queries, res)
            except redis.RedisError:
                raise  # an outage: the windows not yet committed stay pending and are read again
            except Exception as exc:
                self._failed(d, window, exc)
                continue
            self._committed(window, (time.monotonic() - started) / len(ready), got)  # its share of the batch
            self.publish(got)
            events.extend(got)
        return events

    def _admit(self, d: Delivery) -> Window | None:
        """The delivery's window, or None when it was dead-lettered or skipped as stale."""
        try:
            window = Window.from_fields(d.fields)
        except ValueError as exc:  # malformed entry: retrying cannot help
            self._dead(d, "unknown", f"malformed window entry: {exc}")
            return None
        if d.deliveries > self.settings.max_deliveries:  # a window that took its workers down with it
            self._dead(d, window.camera_id, f"delivered {d.deliveries} times without finishing (a worker died on it each time)")
            return None
        lag = time.time() - window.frames_ms[-1] / 1000.0 if window.frames_ms else 0.0
        if window.live and self.settings.max_window_lag_s and lag > self.settings.max_window_lag_s:
            self.store.skip(window, d.entry_id, "stale")
            self.stats.stale += 1
            self.telemetry.window_skipped(window.camera_id, "stale")
            self._log_skips()
            return None
        return window

    def _newest_first(self, ready: list[tuple[Delivery, Window]]) -> list[tuple[Delivery, Window]]:
        """Of a live camera's windows read together, only the newest is processed; the older ones are skipped."""
        newest: dict[str, int] = {}
        for d, w in ready:
            if w.live:
                newest[w.camera_id] = max(newest.get(w.camera_id, w.start_ms), w.start_ms)
        keep = []
        for d, w in ready:
            if w.live and w.start_ms < newest[w.camera_id]:
                self.store.skip(w, d.entry_id, "superseded")
                self.stats.superseded += 1
                self.telemetry.window_skipped(w.camera_id, "superseded")
                self._log_skips()
            else:
                keep.append((d, w))
        return keep

    def _log_skips(self) -> None:
        at, superseded, stale = self._skip_logged
        if time.monotonic() - at >= 10.0:
            log.warning("engine %s is behind: skipped %d superseded and %d stale live windows in the last %s (totals %d, %d); "
                        "add engine workers or cameras per engine will keep skipping", self.consumer,
                        self.stats.superseded - superseded, self.stats.stale - stale,
                        f"{time.monotonic() - at:.0f} s" if at else "start", self.stats.superseded, self.stats.stale)
            self._skip_logged = (time.monotonic(), self.stats.superseded, self.stats.stale)

    def _committed(self, window: Window, duration_s: float, events: list[GroundingEvent]) -> None:
        """A window's events are written: counted, its capture-to-commit latency observed (heartbeat and telemetry)."""
        self.stats.processed += 1
        newest = window.frames_ms[-1] / 1000.0 if window.frames_ms else None  # capture time of its newest frame
        if newest is not None:
            self.stats.latency.observe(time.time() - newest, time.monotonic())
        self.telemetry.window_processed(window.camera_id, duration_s, events, newest_frame_ts=newest)

    # ---- failures --------------------------------------------------------------------
    def _failed(self, d: Delivery, window: Window, exc: Exception) -> None:
        self.stats.failed += 1
        error = f"{type(exc).__name__}: {exc}"
        log.error("camera %s window %s (entry %s, delivery %d of %d) failed: %s", window.camera_id, window.window_id,
                  d.entry_id, d.deliveries, self.settings.max_deliveries, error, exc_info=log.isEnabledFor(logging.DEBUG))
        if self.source.fail(d, error):
            self.stats.dead_lettered += 1
            self.telemetry.window_dead(window.camera_id)

    def _dead(self, d: Delivery, camera_id: str, error: str) -> None:
        self.source.dead_letter(d, error)
        self.stats.dead_lettered += 1
        self.telemetry.window_dead(camera_id)

    def _missing_reason(self, window: Window, exc: MissingFrames, now: float | None = None) -> str:
        age = (now if now is not None else time.time()) - window.end_ms / 1000.0
        if age > self.frame_ttl_s:
            return (f"{exc}: they expired ({age:.0f} s old, frame_ttl_seconds {self.frame_ttl_s:.0f}): the engine is "
                    "behind; add engine workers or raise frame_ttl_seconds")
        return f"{exc}: they were never stored or were evicted (Redis unavailable or out of memory while it was captured)"
