"""Standing queries as the engine sees them, and the open events that must end when things change.

- `refresh()` keeps the query list current: a change announced on `queries_changed` (or every
  `reload_s`) reloads it, then `reconcile` ends what the change invalidated.
- `reconcile()` visits only the (camera, query) pairs that have an open event (the shards' open
  sets, kept by the event store) and ends each event whose query was removed (`query_removed`),
  whose text changed or that no longer applies to its camera (`query_changed`), or, with
  `cameras=True`, whose camera has stopped, failed or expired (`camera_stopped`) once every window
  of its shard has been processed (so the camera's last windows still count). It works from
  Redis state alone, so it is right after a restart and with any number of workers (ending an
  event twice is a no-op). It also prunes the camera set of cameras whose health has expired.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

from engine.serving.event_store import EventStore
from engine.contracts.events import EndReason, GroundingEvent
from engine.contracts.queries import QueryRegistry, StandingQuery
from stream.health import CameraState, read_health
from stream.keys import Keys
from stream.redis_link import text
from stream.role import require_client

log = logging.getLogger(__name__)

ENDED_CAMERA_STATES = (CameraState.STOPPED, CameraState.FAILED)


class QueryWatcher:
    def __init__(self, client: redis.Redis, keys: Keys, store: EventStore, drained: Callable[[int], bool] = lambda shard: True,
                 reload_s: float = 5.0, camera_check_s: float = 5.0, now: Callable[[], float] = time.monotonic,
                 max_per_camera: int = 64) -> None:
        self.client = require_client(client, "QueryWatcher")
        self.keys = keys
        self.store = store
        self.drained = drained
        self.registry = QueryRegistry(client, keys)
        self.reload_s = reload_s
        self.camera_check_s = camera_check_s
        self.now = now
        self.queries: list[StandingQuery] = []  # oldest first (created_at, then id)
        self.max_per_camera = max_per_camera  # engine.max_queries_per_camera
        self.over_cap: dict[str, tuple[str, ...]] = {}  # camera -> the ids of its queries beyond the cap (not grounded)
        self._loaded_at: float | None = None
        self._cameras_checked_at = float("-inf")
        self._pubsub = None

    def subscribe(self) -> None:
        """(Re)subscribe to query changes and reload; after a Redis outage too."""
        self.close()
        self._pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(self.keys.queries_changed())
        self._loaded_at = None

    def close(self) -> None:
        if self._pubsub is not None:
            try:
                self._pubsub.close()
            except redis.RedisError:
                pass
            self._pubsub = None

    def for_camera(self, camera_id: str) -> list[StandingQuery]:
        """The queries grounded on this camera: the oldest `max_per_camera` that apply to it. Each query adds its cost
        to every window of the camera, so the engine bounds it whatever was registered; the rest are logged once
        (per change) and kept in `over_cap`."""
        queries = [q for q in self.queries if q.applies_to(camera_id)]
        skipped = tuple(q.id for q in queries[self.max_per_camera:])
        if skipped != self.over_cap.get(camera_id, ()):
            if skipped:
                log.error("camera %s: %d standing queries, %d beyond engine.max_queries_per_camera (%d) not grounded: %s",
                          camera_id, len(queries), len(skipped), self.max_per_camera, ", ".join(skipped))
                self.over_cap[camera_id] = skipped
            else:
                log.info("camera %s: every standing query is grounded again", camera_id)
                self.over_cap.pop(camera_id, None)
        return queries[:self.max_per_camera]

    def refresh(self) -> list[GroundingEvent]:
        """Reload the queries when they changed (or every `reload_s`); end the events the change invalidated (on the
        first load too: a query may have been removed while no worker ran)."""
        first = self._loaded_at is None
        changed = first or self.now() - self._loaded_at > self.reload_s
        if self._pubsub is not None:
            while (msg := self._pubsub.get_message(timeout=0)) is not None:
                if msg.get("type") == "message":
                    changed = True
        if not changed:
            return []
        before = {q.id: q for q in self.queries}
        self.queries = self.registry.all()
        self._loaded_at = self.now()
        if not first and before == {q.id: q for q in self.queries}:
            return []  # a periodic reload that found nothing new: no open event to revisit
        log.info("standing queries: %s", ", ".join(q.id for q in self.queries) or "none")
        return self.reconcile(cameras=False)

    def reconcile(self, cameras: bool) -> list[GroundingEvent]:
        queries = {q.id: q for q in self.queries}
        ended: list[GroundingEvent] = []
        stopped: dict[str, bool] = {}
        for shard in self.keys.all_shards():
            pairs = self.store.open_pairs(shard)
            check_cameras = cameras and bool(pairs) and self.drained(shard)
            for cam, qid in pairs:
                q = queries.get(qid)
                reason = None
                if q is None:
                    reason = EndReason.QUERY_REMOVED
                elif not q.applies_to(cam) or self.store.state(cam, qid).query_text not in ("", q.text):
                    reason = EndReason.QUERY_CHANGED
                elif check_cameras:
                    if cam not in stopped:
                        health = read_health(self.client, self.keys, cam)
                        stopped[cam] = health is None or health.state in ENDED_CAMERA_STATES
                    if stopped[cam]:
                        reason = EndReason.CAMERA_STOPPED
                if reason is not None:
                    events = self.store.end(cam, qid, reason)
                    for e in events:
                        log.info("event %s (camera %s, query %s) ended: %s", e.event_id, cam, qid, reason.value)
                    ended += events
        if cameras:
            self.prune_cameras()
        return ended

    def idle_check(self) -> list[GroundingEvent]:
        """When no window is waiting (so a stopped camera's last windows are done): end its events, at most every
        `camera_check_s`."""
        if self.now() - self._cameras_checked_at < self.camera_check_s:
            return []
        self._cameras_checked_at = self.now()
        return self.reconcile(cameras=True)

    def prune_cameras(self) -> None:
        for raw in self.client.smembers(self.keys.cameras()):
            cam = text(raw)
            if not self.client.exists(self.keys.health(cam)):
                self.client.srem(self.keys.cameras(), cam)
                log.info("camera %s: health expired; removed from the camera set", cam)
