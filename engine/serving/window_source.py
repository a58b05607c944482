"""Where the engine's windows come from: the shards' window streams, read in one consumer group.

- `next()` returns the deliveries to work on: this worker's retries that are due, entries a dead
  worker left pending (XAUTOCLAIM after `claim_idle_ms`), then new entries (XREADGROUP `>`). On a
  standalone Redis one XREADGROUP blocks on every shard's stream; on Cluster each shard is read on
  its own node.
- A delivery knows how many times Redis has delivered it (XPENDING's counter, which XCLAIM and
  XAUTOCLAIM raise). `fail()` schedules a retry; at `max_deliveries` the entry goes to its shard's
  dead-letter stream with the error text and is acknowledged, in one transaction (one slot).
- A processed window is acknowledged in the event store's transaction that writes its events
  (`ack_window`, the one place entries are acknowledged); `ack()` is for a window found already done.
"""
from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass

import redis

from stream.keys import Keys
from stream.redis_link import backoff_delay, text, text_fields
from stream.role import require_client

log = logging.getLogger(__name__)


def ack_window(client_or_pipe, keys: Keys, group: str, shard: int, *entry_ids: str) -> None:
    """The one place window entries are acknowledged: here, or inside the caller's transaction (the event store
    acknowledges a processed window in the MULTI that writes its events)."""
    client_or_pipe.xack(keys.windows(shard), group, *entry_ids)


@dataclass(frozen=True)
class Delivery:
    shard: int
    entry_id: str
    fields: dict
    deliveries: int  # times Redis has handed this entry to a consumer, this one included


@dataclass(frozen=True)
class DeadWindow:
    shard: int
    dead_id: str  # the id in the shard's dead-letter stream
    entry_id: str  # the window's id in its window stream
    window: dict  # the window entry's fields
    error: str
    deliveries: int
    failed_at: float

    @property
    def ref(self) -> str:
        """What `spacevllm windows dead retry|drop` takes."""
        return f"{self.shard}/{self.dead_id}"


class WindowSource:
    def __init__(self, client: redis.Redis, keys: Keys, group: str, consumer: str, block_ms: int = 1000,
                 claim_idle_ms: int = 30_000, max_deliveries: int = 3, retry_backoff_s: float = 1.0,
                 cluster: bool | None = None, batch: int = 1) -> None:
        self.client = require_client(client, "WindowSource")
        self.keys = keys
        self.group = group
        self.consumer = consumer
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.max_deliveries = max_deliveries
        self.retry_backoff_s = retry_backoff_s
        # new entries per shard per read: about `batch` windows over all shards, and at least 2 when batching, so
        # that a camera that is behind shows it (two of its windows in one read: the engine's admission skips the older)
        self.per_shard = max(2 if batch > 1 else 1, batch // keys.shards)
        self.cluster = cluster if cluster is not None else type(client).__name__ == "RedisCluster"
        self._retries: dict[tuple[int, str], float] = {}  # (shard, entry id) -> when to retry
        self._claim_shard = 0
        # an entry becomes claimable only after `claim_idle_ms` idle: looking more often than a quarter of that (at
        # most once a second) finds nothing new and would cost one XAUTOCLAIM per shard on every read
        self._claim_every_s = min(1.0, claim_idle_ms / 4000.0)
        self._claimed_at = float("-inf")
        self._streams = {keys.windows(s): ">" for s in keys.all_shards()}
        self._shard_of_stream = {keys.windows(s): s for s in keys.all_shards()}
        self._rng = random.Random()

    # ---- setup -------------------------------------------------------------------------
    def ensure_groups(self) -> None:
        for s in self.keys.all_shards():
            try:
                self.client.xgroup_create(self.keys.windows(s), self.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    # ---- reading -----------------------------------------------------------------------
    def next(self, block: bool = True) -> list[Delivery]:
        return self._due_retries() or self._claim_stale() or self._read_new(block)

    def _deliveries_of(self, shard: int, entry_id: str) -> int:
        info = self.client.xpending_range(self.keys.windows(shard), self.group, min=entry_id, max=entry_id, count=1)
        return int(info[0]["times_delivered"]) if info else 1

    def _due_retries(self) -> list[Delivery]:
        now = time.monotonic()
        due = [k for k, at in self._retries.items() if at <= now]
        for shard, entry_id in due[:1]:
            del self._retries[(shard, entry_id)]
            # XCLAIM to ourselves raises the delivery counter, so retries survive this worker's death
            res = self.client.xclaim(self.keys.windows(shard), self.group, self.consumer, min_idle_time=0,
                                     message_ids=[entry_id])
            got = [(i, f) for i, f in res if f]
            if not got:
                log.warning("window entry %s (shard %d) is gone (trimmed or acknowledged elsewhere)", entry_id, shard)
                ack_window(self.client, self.keys, self.group, shard, entry_id)
                continue
            return [Delivery(shard, entry_id, got[0][1], self._deliveries_of(shard, entry_id))]
        return []

    def _claim_stale(self) -> list[Delivery]:
        """Entries another (dead) worker held longer than `claim_idle_ms`, before any new entry (so a camera's windows
        stay in order as far as possible); every shard, starting from a rotating one, every `_claim_every_s`."""
        if time.monotonic() - self._claimed_at < self._claim_every_s:
            return []
        self._claimed_at = time.monotonic()
        for _ in range(self.keys.shards):
            shard = self._claim_shard
            self._claim_shard = (self._claim_shard + 1) % self.keys.shards
            stream = self.keys.windows(shard)
            res = self.client.xautoclaim(stream, self.group, self.consumer, min_idle_time=self.claim_idle_ms,
                                         start_id="0-0", count=1)
            entries = res[1]
            gone = [text(i) for i, f in entries if not f]
            if gone:  # trimmed from the stream while pending (Redis 6.2 returns them empty)
                log.warning("%d pending window entries of shard %d were trimmed before processing; acknowledging them",
                            len(gone), shard)
                ack_window(self.client, self.keys, self.group, shard, *gone)
            if len(res) > 2 and res[2]:  # Redis 7: ids it deleted from the PEL because the entries were trimmed
                log.warning("%d pending window entries of shard %d were trimmed before processing", len(res[2]), shard)
            live = [(text(i), f) for i, f in entries if f]
            if live:
                entry_id, fields = live[0]
                log.info("claimed stale window entry %s (shard %d)", entry_id, shard)
                self._claimed_at = float("-inf")  # there may be more: look again on the next read
                return [Delivery(shard, entry_id, fields, self._deliveries_of(shard, entry_id))]
        return []

    def _read_new(self, block: bool) -> list[Delivery]:
        if self.cluster and self.keys.shards > 1:
            start = self._rng.randrange(self.keys.shards)
            for k in range(self.keys.shards):  # each shard on its own node; no cross-slot command
                name = self.keys.windows((start + k) % self.keys.shards)
                res = self.client.xreadgroup(self.group, self.consumer, {name: ">"}, count=self.per_shard)
                if res:
                    break
            else:
                res = []
                if block:
                    time.sleep(min(self.block_ms, 100) / 1000.0)
        else:
            res = self.client.xreadgroup(self.group, self.consumer, self._streams, count=self.per_shard,
                                         block=self.block_ms if block else None) or []
        return [Delivery(self._shard_of_stream[text(name)], text(i), f, 1) for name, entries in res for i, f in entries if f]

    def drained(self, shard: int) -> bool:
        """Every window of the shard has been delivered and acknowledged (by any worker)."""
        stream = self.keys.windows(shard)
        groups = {text(g["name"]): g for g in self.client.xinfo_groups(stream)}
        g = groups.get(self.group)
        if g is None:
            return not self.client.xlen(stream)
        if int(g["pending"]):
            return False
        last = self.client.xinfo_stream(stream)["last-generated-id"]
        return text(g["last-delivered-id"]) == text(last)

    # ---- failures ----------------------------------------------------------------------
    def ack(self, d: Delivery) -> None:
        """Acknowledge a delivery whose window is already done (a re-delivery after its commit)."""
        ack_window(self.client, self.keys, self.group, d.shard, d.entry_id)

    def fail(self, d: Delivery, error: str) -> bool:
        """A delivery failed: retry it later, or dead-letter it after `max_deliveries`. True when dead-lettered."""
        if d.deliveries >= self.max_deliveries:
            self.dead_letter(d, error)
            return True
        delay = backoff_delay(d.deliveries - 1, self.retry_backoff_s, 30.0, self._rng)
        self._retries[(d.shard, d.entry_id)] = time.monotonic() + delay
        log.info("window entry %s will be retried in %.1f s (delivery %d of %d)", d.entry_id, delay, d.deliveries,
                 self.max_deliveries)
        return False

    def dead_letter(self, d: Delivery, error: str) -> None:
        fields = text_fields(d.fields)
        record = {"entry_id": d.entry_id, "window": json.dumps(fields), "error": error[:2000],
                  "deliveries": str(d.deliveries), "failed_at": f"{time.time():.3f}", "consumer": self.consumer}
        pipe = self.client.pipeline(transaction=True)  # same slot: the shard's tag
        pipe.xadd(self.keys.dead_windows(d.shard), record, maxlen=10_000, approximate=True)
        ack_window(pipe, self.keys, self.group, d.shard, d.entry_id)
        pipe.execute()
        self._retries.pop((d.shard, d.entry_id), None)
        log.error("window %s dead-lettered after %d deliveries: %s (spacevllm windows dead ls)",
                  fields.get("camera", "?") + ":" + fields.get("start_ms", "?"), d.deliveries, error)

    # ---- the dead-letter streams -------------------------------------------------------
    def dead(self) -> list[DeadWindow]:
        out = []
        for s in self.keys.all_shards():
            for dead_id, f in self.client.xrange(self.keys.dead_windows(s)):
                f = {text(k): text(v) for k, v in f.items()}
                out.append(DeadWindow(s, text(dead_id), f["entry_id"], json.loads(f["window"]), f["error"],
                                      int(f["deliveries"]), float(f["failed_at"])))
        return sorted(out, key=lambda d: d.failed_at)

    def _find(self, ref: str) -> tuple[int, str, dict]:
        shard_s, _, dead_id = ref.partition("/")
        try:
            shard = int(shard_s)
            got = self.client.xrange(self.keys.dead_windows(shard), dead_id, dead_id)
        except (ValueError, redis.ResponseError):
            raise KeyError(f"not a dead-letter reference: {ref!r} (use the SHARD/ID shown by `windows dead ls`)") from None
        if not got:
            raise KeyError(f"no dead-lettered window {ref!r}")
        return shard, dead_id, {text(k): text(v) for k, v in got[0][1].items()}

    def retry_dead(self, ref: str) -> str:
        """Put a dead-lettered window back on its window stream (as a new entry) and remove the dead letter."""
        shard, dead_id, f = self._find(ref)
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(self.keys.windows(shard), json.loads(f["window"]))
        pipe.xdel(self.keys.dead_windows(shard), dead_id)
        new_id, _ = pipe.execute()
        return text(new_id)

    def drop_dead(self, ref: str) -> None:
        shard, dead_id, _ = self._find(ref)
        self.client.xdel(self.keys.dead_windows(shard), dead_id)
