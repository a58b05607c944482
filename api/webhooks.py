"""Webhook delivery: every event of a query that names sinks is POSTed to each, signed, retried.

One dispatcher per deployment delivers (a Redis lock, `Keys.webhook_lock`, renewed while it runs;
another API process takes over when it lapses). It follows the durable event feed from a cursor
kept in Redis (`Keys.webhook_cursor`) and moves the cursor only after an event was delivered to all
its sinks or given up on, so a restart re-sends rather than loses: **at least once**. Receivers
deduplicate on `X-SVL-Delivery` (unique per feed message; one event id has several messages:
new, update, end), or on (`event_id`, `type`, `end_ts`) from the body.

A request: `POST <url>`, body = the event JSON (schema v1), headers
  X-SVL-Event-Id, X-SVL-Event-Type, X-SVL-Delivery, X-SVL-Timestamp (Unix seconds),
  X-SVL-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>.
2xx is success; connection errors, timeouts, 408, 429 and 5xx are retried with exponential backoff
(`api.webhook_backoff_s` doubled per attempt, jittered, capped at 30 s) up to `api.webhook_max_attempts`;
other 4xx are not retried. A delivery given up on goes to `Keys.webhook_dead` (a capped stream) and
`svl_webhook_deliveries_total{result="gave_up"}`. Sinks of one event are delivered concurrently;
events are delivered in feed order (a failing sink delays later events by its retries, at most
about a minute with the defaults). Logs name a sink by its origin only (webhook paths are often secrets).
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import redis

from engine.contracts.feed import EventFeed, FeedEntry, FeedFollower
from engine.contracts.queries import QueryRegistry, StandingQuery, Webhook
from engine.contracts.settings import ApiSettings
from engine.contracts.telemetry import RedisCounters, field_name
from stream.keys import Keys
from stream.redis_link import backoff_delay
from stream.role import Heartbeat, RoleLoop, require_client
from stream.urls import url_origin

log = logging.getLogger(__name__)

LOCK_TTL_MS = 15_000
DEAD_MAXLEN = 10_000
RETRY_STATUS = {408, 425, 429}
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The X-SVL-Signature value; receivers recompute it and compare in constant time."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class WebhookDispatcher:
    def __init__(self, client: redis.Redis, keys: Keys, settings: ApiSettings | None = None,
                 stop: threading.Event | None = None) -> None:
        self.client = require_client(client, "WebhookDispatcher")
        self.keys = keys
        self.settings = settings or ApiSettings()
        self.stop_event = stop or threading.Event()
        # from now on at the first start, not the whole history; then exactly from where delivery stopped
        self.follower = FeedFollower(EventFeed(client, keys), keys.webhook_cursor(), store_start=True, count=50)
        self.registry = QueryRegistry(client, keys)
        self.counters = RedisCounters(client, keys.telemetry("webhooks"))
        self.owner = uuid.uuid4().hex
        self._queries: dict[str, StandingQuery] = {}  # kept after removal: a removed query's `end` still goes out
        self._queries_at = 0.0
        self._holding = False
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="webhook")
        self._rng = random.Random()

    # ---- leadership --------------------------------------------------------------------
    def _hold_lock(self) -> bool:
        if self._holding and self.client.eval(_RENEW, 1, self.keys.webhook_lock(), self.owner, LOCK_TTL_MS):
            return True
        self._holding = bool(self.client.set(self.keys.webhook_lock(), self.owner, nx=True, px=LOCK_TTL_MS))
        if self._holding:
            log.info("webhook dispatcher %s delivering", self.owner[:8])
        return self._holding

    # ---- the loop ----------------------------------------------------------------------
    def run(self, block_ms: int = 1000) -> None:
        beats = Heartbeat(self.client, self.keys, "webhooks", self.owner[:12], 2.0)
        RoleLoop("webhook dispatcher", self.stop_event, beats).run(
            lambda: self._turn(block_ms), stats=lambda: {"delivering": self._holding}, teardown=self.teardown,
            on_outage=self._lost_redis)

    def _turn(self, block_ms: int) -> bool:
        if not self._hold_lock():
            self.stop_event.wait(LOCK_TTL_MS / 3000)
            return False
        return self.step(block_ms) > 0

    def _lost_redis(self) -> None:
        self._holding = False

    def teardown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._holding:
            try:
                self.client.eval("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0",
                                 1, self.keys.webhook_lock(), self.owner)
            except redis.RedisError:
                pass

    def _refresh_queries(self) -> None:
        if time.monotonic() - self._queries_at >= 1.0:
            self._queries.update({q.id: q for q in self.registry.all()})
            self._queries_at = time.monotonic()

    def step(self, block_ms: int = 1000) -> int:
        """Deliver what the feed holds after the stored cursor (waiting up to `block_ms`); returns messages handled."""
        entries = self.follower.read(block_ms)
        if entries:
            self._queries_at = 0.0  # a query may have been added just before its first event
        for entry in entries:
            if self.stop_event.is_set():
                return 0
            self._refresh_queries()
            q = self._queries.get(entry.event.query_id)
            if q is not None and q.webhooks:
                list(self._pool.map(lambda w: self.deliver(w, entry, q), q.webhooks))
                if self.stop_event.is_set():  # retries interrupted: keep the cursor before this event
                    return 0
            self.follower.commit(entry)
        if not entries:
            self.follower.commit()
        return len(entries)

    # ---- one delivery ------------------------------------------------------------------
    def deliver(self, hook: Webhook, entry: FeedEntry, query: StandingQuery) -> bool:
        body = entry.event.to_json().encode()
        error = ""
        for attempt in range(self.settings.webhook_max_attempts):
            if attempt:
                self.stop_event.wait(backoff_delay(attempt - 1, self.settings.webhook_backoff_s, 30.0, self._rng))
                if self.stop_event.is_set():
                    return False  # the cursor stays before this event: delivered again after restart
            ts = str(int(time.time()))
            req = urllib.request.Request(hook.url, data=body, method="POST", headers={
                "Content-Type": "application/json", "User-Agent": "spacevllm-webhooks/1",
                "X-SVL-Event-Id": entry.event.event_id, "X-SVL-Event-Type": entry.event.type.value,
                "X-SVL-Delivery": entry.position, "X-SVL-Timestamp": ts,
                "X-SVL-Signature": signature(hook.secret, ts, body)})
            retry = True
            try:
                with urllib.request.urlopen(req, timeout=self.settings.webhook_timeout_s) as resp:
                    resp.read(1024)
                self.counters.update({field_name("svl_webhook_deliveries_total", {"result": "delivered"}): 1})
                return True
            except urllib.error.HTTPError as exc:
                error = f"HTTP {exc.code}"
                retry = exc.code >= 500 or exc.code in RETRY_STATUS
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                error = type(exc).__name__ + (f": {exc.reason}" if isinstance(exc, urllib.error.URLError) else "")
            self.counters.update({"svl_webhook_attempt_failures_total": 1})
            log.warning("webhook %s for query %s, event %s: attempt %d failed (%s)", url_origin(hook.url), query.id,
                        entry.event.event_id, attempt + 1, error)
            if not retry:
                break
        log.error("webhook %s for query %s: gave up on event %s (%s)", url_origin(hook.url), query.id, entry.event.event_id, error)
        self.counters.update({field_name("svl_webhook_deliveries_total", {"result": "gave_up"}): 1})
        try:
            self.client.xadd(self.keys.webhook_dead(), {"query": query.id, "origin": url_origin(hook.url),
                                                        "event_id": entry.event.event_id, "delivery": entry.position,
                                                        "error": error, "event": body.decode()},
                             maxlen=DEAD_MAXLEN, approximate=True)
        except redis.RedisError as exc:
            log.warning("webhook dead letter not written: %s", exc)
        return False
