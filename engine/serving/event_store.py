"""Event lifecycle state and publishing, in one slot-local transaction per window.

For one window (all keys carry its camera's shard tag, so this is one MULTI on Cluster too):
WATCH the window's `done` marker and the (camera, query) states; compute the next states and
events with the pure `advance`; then in MULTI: write the states, keep the shard's open-event set
in step, XADD the events to the shard's event stream (trimmed by age and length), keep each
event's latest version for lookups by id, set the `done` marker, and XACK the window entry. Another
worker moving one of these states on makes EXEC fail and the step is recomputed. Pub/sub
(live push, best effort) follows the EXEC; the stream is the durable record.

Sizes are bounded by the settings: states live while open (at most `events_retention_s`), `done`
markers only as long as a re-delivery of the same window is possible, events by age and by
`events_maxlen` per shard, event records with the events.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

from engine.contracts.events import EndReason, EventState, GroundingEvent, Observation, advance, close
from engine.contracts.queries import StandingQuery
from engine.contracts.settings import EngineSettings
from engine.contracts.feed import encode_entry
from engine.serving.window_source import ack_window
from stream.keys import Keys
from stream.redis_link import text
from stream.role import require_client
from stream.types import Window

log = logging.getLogger(__name__)


def done_ttl_s(settings: EngineSettings) -> int:
    """A `done` marker guards against a second worker finishing a window that was claimed from a slow (not dead)
    one; that can happen only while the window is pending, i.e. within a few claim periods."""
    return int(settings.claim_idle_ms / 1000 * (settings.max_deliveries + 1)) + 120


class EventStore:
    def __init__(self, client: redis.Redis, keys: Keys, settings: EngineSettings, model_name: str,
                 now: Callable[[], float] = time.time) -> None:
        self.client = require_client(client, "EventStore")
        self.keys = keys
        self.settings = settings
        self.model_name = model_name
        self.now = now
        self.done_ttl_s = done_ttl_s(settings)
        self.state_ttl_s = int(settings.events_retention_s)

    # ---- a window ----------------------------------------------------------------------
    def is_done(self, window: Window) -> bool:
        return bool(self.client.exists(self.keys.window_done(window.camera_id, window.window_id)))

    def commit(self, window: Window, entry_id: str, queries: list[StandingQuery],
               observations: list[Observation]) -> list[GroundingEvent]:
        """Advance every (camera, query) state by one window, publish the events, mark the window done, XACK it."""
        cam = window.camera_id

        def step(states):
            moved = [advance(st, obs, q, cam, self.model_name) for q, st, obs in zip(queries, states, observations)]
            return [m[0] for m in moved], [e for m in moved for e in m[1]]

        return self._transition(cam, [q.id for q in queries], step, window.window_id, entry_id)

    def skip(self, window: Window, entry_id: str, why: str) -> None:
        """A window that cannot be processed (its frames are gone): marked done and acknowledged."""
        self._transition(window.camera_id, [], lambda states: ([], []), window.window_id, entry_id, done_value=why)

    # ---- one event ---------------------------------------------------------------------
    def state(self, camera_id: str, query_id: str) -> EventState:
        return EventState.from_json(self.client.get(self.keys.event_state(camera_id, query_id)))

    def open_pairs(self, shard: int) -> list[tuple[str, str]]:
        pairs = []
        for raw in self.client.smembers(self.keys.open_events(shard)):
            cam, _, qid = text(raw).partition("/")
            pairs.append((cam, qid))
        return sorted(pairs)

    def end(self, camera_id: str, query_id: str, reason: EndReason) -> list[GroundingEvent]:
        """End the open event of (camera, query) now, with `reason`; nothing when none is open."""
        window_id = f"{camera_id}:{reason.value}"

        def step(states):
            new_state, events = close(states[0], query_id, camera_id, window_id, self.model_name, reason)
            return [new_state], events

        return self._transition(camera_id, [query_id], step)

    # ---- the transaction ---------------------------------------------------------------
    def _transition(self, camera_id: str, query_ids: list[str], step, window_id: str | None = None,
                    entry_id: str | None = None, done_value: str = "1") -> list[GroundingEvent]:
        shard = self.keys.shard_of(camera_id)
        state_keys = [self.keys.event_state(camera_id, q) for q in query_ids]
        done_key = self.keys.window_done(camera_id, window_id) if window_id else None
        watched = [done_key, *state_keys] if done_key else list(state_keys)
        while True:
            with self.client.pipeline(transaction=True) as pipe:
                try:
                    if watched:
                        pipe.watch(*watched)
                    if done_key and pipe.exists(done_key):  # another worker finished it: only acknowledge
                        pipe.unwatch()
                        if entry_id:
                            ack_window(self.client, self.keys, self.settings.group, shard, entry_id)
                        return []
                    states = [EventState.from_json(pipe.get(k)) for k in state_keys]
                    new_states, events = step(states)
                    if done_key is None and not events and new_states == states:
                        pipe.unwatch()
                        return []
                    pipe.multi()
                    for qid, k, st in zip(query_ids, state_keys, new_states):
                        member = f"{camera_id}/{qid}"
                        if st.open:
                            pipe.set(k, st.to_json(), ex=self.state_ttl_s)
                            pipe.sadd(self.keys.open_events(shard), member)
                        else:
                            pipe.delete(k)
                            pipe.srem(self.keys.open_events(shard), member)
                    self._append(pipe, shard, events)
                    if done_key:
                        pipe.set(done_key, done_value, ex=self.done_ttl_s)
                    if entry_id:
                        ack_window(pipe, self.keys, self.settings.group, shard, entry_id)
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue  # another worker moved one of these events on: recompute
        self._push(events)
        return events

    def _append(self, pipe, shard: int, events: list[GroundingEvent]) -> None:
        if not events:
            return
        stream = self.keys.events(shard)
        now_ms = int(self.now() * 1000)
        minid = f"{now_ms - int(self.settings.events_retention_s * 1000)}-0"
        for e in events:
            pipe.xadd(stream, encode_entry(e), minid=minid, approximate=True)
            # where the event's latest version sits in the stream (by time: ids are only known after EXEC); ~100 bytes
            pipe.set(self.keys.event_record(shard, e.event_id), str(now_ms), ex=self.state_ttl_s)
        pipe.xtrim(stream, maxlen=self.settings.events_maxlen, approximate=True)

    def _push(self, events: list[GroundingEvent]) -> None:
        """Live push after the durable write; a subscriber that misses it reads the stream."""
        for e in events:
            try:
                self.client.publish(self.keys.events_channel(e.camera_id), e.to_json())
            except redis.RedisError as exc:
                log.warning("live push of event %s failed (it is in the event stream): %s", e.event_id, exc)
