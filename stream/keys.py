"""Every Redis key and channel, from one place, laid out so that Redis Cluster works.

The Cluster rule: every transaction and multi-key command touches keys of one hash slot.

- A camera's frames and health carry its own tag, `{camera_id}`: ingest writes them, the engine
  reads a window's frames with one MGET.
- Work is split into a fixed number of **shards** (`redis.shards`, default 8). A camera belongs to
  shard `crc32(camera_id) % shards`. Everything the engine's commit touches for that camera carries
  the shard's tag, `{s<k>}` or `{s<k>.<n>}` (the suffix puts shard k in the k-th of `shards` equal
  slot ranges, so a Cluster's nodes get equal shares): the shard's window stream (one consumer group per shard), the event
  lifecycle state of each (camera, query), the window `done` markers, the set of open events, the
  shard's event stream and its dead letters. So one window's commit (state + events + done marker +
  XACK) is one MULTI in one slot, and shards spread over the Cluster's nodes.
- The all-cameras event feed is the union of the shards' event streams; a reader follows every
  shard with a cursor that holds one stream id per shard (`engine.contracts.feed.EventFeed`). A camera's
  events are the entries of its shard's stream whose `camera` field is that camera.
- Global single-key objects (the query hash, the camera set, the layout record, heartbeats) have no
  tag; no command combines them with another key.

The shard count is part of the layout: every process of one deployment must use the same one
(`check_layout` refuses a mismatch with one clear line). Camera and query ids are validated
(`[A-Za-z0-9_.-]{1,64}`) before they become key parts.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from functools import lru_cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from stream.redis_link import text_fields

DEFAULT_PREFIX = "svl:"
DEFAULT_SHARDS = 8
LAYOUT_VERSION = 2
# camera, query and event ids: key parts, URL path segments and file names alike, so one strict pattern: 1-64
# characters, starting with a letter or digit (no `.` / `..`, no hidden files, no option-like `-x`)
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@lru_cache(maxsize=4096)
def shard_tag(shard: int, shards: int) -> str:
    """The hash tag of one shard: `s<k>` with the smallest suffix that puts it in the k-th of `shards` equal slot
    ranges, so shards spread evenly over a Cluster whose nodes hold contiguous, even slot ranges."""
    lo = shard * REDIS_CLUSTER_HASH_SLOTS // shards
    hi = (shard + 1) * REDIS_CLUSTER_HASH_SLOTS // shards
    for n in range(1_000_000):
        tag = f"s{shard}" if n == 0 else f"s{shard}.{n}"
        if lo <= key_slot(tag.encode()) < hi:
            return tag
    raise AssertionError("unreachable: CRC16 covers every slot range")


def check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        shown = value[:80] + "..." if isinstance(value, str) and len(value) > 80 else value
        raise ValueError(f"invalid {what} {shown!r}: use 1-64 characters from A-Z a-z 0-9 _ . -, starting with a letter or digit")
    return value


@dataclass(frozen=True)
class Keys:
    prefix: str = DEFAULT_PREFIX
    shards: int = DEFAULT_SHARDS

    def __post_init__(self) -> None:
        if not 1 <= self.shards <= 1024:
            raise ValueError(f"shards must be in [1, 1024], got {self.shards}")

    # ---- shards --------------------------------------------------------------------------
    def shard_of(self, camera_id: str) -> int:
        """Stable camera -> shard map (crc32, the same in every process and Python version)."""
        return zlib.crc32(camera_id.encode()) % self.shards

    def all_shards(self) -> range:
        return range(self.shards)

    def _shard(self, shard: int) -> str:
        if not 0 <= shard < self.shards:
            raise ValueError(f"shard {shard} outside [0, {self.shards})")
        return f"{self.prefix}{{{shard_tag(shard, self.shards)}}}"

    # ---- a camera's own slot (ingest) ----------------------------------------------------
    def frame(self, camera_id: str, ts_ms: int) -> str:
        return f"{self.prefix}{{{camera_id}}}:frame:{ts_ms}"

    def frame_pattern(self, camera_id: str) -> str:
        return f"{self.prefix}{{{camera_id}}}:frame:*"

    def health(self, camera_id: str) -> str:
        return f"{self.prefix}{{{camera_id}}}:health"

    def preview(self, camera_id: str, ts_ms: int) -> str:
        """The preview JPEG of the sampled frame at `ts_ms` (what people look at; `frame` is the model's input).
        Same timestamp, same TTL and the same "stored once, windows reference it" rule as `frame`."""
        return f"{self.prefix}{{{camera_id}}}:preview:{ts_ms}"

    def preview_index(self, camera_id: str) -> str:
        """Sorted set of the camera's preview timestamps (score = member = ts_ms), trimmed to the frame TTL: the
        latest preview and the previews of a time range without SCAN."""
        return f"{self.prefix}{{{camera_id}}}:previews"

    # ---- a shard's slot (windows, lifecycle, events) -------------------------------------
    def windows(self, shard: int) -> str:
        """The shard's window stream (consumer group `engine.group`)."""
        return f"{self._shard(shard)}:windows"

    def windows_for(self, camera_id: str) -> str:
        return self.windows(self.shard_of(camera_id))

    def dead_windows(self, shard: int) -> str:
        """Windows that failed `engine.max_deliveries` times, with the error text."""
        return f"{self._shard(shard)}:windows:dead"

    def events(self, shard: int) -> str:
        """The shard's durable event stream; the all-cameras feed is the union over shards."""
        return f"{self._shard(shard)}:events"

    def event_record(self, shard: int, event_id: str) -> str:
        """When one event's latest version was written (Unix ms), for lookups by id; expires with the event retention."""
        return f"{self._shard(shard)}:evt:{event_id}"

    def event_state(self, camera_id: str, query_id: str) -> str:
        return f"{self._shard(self.shard_of(camera_id))}:event:{camera_id}:{query_id}"

    def open_events(self, shard: int) -> str:
        """Set of `camera_id/query_id` pairs whose event is open in this shard (what the idle check visits)."""
        return f"{self._shard(shard)}:open"

    def window_done(self, camera_id: str, window_id: str) -> str:
        """Marks a window whose events were written (a window processed twice yields nothing more)."""
        return f"{self._shard(self.shard_of(camera_id))}:done:{window_id}"

    # ---- global single keys --------------------------------------------------------------
    def layout(self) -> str:
        """A hash recording the layout version and shard count this deployment uses."""
        return f"{self.prefix}layout"

    def cameras(self) -> str:
        """Set of camera ids that an ingest worker has announced (pruned when their health expires)."""
        return f"{self.prefix}cameras"

    def heartbeat(self, role: str, worker_id: str) -> str:
        return f"{self.prefix}heartbeat:{role}:{worker_id}"

    def heartbeat_pattern(self, role: str) -> str:
        return f"{self.prefix}heartbeat:{role}:*"

    def role_status(self, role: str, supervisor: str) -> str:
        """What a supervisor says of a role it runs (running, restarting after a crash, down, with the error)."""
        return f"{self.prefix}status:{role}:{supervisor}"

    def role_status_pattern(self) -> str:
        return f"{self.prefix}status:*"

    def camera_configs(self) -> str:
        """Hash camera id -> CameraSettings JSON: the cameras ingest runs (the YAML seeds it, the API edits it)."""
        return f"{self.prefix}camera_configs"

    def camera_configs_changed(self) -> str:
        """Channel announcing camera additions and removals to running ingest workers."""
        return f"{self.prefix}camera_configs:changed"

    def telemetry(self, role: str) -> str:
        """Hash of Redis-held counters and histogram buckets of one role (engine, webhooks): `/metrics` reads them."""
        return f"{self.prefix}telemetry:{role}"

    def webhook_cursor(self) -> str:
        """The event feed position up to which webhook jobs were queued (one `webhook_queue` per sink)."""
        return f"{self.prefix}webhooks:cursor"

    def webhook_lock(self) -> str:
        """Held (SET NX PX, renewed) by the one API process that delivers webhooks."""
        return f"{self.prefix}webhooks:lock"

    def webhook_queue(self, sink_id: str) -> str:
        """One sink's delivery jobs (a list, oldest first; `sink_id`: a short hash of query id and URL, so the URL,
        which may hold a secret, is no key part). Each sink has its own key and slot: only single-key commands."""
        return f"{self.prefix}webhooks:queue:{sink_id}"

    def webhook_sinks(self) -> str:
        """Set of the sink ids whose queue may hold jobs: where a new dispatcher finds the backlog."""
        return f"{self.prefix}webhooks:sinks"

    def media_cursor(self) -> str:
        """The event feed position up to which the media worker made snapshots and clips."""
        return f"{self.prefix}media:cursor"

    def mqtt_cursor(self) -> str:
        """The event feed position up to which the MQTT publisher had every message acknowledged by its broker."""
        return f"{self.prefix}mqtt:cursor"

    def mqtt_discovered(self) -> str:
        """Hash `camera/query` -> the Home Assistant discovery config retained on the broker for that pair: what to
        update when a query changes, and remove when a query or a camera goes, even after a restart."""
        return f"{self.prefix}mqtt:discovered"

    def webhook_dead(self) -> str:
        """Deliveries given up after the last retry (capped stream: query, url, event id, error)."""
        return f"{self.prefix}webhooks:dead"

    def queries(self) -> str:
        return f"{self.prefix}queries"

    def queries_changed(self) -> str:
        return f"{self.prefix}queries:changed"

    def events_channel(self, camera_id: str) -> str:
        """Live push (pub/sub) of a camera's events; not durable."""
        return f"{self.prefix}events:{camera_id}"


class LayoutMismatch(RuntimeError):
    """The Redis data was written with another key layout or shard count."""


def check_layout(client, keys: Keys) -> None:
    """Record this process's layout in Redis, or refuse one that disagrees with what is recorded there."""
    fields = {"version": str(LAYOUT_VERSION), "shards": str(keys.shards)}
    client.hsetnx(keys.layout(), "version", fields["version"])
    client.hsetnx(keys.layout(), "shards", fields["shards"])
    stored = text_fields(client.hgetall(keys.layout()))
    if stored.get("version") != fields["version"] or stored.get("shards") != fields["shards"]:
        raise LayoutMismatch(f"Redis under prefix {keys.prefix!r} uses layout version {stored.get('version')} with "
                             f"{stored.get('shards')} shards; this process is configured for version {LAYOUT_VERSION} with "
                             f"{keys.shards} shards (set redis.shards to match, or use another prefix)")
