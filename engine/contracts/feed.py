"""The durable event feed across shards: follow it forward (live, resumable) or page it backward.

Each shard has its own event stream (`Keys.events(shard)`, see `stream/keys.py`), so the
all-cameras feed is their union. A `Cursor` holds one stream id per shard; it is exact: resuming
from the cursor returned with an entry yields every later entry once and nothing twice, on
standalone Redis and on Cluster alike. Its text form (`Cursor.encode`) is what the SDK, the CLI and
the HTTP API hand out (SSE `id:` lines, `next` page links).

Entries are merged in stream-id order (time, then shard), which is the order they were written
up to clock differences between Cluster nodes.
"""
from __future__ import annotations

import heapq
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import redis

from engine.contracts.events import GroundingEvent
from stream.keys import Keys
from stream.redis_link import text
from stream.role import require_client

log = logging.getLogger(__name__)

START = "0-0"
END = "+"  # a backward page's upper bound before the first page
MAX_SEQ = 18446744073709551615
MAX_UNIX_S = 1e11  # the largest time a client may name (year ~5138): its milliseconds fit a stream id


class CursorError(ValueError):
    """A cursor string that does not fit this deployment's shards."""


def _key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _check_stream_id(s: str) -> str:
    if s in (START, END):
        return s
    try:
        ms, seq = s.split("-")
        if int(ms) < 0 or not 0 <= int(seq) <= MAX_SEQ:
            raise ValueError
    except ValueError:
        raise CursorError(f"not a stream id: {s!r}") from None
    return s


@dataclass(frozen=True)
class Cursor:
    """One position per shard: the id of the last entry consumed there (exclusive bound)."""

    ids: tuple[str, ...]

    @classmethod
    def start(cls, shards: int) -> "Cursor":
        return cls((START,) * shards)

    @classmethod
    def at_time(cls, shards: int, unix_s: float) -> "Cursor":
        """Forward: entries written at or after `unix_s`. Backward: entries written before it."""
        ms = int(unix_s * 1000)
        return cls((f"{ms - 1}-{MAX_SEQ}" if ms > 0 else START,) * shards)

    @classmethod
    def decode(cls, text: str, shards: int) -> "Cursor":
        # what a client sends back is bounded before any work on it: one stream id is at most 41 characters
        # (two 20-digit numbers), and every part must be one Redis takes (<ms>-<seq>, each a 64-bit unsigned)
        if len(text) > 42 * shards:
            raise CursorError(f"cursor too long ({len(text)} characters; at most {42 * shards} with {shards} shards)")
        parts = text.split(".")
        if len(parts) == 1 and shards > 1:  # a plain stream id applies to every shard
            parts = parts * shards
        if len(parts) != shards:
            raise CursorError(f"cursor {text[:80]!r} has {len(parts)} positions; this deployment has {shards} shards")
        for p in parts:
            if p not in (START, END) and not (re.fullmatch(r"[0-9]{1,20}-[0-9]{1,20}", p) and _key(p)[0] <= MAX_SEQ):
                raise CursorError(f"not a stream id: {p[:50]!r}")
        return cls(tuple(_check_stream_id(p) for p in parts))

    def encode(self) -> str:
        return ".".join(self.ids)

    def moved(self, shard: int, entry_id: str) -> "Cursor":
        ids = list(self.ids)
        ids[shard] = entry_id
        return Cursor(tuple(ids))


@dataclass(frozen=True)
class FeedEntry:
    shard: int
    entry_id: str  # the id in the shard's stream
    cursor: str  # the feed position just after this entry (resume from here)
    event: GroundingEvent

    @property
    def position(self) -> str:
        """A stable id of this entry in the whole feed."""
        return f"{self.shard}/{self.entry_id}"


@dataclass(frozen=True)
class EventFilter:
    camera: str | None = None
    query: str | None = None
    type: str | None = None
    since_ts: float | None = None  # event end_ts >= since_ts
    until_ts: float | None = None  # event start_ts <= until_ts

    def matches(self, e: GroundingEvent) -> bool:
        return ((self.camera is None or e.camera_id == self.camera) and (self.query is None or e.query_id == self.query)
                and (self.type is None or e.type.value == self.type)
                and (self.since_ts is None or e.end_ts >= self.since_ts)
                and (self.until_ts is None or e.start_ts <= self.until_ts))


def encode_entry(e: GroundingEvent) -> dict[str, str]:
    """An event as its stream entry: the event JSON, plus the fields readers filter and find it by."""
    return {"event": e.to_json(), "camera": e.camera_id, "query": e.query_id, "type": e.type.value, "event_id": e.event_id}


def entry_event_id(fields: dict) -> str:
    return text(fields.get(b"event_id") or fields.get("event_id") or "")


def decode_entry(fields: dict) -> GroundingEvent | None:
    """The event of a stream entry; None (logged) for an entry no reader can use."""
    raw = fields.get(b"event") or fields.get("event")
    try:
        return GroundingEvent.from_dict(json.loads(raw))
    except (ValueError, KeyError, TypeError) as exc:
        log.error("unreadable event entry: %s", exc)
        return None


class EventFeed:
    def __init__(self, client: redis.Redis, keys: Keys, cluster: bool | None = None) -> None:
        self.client = require_client(client, "EventFeed")
        self.keys = keys
        # on Cluster the shards live on different nodes: no multi-stream XREAD
        self.cluster = cluster if cluster is not None else type(client).__name__ == "RedisCluster"

    def _shards(self, flt: EventFilter | None) -> list[int]:
        if flt is not None and flt.camera is not None:
            return [self.keys.shard_of(flt.camera)]
        return list(self.keys.all_shards())

    # ---- positions -----------------------------------------------------------------------
    def end_cursor(self) -> Cursor:
        """The current end of every shard: following from here yields only new events."""
        ids = []
        for s in self.keys.all_shards():
            last = self.client.xrevrange(self.keys.events(s), count=1)
            ids.append(text(last[0][0]) if last else START)
        return Cursor(tuple(ids))

    def parse_since(self, since: str | float | None) -> Cursor:
        """'$' or None (only new), '0' (everything), Unix seconds, or an encoded cursor."""
        if since is None or since == "$":
            return self.end_cursor()
        s = str(since)
        if isinstance(since, (int, float)):
            seconds = float(since)
        elif s == "0":
            return Cursor.start(self.keys.shards)
        elif "-" in s:
            return Cursor.decode(s, self.keys.shards)
        else:
            try:
                seconds = float(s)
            except ValueError:
                raise CursorError(f"since must be a cursor, Unix seconds, '0' or '$', got {s[:50]!r}") from None
        if not 0 <= seconds <= MAX_UNIX_S:  # nan and inf too
            raise CursorError(f"since in Unix seconds must be in [0, {MAX_UNIX_S:g}], got {s[:50]!r}")
        return Cursor.at_time(self.keys.shards, seconds)

    # ---- forward ---------------------------------------------------------------------------
    def read(self, cursor: Cursor, count: int = 100, block_ms: int = 0,
             flt: EventFilter | None = None) -> tuple[list[FeedEntry], Cursor]:
        """Entries after `cursor` (waiting up to `block_ms` for the first), and the cursor after the last read.

        Entries that the filter rejects still move the cursor, so a resumed reader never sees them again."""
        shards = self._shards(flt)
        streams = {self.keys.events(s): cursor.ids[s] for s in shards}
        if self.cluster or len(shards) == 1:
            res = []
            for name, pos in streams.items():
                res += self.client.xread({name: pos}, count=count) or []
            if not res and block_ms:
                if len(shards) == 1:
                    res = self.client.xread(streams, count=count, block=block_ms) or []
                else:
                    time.sleep(min(block_ms, 100) / 1000.0)  # shards on several nodes: poll
        else:
            res = self.client.xread(streams, count=count, block=block_ms or None) or []
        by_name = {self.keys.events(s): s for s in shards}
        merged = sorted(((_key(text(i)), by_name[text(name)], text(i), f) for name, entries in res for i, f in entries),
                        key=lambda t: (t[0], t[1]))
        out = []
        for _, shard, entry_id, fields in merged:
            cursor = cursor.moved(shard, entry_id)
            event = decode_entry(fields)
            if event is not None and (flt is None or flt.matches(event)):
                out.append(FeedEntry(shard, entry_id, cursor.encode(), event))
        return out, cursor

    def follow(self, cursor: Cursor, flt: EventFilter | None = None, block_ms: int = 1000,
               stop_when_idle: bool = False) -> Iterator[FeedEntry]:
        """Entries after `cursor`, then live ones as they are written (until the caller stops iterating)."""
        while True:
            entries, cursor = self.read(cursor, block_ms=block_ms, flt=flt)
            if not entries and stop_when_idle:
                return
            yield from entries

    # ---- backward ------------------------------------------------------------------------
    def page(self, before: Cursor | None = None, limit: int = 100,
             flt: EventFilter | None = None) -> tuple[list[FeedEntry], Cursor | None]:
        """Newest first: up to `limit` entries written before `before` (default: the end), and the cursor for
        the next (older) page, or None when the feed holds nothing older."""
        before = before or Cursor((END,) * self.keys.shards)
        shards = self._shards(flt)
        since_id = f"{max(0, int(flt.since_ts * 1000) - 3_600_000)}-0" if flt and flt.since_ts else "-"  # events end <= 1 h after written

        def newest_first(shard: int) -> Iterator[tuple[tuple[int, int], int, str, dict]]:
            upper = before.ids[shard]
            if upper == START:
                return
            while True:
                hi = "+" if upper == END else f"({upper}"
                batch = self.client.xrevrange(self.keys.events(shard), hi, since_id, count=max(limit, 50))
                for i, f in batch:
                    upper = text(i)
                    yield _key(upper), shard, upper, f
                if len(batch) < max(limit, 50):
                    return

        merged = heapq.merge(*(newest_first(s) for s in shards), key=lambda t: (t[0], t[1]), reverse=True)
        out: list[FeedEntry] = []
        cursor = before
        exhausted = True
        for _, shard, entry_id, fields in merged:
            if len(out) >= limit:
                exhausted = False
                break
            cursor = cursor.moved(shard, entry_id)
            event = decode_entry(fields)
            if event is not None and (flt is None or flt.matches(event)):
                out.append(FeedEntry(shard, entry_id, cursor.encode(), event))
        return out, (None if exhausted else cursor)

    def event(self, event_id: str, skew_ms: int = 60_000) -> GroundingEvent | None:
        """The latest version of one event (its last new/update/end), while the feed still holds it.

        The event store keeps, per event id, the time its latest version was written; the entry is found in the
        shard's stream within `skew_ms` of it (the writer's clock and Redis's may differ a little)."""
        for s in self.keys.all_shards():
            raw = self.client.get(self.keys.event_record(s, event_id))
            if raw is None:
                continue
            at = int(text(raw))
            latest = None
            for _, fields in self.client.xrange(self.keys.events(s), f"{max(0, at - skew_ms)}-0", f"{at + skew_ms}-{MAX_SEQ}"):
                if entry_event_id(fields) == event_id:
                    latest = fields
            return decode_entry(latest) if latest is not None else None
        return None


class FeedFollower:
    """One way for a role to follow the feed (media, webhooks, SSE, any new publisher).

    With `cursor_key`, the position lives in Redis: it is read from there once (so a restarted follower resumes
    exactly; `reload()` reads it again, for a follower another may have moved on meanwhile, e.g. when the webhook
    lock changes hands), and `commit()` stores it after the work on an entry (or a batch) is done: at least once,
    nothing skipped. Without a key (SSE: the client keeps its position as the `Last-Event-ID`), the position is this
    object's. `start_at` gives the first position when none is stored (`store_start`: keep it, so a follower that
    starts "from now" does not drift while idle)."""

    def __init__(self, feed: EventFeed, cursor_key: str | None = None, start: Cursor | None = None,
                 start_at: Callable[[EventFeed], Cursor] | None = None, store_start: bool = False,
                 flt: EventFilter | None = None, count: int = 100) -> None:
        self.feed = feed
        self.cursor_key = cursor_key
        self.start_at = start_at or (lambda f: f.end_cursor())
        self.store_start = store_start
        self.flt = flt
        self.count = count
        self.cursor: Cursor | None = start
        self.read_to: Cursor | None = None
        self._loaded = cursor_key is None  # a stored position is read on first use

    def reload(self) -> None:
        """Read the stored position again before the next read."""
        self._loaded = self.cursor_key is None

    def _stored(self) -> Cursor | None:
        raw = self.feed.client.get(self.cursor_key)
        if raw:
            try:
                return Cursor.decode(text(raw), self.feed.keys.shards)
            except CursorError as exc:
                log.warning("stored feed cursor %s ignored: %s", self.cursor_key, exc)
        return None

    def position(self) -> Cursor:
        """Where the next read starts: the stored cursor (when kept in Redis, read once), else this follower's own."""
        if not self._loaded:
            self.cursor = self._stored() or self.cursor
            self._loaded = True
        if self.cursor is None:
            self.cursor = self.start_at(self.feed)
            if self.cursor_key is not None and self.store_start:
                self.feed.client.set(self.cursor_key, self.cursor.encode())
        return self.cursor

    def read(self, block_ms: int = 1000) -> list[FeedEntry]:
        """The entries after the position (waiting up to `block_ms` for the first); the position moves on commit."""
        entries, self.read_to = self.feed.read(self.position(), count=self.count, block_ms=block_ms, flt=self.flt)
        return entries

    def commit(self, entry: FeedEntry | None = None) -> None:
        """Done up to `entry` (default: everything the last read covered, filtered-out entries included)."""
        cursor = Cursor.decode(entry.cursor, self.feed.keys.shards) if entry is not None else self.read_to
        if cursor is None or cursor == self.cursor:  # nothing moved (an idle read): nothing to store
            return
        self.cursor = cursor
        if self.cursor_key is not None:
            self.feed.client.set(self.cursor_key, cursor.encode())
