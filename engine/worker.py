"""The engine worker: a loop that ties four parts together.

    source   (engine/window_source.py)  windows from the shards' streams: new, stale, retries; dead letters
    grounder (engine/grounder.py)       one window x its camera's queries -> observations
    store    (engine/event_store.py)    lifecycle state + events + done marker + XACK, one transaction
    watcher  (engine/query_watcher.py)  query changes and stopped cameras -> `end` events

One window's failure never stops the loop: the error is logged with the camera and window, counted,
and the window retried; after `max_deliveries` it is dead-lettered. Redis going away is waited out
with capped, jittered backoff (one log line when it goes, one when it is back); after it returns,
the worker re-creates its groups and subscription and carries on.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import redis

from engine.event_store import EventStore
from engine.events import GroundingEvent
from engine.grounder import MissingFrames, WindowGrounder
from engine.query_watcher import QueryWatcher
from engine.settings import EngineSettings
from engine.telemetry import EngineTelemetry
from engine.window_source import Delivery, WindowSource
from stream.keys import Keys
from stream.redis_link import RedisLink
from stream.store import WindowStore
from stream.types import Window

log = logging.getLogger(__name__)


@dataclass
class WorkerStats:
    processed: int = 0  # windows committed
    skipped: int = 0  # windows whose frames were gone
    failed: int = 0  # failed attempts (each retried or dead-lettered)
    dead_lettered: int = 0
    events: int = 0


class EngineWorker:
    def __init__(self, client: redis.Redis, keys: Keys, grounder: WindowGrounder, settings: EngineSettings,
                 stop: threading.Event | None = None, consumer: str | None = None, model_name: str = "tiny",
                 on_event: Callable[[GroundingEvent], None] | None = None, frame_ttl_s: float = 60.0) -> None:
        if client is None:
            raise TypeError("EngineWorker needs a Redis client")
        self.client = client
        self.keys = keys
        self.grounder = grounder
        self.settings = settings
        self.stop_event = stop or threading.Event()
        self.consumer = consumer or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        self.on_event = on_event or (lambda e: None)
        self.frame_ttl_s = frame_ttl_s
        self.frames = WindowStore(client, keys)
        self.source = WindowSource(client, keys, settings.group, self.consumer, settings.block_ms, settings.claim_idle_ms,
                                   settings.max_deliveries, settings.retry_backoff_s)
        self.store = EventStore(client, keys, settings, model_name)
        self.watcher = QueryWatcher(client, keys, self.store, drained=self.source.drained)
        self.telemetry = EngineTelemetry(client, keys)
        self.link = RedisLink(f"engine {self.consumer}")
        self.stats = WorkerStats()
        self._ready = False
        self._finish_by: float | None = None

    def finish(self, timeout_s: float) -> None:
        """Work off what is waiting (up to `timeout_s`), then stop: how `up` stops its engine after its cameras."""
        self._finish_by = time.monotonic() + timeout_s

    @property
    def processed(self) -> int:
        return self.stats.processed

    # ---- the loop ----------------------------------------------------------------------
    def run(self, max_windows: int | None = None, idle_exit_s: float | None = None) -> None:
        """Process windows until stopped (or `max_windows`, or idle for `idle_exit_s`: bounded exits for tests)."""
        last_work = time.monotonic()
        try:
            while not self.stop_event.is_set():
                try:
                    self.setup()
                    self.heartbeat()
                    self.publish(self.watcher.refresh(), counted=False)
                    deliveries = self.source.next(block=self._finish_by is None)
                    for d in deliveries:
                        self.handle(d)
                        last_work = time.monotonic()
                    if not deliveries:  # idle: windows read so far are done, so a stopped camera's events can end
                        self.publish(self.watcher.idle_check(), counted=False)
                    self.link.ok()
                except redis.RedisError as exc:
                    self._ready = False
                    self.stop_event.wait(self.link.failed(exc))
                    continue
                if max_windows is not None and self.stats.processed + self.stats.skipped >= max_windows:
                    return
                if self._finish_by is not None and (not deliveries or time.monotonic() >= self._finish_by):
                    return
                if idle_exit_s is not None and time.monotonic() - last_work > idle_exit_s:
                    return
        finally:
            self.teardown()

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
            self.client.delete(self.keys.heartbeat("engine", self.consumer))
        except redis.RedisError as exc:
            log.warning("engine %s: could not finish cleanly (%s)", self.consumer, exc)
        log.info("engine worker %s stopped: %d windows processed, %d skipped, %d failed attempts, %d dead-lettered",
                 self.consumer, self.stats.processed, self.stats.skipped, self.stats.failed, self.stats.dead_lettered)

    def heartbeat(self) -> None:
        beat = {"ts": time.time(), "processed": self.stats.processed, "skipped": self.stats.skipped,
                "failed": self.stats.failed, "dead_lettered": self.stats.dead_lettered}
        self.client.set(self.keys.heartbeat("engine", self.consumer), json.dumps(beat),
                        ex=int(self.settings.heartbeat_s * 3) + 1)

    def publish(self, events: list[GroundingEvent], counted: bool = True) -> None:
        """Hand written events to the caller's hook; `counted=False`: events written outside a window (ends for a
        removed query or a stopped camera), which telemetry counts here."""
        self.stats.events += len(events)
        if events and not counted:
            self.telemetry.events_published(events)
        for e in events:
            self.on_event(e)

    # ---- one window --------------------------------------------------------------------
    def handle(self, d: Delivery) -> list[GroundingEvent]:
        """Process one delivery; any error but Redis's own is contained here."""
        try:
            window = Window.from_fields(d.fields)
        except ValueError as exc:  # malformed entry: retrying cannot help
            self._dead(d, "unknown", f"malformed window entry: {exc}")
            return []
        if d.deliveries > self.settings.max_deliveries:  # a window that took its workers down with it
            self._dead(d, window.camera_id, f"delivered {d.deliveries} times without finishing (a worker died on it each time)")
            return []
        try:
            events = self.process(window, d.entry_id)
        except redis.RedisError:
            raise  # an outage, not this window's fault: the loop waits for Redis; the window stays pending
        except Exception as exc:
            self.stats.failed += 1
            error = f"{type(exc).__name__}: {exc}"
            log.error("camera %s window %s (entry %s, delivery %d of %d) failed: %s", window.camera_id, window.window_id,
                      d.entry_id, d.deliveries, self.settings.max_deliveries, error, exc_info=log.isEnabledFor(logging.DEBUG))
            if self.source.fail(d, error):
                self.stats.dead_lettered += 1
                self.telemetry.window_dead(window.camera_id)
            return []
        self.publish(events)
        return events

    def _dead(self, d: Delivery, camera_id: str, error: str) -> None:
        self.source.dead_letter(d, error)
        self.stats.dead_lettered += 1
        self.telemetry.window_dead(camera_id)

    def process(self, window: Window, entry_id: str) -> list[GroundingEvent]:
        if self.store.is_done(window):
            log.info("window %s already done (re-delivered); acknowledging", window.window_id)
            self.store.ack_only(self.keys.shard_of(window.camera_id), entry_id)
            return []
        started = time.monotonic()
        queries = self.watcher.for_camera(window.camera_id)
        try:
            frames = self.frames.load_frames(window) if queries else []
            observations = self.grounder.ground(window, frames, queries)
        except MissingFrames as exc:
            why = self._missing_reason(window, exc)
            log.warning("%s; skipped", why)
            self.store.skip(window, entry_id, "skipped")
            self.stats.skipped += 1
            return []
        events = self.store.commit(window, entry_id, queries, observations)
        self.stats.processed += 1
        self.telemetry.window_processed(window.camera_id, time.monotonic() - started, events,
                                        window_end_ts=window.end_ms / 1000.0)
        return events

    def _missing_reason(self, window: Window, exc: MissingFrames, now: float | None = None) -> str:
        age = (now if now is not None else time.time()) - window.end_ms / 1000.0
        if age > self.frame_ttl_s:
            return (f"{exc}: they expired ({age:.0f} s old, frame_ttl_seconds {self.frame_ttl_s:.0f}): the engine is "
                    "behind; add engine workers or raise frame_ttl_seconds")
        return f"{exc}: they were never stored or were evicted (Redis unavailable or out of memory while it was captured)"
