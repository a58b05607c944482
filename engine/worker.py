"""The engine worker: windows from the consumer group, grounding, event lifecycle, publishing.

XREADGROUP in group `engines` (any number of workers share the load); entries left pending
by a dead worker are claimed with XAUTOCLAIM; XACK only after the window's events and
lifecycle state are written in one transaction (WATCH on the state keys, so two workers on
one camera never lose an update). A per-window `done` marker written in the same transaction
makes re-processing after a crash a no-op: no duplicate, no extra event.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable

import redis

from engine.events import EventState, GroundingEvent, advance, close
from engine.grounder import MissingFrames, WindowGrounder
from engine.queries import QueryRegistry, StandingQuery
from engine.settings import EngineSettings
from stream.health import CameraState
from stream.keys import Keys
from stream.store import WindowStore
from stream.types import Window

log = logging.getLogger(__name__)

DONE_TTL_S = 24 * 3600
STATE_TTL_S = 7 * 24 * 3600


class EngineWorker:
    def __init__(self, client: redis.Redis, keys: Keys, grounder: WindowGrounder, settings: EngineSettings,
                 stop: threading.Event | None = None, consumer: str | None = None, model_name: str = "tiny",
                 on_event: Callable[[GroundingEvent], None] | None = None) -> None:
        if client is None:
            raise TypeError("EngineWorker needs a Redis client")
        self.client = client
        self.keys = keys
        self.grounder = grounder
        self.settings = settings
        self.stop_event = stop or threading.Event()
        self.consumer = consumer or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        self.model_name = model_name
        self.on_event = on_event or (lambda e: None)
        self.registry = QueryRegistry(client, keys)
        self.store = WindowStore(client, keys)
        self.queries: list[StandingQuery] = []
        self._queries_loaded = 0.0
        self._pubsub = None
        self.processed = 0
        self.skipped = 0
        self._last_camera_check = 0.0

    # ---- setup -------------------------------------------------------------------------
    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.keys.windows(), self.settings.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _refresh_queries(self, force: bool = False) -> None:
        changed = force or time.monotonic() - self._queries_loaded > 5.0
        if self._pubsub is not None:
            while (msg := self._pubsub.get_message(timeout=0)) is not None:
                if msg.get("type") == "message":
                    changed = True
        if changed:
            self.queries = self.registry.all()
            self._queries_loaded = time.monotonic()

    # ---- the loop ----------------------------------------------------------------------
    def run(self, max_windows: int | None = None, idle_exit_s: float | None = None) -> None:
        """Process windows until stopped (or `max_windows`, or idle for `idle_exit_s`: bounded exits for tests)."""
        backoff = 0.5
        last_work = time.monotonic()
        try:
            while not self.stop_event.is_set():
                try:
                    if self._pubsub is None:
                        self.ensure_group()
                        self._pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                        self._pubsub.subscribe(self.keys.queries_changed())
                        self._refresh_queries(force=True)
                    self._heartbeat()
                    self._refresh_queries()
                    entries = self._claim() or self._read()
                    for entry_id, fields in entries:
                        self.process(entry_id, fields)
                        last_work = time.monotonic()
                        if max_windows is not None and self.processed + self.skipped >= max_windows:
                            return
                    if not entries:  # idle: every window read so far is done, so a stopped camera's events can end
                        self._end_events_of_stopped_cameras()
                    backoff = 0.5
                    if idle_exit_s is not None and time.monotonic() - last_work > idle_exit_s:
                        return
                except redis.ConnectionError as exc:
                    log.warning("Redis unavailable (%s); retrying in %.1f s", exc, backoff)
                    self._pubsub = None
                    self.stop_event.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
        finally:
            self.teardown()

    def teardown(self) -> None:
        try:
            if self._pubsub is not None:
                self._pubsub.close()
            self.client.delete(self.keys.heartbeat("engine", self.consumer))
        except redis.RedisError:
            pass
        log.info("engine worker %s stopped after %d windows", self.consumer, self.processed)

    def _heartbeat(self) -> None:
        self.client.set(self.keys.heartbeat("engine", self.consumer),
                        json.dumps({"ts": time.time(), "processed": self.processed}), ex=int(self.settings.heartbeat_s * 3) + 1)

    def _claim(self):
        res = self.client.xautoclaim(self.keys.windows(), self.settings.group, self.consumer,
                                     min_idle_time=self.settings.claim_idle_ms, start_id="0-0", count=1)
        claimed = [(i, f) for i, f in res[1] if f]
        gone = [i for i, f in res[1] if not f]  # trimmed from the stream while pending (Redis 6.2 returns them empty)
        if gone:
            log.warning("%d pending window entries were trimmed before processing; acknowledging them", len(gone))
            self.client.xack(self.keys.windows(), self.settings.group, *gone)
        for entry_id, _ in claimed:
            log.info("claimed stale window entry %s", entry_id)
        return claimed

    def _read(self):
        res = self.client.xreadgroup(self.settings.group, self.consumer, {self.keys.windows(): ">"}, count=1,
                                     block=self.settings.block_ms)
        return [(i, f) for _, entries in res for i, f in entries] if res else []

    # ---- one window --------------------------------------------------------------------
    def process(self, entry_id, fields) -> list[GroundingEvent]:
        try:
            window = Window.from_fields(fields)
        except ValueError as exc:
            log.error("dropping malformed window entry %s: %s", entry_id, exc)
            self.client.xack(self.keys.windows(), self.settings.group, entry_id)
            self.skipped += 1
            return []
        done_key = self.keys.window_done(window.camera_id, window.window_id)
        if self.client.exists(done_key):
            log.info("window %s already done (re-delivered); acknowledging", window.window_id)
            self.client.xack(self.keys.windows(), self.settings.group, entry_id)
            return []
        queries = [q for q in self.queries if q.applies_to(window.camera_id)]
        try:
            frames = self.store.load_frames(window) if queries else []
            observations = self.grounder.ground(window, frames, queries)
        except MissingFrames as exc:
            log.warning("%s; skipped (raise frame_ttl_seconds or add engine workers)", exc)
            self.client.set(done_key, "expired", ex=DONE_TTL_S)
            self.client.xack(self.keys.windows(), self.settings.group, entry_id)
            self.skipped += 1
            return []
        events = self._commit(window, queries, observations, done_key)
        self.client.xack(self.keys.windows(), self.settings.group, entry_id)
        self.processed += 1
        for e in events:
            self.on_event(e)
        return events

    def _commit(self, window: Window, queries, observations, done_key: str) -> list[GroundingEvent]:
        def step(states):
            moved = [advance(st, obs, q, window.camera_id, self.model_name) for q, st, obs in zip(queries, states, observations)]
            return [m[0] for m in moved], [e for m in moved for e in m[1]]

        return self._transition([self.keys.event_state(window.camera_id, q.id) for q in queries], step, done_key)

    def _transition(self, state_keys: list[str], step, done_key: str | None = None) -> list[GroundingEvent]:
        """Optimistic transaction: read the event states under WATCH, compute the next ones with `step`, write
        them with their events (and the window's done marker) in one MULTI; recompute when another worker won."""
        watched = [done_key, *state_keys] if done_key else list(state_keys)
        while True:
            with self.client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(*watched)
                    if done_key and pipe.exists(done_key):
                        pipe.unwatch()
                        return []
                    states = [EventState.from_json(pipe.get(k)) for k in state_keys]
                    new_states, events = step(states)
                    if done_key is None and not events and new_states == states:
                        pipe.unwatch()
                        return []
                    pipe.multi()
                    for k, st in zip(state_keys, new_states):
                        if st.open:
                            pipe.set(k, st.to_json(), ex=STATE_TTL_S)
                        else:
                            pipe.delete(k)
                    self._publish(pipe, events)
                    if done_key:
                        pipe.set(done_key, "1", ex=DONE_TTL_S)
                    pipe.execute()
                    return events
                except redis.WatchError:
                    continue  # another worker moved one of these events on: recompute

    def _publish(self, pipe, events: list[GroundingEvent]) -> None:
        minid = f"{int((time.time() - self.settings.events_retention_s) * 1000)}-0"
        for e in events:
            payload = e.to_json()
            pipe.xadd(self.keys.events(), {"event": payload, "camera": e.camera_id, "query": e.query_id, "type": e.type.value},
                      minid=minid, approximate=True)
            pipe.publish(self.keys.events_channel(e.camera_id), payload)

    def _end_events_of_stopped_cameras(self) -> None:
        if time.monotonic() - self._last_camera_check < 5.0:
            return
        self._last_camera_check = time.monotonic()
        for raw in self.client.smembers(self.keys.cameras()):
            cam = raw.decode() if isinstance(raw, bytes) else raw
            state = self.client.hget(self.keys.health(cam), "state")
            if state is not None and state.decode() not in (CameraState.STOPPED.value, CameraState.FAILED.value):
                continue
            for q in self.queries:
                self.end_event(cam, q, reason="camera stopped")

    def end_event(self, camera_id: str, query: StandingQuery, reason: str) -> list[GroundingEvent]:
        window_id = f"{camera_id}:{reason.replace(' ', '-')}"

        def step(states):
            new_state, events = close(states[0], query, camera_id, window_id, self.model_name)
            return [new_state], events

        events = self._transition([self.keys.event_state(camera_id, query.id)], step)
        for e in events:
            self.on_event(e)
        return events
