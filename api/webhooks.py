"""Webhook delivery: every event of a query that names sinks is POSTed to each, signed, retried.

A request: `POST <url>`, body = the event JSON (schema v1), headers
  X-SVL-Event-Id, X-SVL-Event-Type, X-SVL-Delivery, X-SVL-Timestamp (Unix seconds),
  X-SVL-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>.
Receivers deduplicate on `X-SVL-Delivery` (unique per feed message; one event id has several messages:
new, update, end), or on (`event_id`, `type`, `end_ts`) from the body.

The delivery model. One dispatcher per deployment delivers (a Redis lock, `Keys.webhook_lock`, renewed and
released by WATCH/MULTI check-and-set, no scripting; another API process takes over when it lapses). It
follows the durable event feed from a cursor kept in Redis (`Keys.webhook_cursor`) and, per event, appends
one job per sink of the event's query to that sink's queue (`Keys.webhook_queue`; a sink is one (query, URL)
pair); the cursor moves once the jobs are queued. A bounded pool of workers (`api.webhook_workers`) delivers
the head job of each queue: a sink gets its events in feed order, one at a time, and a slow, failing or
hostile sink delays only itself. A job leaves its queue only once its outcome is final (delivered, given up,
dropped), so a restart re-sends rather than loses: **at least once**.

2xx is success. Connection errors, timeouts, 408, 425, 429, 5xx and anything else an attempt raises (a port
that does not speak HTTP, TLS errors, a closed connection) are retried: the sink backs off
(`api.webhook_backoff_s` doubled per attempt, jittered, capped at 30 s; its queue waits, other sinks do not)
up to `api.webhook_max_attempts`. Other 4xx, 3xx (redirects are never followed), a URL that cannot be parsed
and a host the policy refuses are not retried. A delivery given up on goes to `Keys.webhook_dead` (a capped
stream) and `svl_webhook_deliveries_total{result="gave_up"}`.

Limits: a queue holds at most `api.webhook_queue_max` jobs (beyond, the oldest are dropped, logged once per
burst). Jobs of a removed query, or of a URL its query no longer has, are dropped, except the `end` of events
that were open when it was removed (while this process remembers the sink). Dropped jobs count as
`svl_webhook_deliveries_total{result="dropped"}`.

Host policy (`HostPolicy`): the URL is checked when the query is registered (`parse_sink_url`), and at
connect time every address the host resolves to is checked (the deny list of
`engine.contracts.queries.denied_address`, this service's own ports on loopback, `api.webhook_allow_hosts`);
the connection goes to a checked address, so DNS cannot change the answer in between.
Logs name a sink by its origin only (webhook paths are often secrets).
"""
from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import random
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import redis

from engine.contracts.events import EventType
from engine.contracts.feed import EventFeed, FeedEntry, FeedFollower
from engine.contracts.queries import QueryRegistry, SinkUrl, Webhook, denied_address, parse_sink_url
from engine.contracts.settings import ApiSettings
from engine.contracts.telemetry import RedisCounters, field_name
from stream.keys import Keys
from stream.redis_link import backoff_delay, text
from stream.role import Heartbeat, RoleLoop, isolate, require_client
from stream.urls import url_origin

log = logging.getLogger(__name__)

LOCK_TTL_MS = 15_000
DEAD_MAXLEN = 10_000
RETRY_STATUS = {408, 425, 429}
MAX_BACKOFF_S = 30.0
SLICE = 50  # deliveries to one sink before its worker goes back to the pool (fair to the other sinks)
RETIRED_S = 600.0  # how long a removed sink is remembered, so that the `end` of its open events still goes out
INDEX_EVERY_S = 5.0  # how often the sink index is read back (it finds queues this process did not fill)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The X-SVL-Signature value; receivers recompute it and compare in constant time."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def sink_id(query_id: str, url: str) -> str:
    """A sink's stable id: a short hash of its query id and URL (a key part, where the URL, maybe secret, is not)."""
    return hashlib.sha256(f"{query_id}\n{url}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Sink:
    id: str
    query_id: str
    hook: Webhook = field(repr=False)  # its URL and secret stay out of any repr

    @property
    def origin(self) -> str:
        return url_origin(self.hook.url)


def redis_ports(client) -> set[int]:
    """The TCP ports `client` reaches Redis on (every node of a Cluster): sinks may not post to them on loopback."""
    try:
        if hasattr(client, "get_nodes"):
            return {int(n.port) for n in client.get_nodes()}
        port = client.connection_pool.connection_kwargs.get("port")
        return {int(port)} if port else set()
    except (AttributeError, TypeError, ValueError):
        return set()


# ---- one attempt ---------------------------------------------------------------------------
class Refused(Exception):
    """The host policy refuses the sink's address: not retried."""


class HostPolicy:
    """Where sinks may connect: no denied address (`denied_address`), not this service's own ports on loopback,
    and, when `allow` names hosts or networks, only those."""

    def __init__(self, allow: Iterable[str] = (), own_ports: Iterable[int] = ()) -> None:
        self.networks, self.names = [], set()
        for a in allow:
            try:
                self.networks.append(ipaddress.ip_network(a, strict=False))
            except ValueError:
                self.names.add(a.lower().rstrip("."))
        self.own_ports = frozenset(p for p in own_ports if p)

    def refusal(self, url: SinkUrl, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        """Why `url` may not connect to `address` (None: it may)."""
        why = denied_address(address)
        if why:
            return why
        plain = (address.ipv4_mapped or address) if isinstance(address, ipaddress.IPv6Address) else address
        if plain.is_loopback and url.port in self.own_ports:
            return "this service's own port"
        if (self.networks or self.names) and url.host not in self.names and not any(plain in n for n in self.networks):
            return "not in api.webhook_allow_hosts"
        return None

    def connect(self, url: SinkUrl, timeout_s: float) -> socket.socket:
        """Resolve, check every address, then connect to a checked one (never resolving again)."""
        infos = socket.getaddrinfo(url.host, url.port, type=socket.SOCK_STREAM)
        for *_, sockaddr in infos:
            why = self.refusal(url, ipaddress.ip_address(sockaddr[0].split("%")[0]))
            if why:
                raise Refused(f"host not allowed: {sockaddr[0]} ({why})")
        error: OSError = OSError(f"{url.host} resolved to no address")
        for family, kind, proto, _, sockaddr in infos:
            sock = socket.socket(family, kind, proto)
            sock.settimeout(timeout_s)
            try:
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        raise error


class _CheckedConnection(http.client.HTTPConnection):
    """http.client over a socket the host policy connected (TLS verified against the URL's host name)."""

    def __init__(self, url: SinkUrl, policy: HostPolicy, timeout_s: float, tls: ssl.SSLContext) -> None:
        super().__init__(url.host, url.port, timeout=timeout_s)
        self.url, self.policy, self.tls = url, policy, tls
        if url.scheme == "https":
            self.default_port = 443  # the Host header carries the port only when it is not the scheme's

    def connect(self) -> None:
        sock = self.policy.connect(self.url, self.timeout)
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.url.host) if self.url.scheme == "https" else sock


@dataclass(frozen=True)
class Outcome:
    """One attempt: delivered (`ok`), or failed with `error` (no path, no secret), retried or final."""

    ok: bool
    retry: bool = False
    error: str = ""


def send(url: str, headers: dict[str, str], body: bytes, policy: HostPolicy, timeout_s: float,
         tls: ssl.SSLContext) -> Outcome:
    """POST `body` once; never raises: whatever goes wrong is the sink's failure, not the dispatcher's."""
    try:
        sink = parse_sink_url(url)
    except ValueError as exc:
        return Outcome(False, False, f"invalid URL: {exc}")
    conn = _CheckedConnection(sink, policy, timeout_s, tls)
    try:
        conn.request("POST", sink.target, body=body, headers=headers)
        resp = conn.getresponse()
        status, location = resp.status, resp.getheader("Location") or ""
    except Refused as exc:
        return Outcome(False, False, str(exc))
    except Exception as exc:  # BadStatusLine, InvalidURL, ssl errors, resets, timeouts, whatever comes next
        detail = str(exc).replace(url, url_origin(url))
        if sink.target != "/":
            detail = detail.replace(sink.target, "/...")
        detail = " ".join(detail.split())[:160]  # a remote's garbage on one line
        return Outcome(False, True, type(exc).__name__ + (f": {detail}" if detail else ""))
    finally:
        conn.close()
    if 200 <= status < 300:
        return Outcome(True)
    if 300 <= status < 400:
        where = url_origin(location) if "://" in location else url_origin(url)  # relative: the sink's own origin
        return Outcome(False, False, f"HTTP {status}: redirect not followed (Location: {where})")
    return Outcome(False, status >= 500 or status in RETRY_STATUS, f"HTTP {status}")


# ---- the dispatcher -----------------------------------------------------------------------------
class _SinkState:
    """What this process knows of one sink's queue (the queue itself lives in Redis)."""

    def __init__(self) -> None:
        self.busy = False  # handed to a worker
        self.idle = False  # its queue was empty when last looked at
        self.ready_at = 0.0  # monotonic; before it, the sink backs off
        self.head: bytes | None = None  # the job that `attempts` counts for
        self.attempts = 0
        self.overflow = 0  # jobs dropped in the current overflow burst
        self._queued = 0
        self._lock = threading.Lock()

    def queued(self) -> None:
        with self._lock:
            self._queued += 1
            self.idle = False

    def seen(self) -> int:
        return self._queued

    def emptied(self, seen: int) -> None:
        """The queue was found empty by a worker that started looking when `seen` jobs had been queued."""
        with self._lock:
            if self._queued == seen:  # nothing queued meanwhile: safe to stop looking until the next job
                self.idle = True


class WebhookDispatcher:
    def __init__(self, client: redis.Redis, keys: Keys, settings: ApiSettings | None = None,
                 stop: threading.Event | None = None, own_ports: Iterable[int] = ()) -> None:
        """`own_ports`: this service's ports (the API's, the Redis's), refused to sinks on loopback."""
        self.client = require_client(client, "WebhookDispatcher")
        self.keys = keys
        self.settings = settings or ApiSettings()
        self.stop_event = stop or threading.Event()
        # from now on at the first start, not the whole history; then exactly from where queuing stopped
        self.follower = FeedFollower(EventFeed(client, keys), keys.webhook_cursor(), store_start=True, count=50)
        self.registry = QueryRegistry(client, keys)
        self.counters = RedisCounters(client, keys.telemetry("webhooks"))
        self.policy = HostPolicy(self.settings.webhook_allow_hosts, own_ports)
        self.owner = uuid.uuid4().hex
        self._holding = False
        self._closed = False
        self._sinks: dict[str, Sink] = {}
        self._by_query: dict[str, list[Sink]] = {}
        self._retired: dict[str, tuple[Sink, float]] = {}  # removed sinks, with when they went
        self._sinks_at = float("-inf")
        self._states: dict[str, _SinkState] = {}
        self._indexed_at = float("-inf")
        self._pool = ThreadPoolExecutor(max_workers=self.settings.webhook_workers, thread_name_prefix="webhook")
        self._tls = ssl.create_default_context()
        self._rng = random.Random()

    # ---- leadership --------------------------------------------------------------------
    def _hold_lock(self) -> bool:
        key = self.keys.webhook_lock()
        if self._holding and self._while_owner(lambda pipe: pipe.pexpire(key, LOCK_TTL_MS)):
            return True
        self._holding = bool(self.client.set(key, self.owner, nx=True, px=LOCK_TTL_MS))
        if self._holding:
            self.follower.reload()  # another dispatcher may have moved the cursor while this one did not deliver
            log.info("webhook dispatcher %s delivering", self.owner[:8])
        return self._holding

    def _while_owner(self, write) -> bool:
        """Check-and-set on the lock without scripting: `write(pipe)` is applied only if the lock is still ours."""
        key = self.keys.webhook_lock()
        with self.client.pipeline() as pipe:
            try:
                pipe.watch(key)
                if text(pipe.get(key) or b"") != self.owner:
                    pipe.unwatch()
                    return False
                pipe.multi()
                write(pipe)
                pipe.execute()
                return True
            except redis.WatchError:  # changed in between: someone else holds it now
                return False

    # ---- the loop ----------------------------------------------------------------------
    def run(self, block_ms: int = 1000) -> None:
        beats = Heartbeat(self.client, self.keys, "webhooks", self.owner[:12], 2.0)
        RoleLoop("webhook dispatcher", self.stop_event, beats).run(
            lambda: self._turn(block_ms), stats=self._stats, teardown=self.teardown, on_outage=self._lost_redis)

    def _stats(self) -> dict:
        now = time.monotonic()
        return {"delivering": self._holding, "sinks_backing_off": sum(s.ready_at > now for s in self._states.values())}

    def _turn(self, block_ms: int) -> bool:
        if not self._hold_lock():
            self.stop_event.wait(LOCK_TTL_MS / 3000)
            return False
        return self.step(block_ms) > 0

    def _lost_redis(self) -> None:
        self._holding = False

    def teardown(self) -> None:
        self._closed = True  # workers stop after their attempt in flight (bounded by webhook_timeout_s)
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._holding:
            try:
                self._while_owner(lambda pipe: pipe.delete(self.keys.webhook_lock()))
            except redis.RedisError:
                pass
            self._holding = False

    def step(self, block_ms: int = 1000) -> int:
        """Queue a job per sink for what the feed holds after the stored cursor (waiting up to `block_ms`, less
        while sinks have work), then hand the sinks that are due to the workers; returns feed messages handled."""
        entries = self.follower.read(self._wait_ms(block_ms))
        self._refresh_sinks(force=bool(entries))  # a query may have been added just before its first event
        for entry in entries:
            if self.stop_event.is_set():
                return 0
            isolate(f"webhook jobs of event {entry.event.event_id}", "enqueue", lambda: self._enqueue(entry))
            self.follower.commit(entry)
        if not entries:
            self.follower.commit()
        self.pump()
        return len(entries)

    def _wait_ms(self, block_ms: int) -> int:
        """How long the feed read may block: not past the end of a backoff, nor long while workers deliver."""
        now = time.monotonic()
        waits = [0.1 if s.busy else s.ready_at - now for s in self._states.values() if s.busy or not s.idle]
        return block_ms if not waits else max(1, min(block_ms, int(min(waits) * 1000)))

    # ---- sinks ---------------------------------------------------------------------------
    def _refresh_sinks(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._sinks_at < 1.0:
            return
        sinks = {}
        for q in self.registry.all():
            for w in q.webhooks:
                s = Sink(sink_id(q.id, w.url), q.id, w)
                sinks[s.id] = s
        gone = {sid: (s, now) for sid, s in self._sinks.items() if sid not in sinks}
        for sid in gone.keys() & self._states.keys():
            self._states[sid].ready_at = 0.0  # its backlog is dropped now, not after the backoff
        retired = {**self._retired, **gone}
        self._retired = {sid: (s, at) for sid, (s, at) in retired.items() if sid not in sinks and now - at < RETIRED_S}
        by_query: dict[str, list[Sink]] = {}
        for s in sinks.values():
            by_query.setdefault(s.query_id, []).append(s)
        self._sinks, self._by_query, self._sinks_at = sinks, by_query, now

    def _target(self, sid: str, job: dict) -> Sink | None:
        """Where a job goes: its sink while its query has it; a removed sink only for the `end` of an event."""
        if sid in self._sinks:
            return self._sinks[sid]
        retired = self._retired.get(sid)
        return retired[0] if retired is not None and job.get("type") == EventType.END.value else None

    def _state(self, sid: str) -> _SinkState:
        return self._states.setdefault(sid, _SinkState())

    def _count(self, result: str, n: int = 1) -> None:
        self.counters.update({field_name("svl_webhook_deliveries_total", {"result": result}): n})

    # ---- feed -> queues ----------------------------------------------------------------------
    def _enqueue(self, entry: FeedEntry) -> None:
        e = entry.event
        sinks = list(self._by_query.get(e.query_id, ()))
        if e.type is EventType.END:
            sinks += [s for s, _ in self._retired.values() if s.query_id == e.query_id]
        if not sinks:
            return
        job = json.dumps({"delivery": entry.position, "query": e.query_id, "event_id": e.event_id, "type": e.type.value,
                          "event": e.to_json()})
        pipe = self.client.pipeline(transaction=False)  # single-key commands: each may go to its own Cluster node
        for s in sinks:
            pipe.sadd(self.keys.webhook_sinks(), s.id)
            pipe.rpush(self.keys.webhook_queue(s.id), job)
        lengths = pipe.execute()[1::2]
        for s, length in zip(sinks, lengths):
            state = self._state(s.id)
            state.queued()
            self._bound(s, state, length)

    def _bound(self, sink: Sink, state: _SinkState, length: int) -> None:
        """Keep the sink's queue within `webhook_queue_max`: the oldest jobs go (counted, logged once per burst)."""
        limit = self.settings.webhook_queue_max
        if length <= limit:
            if state.overflow:
                log.warning("webhook %s for query %s: queue below its limit again; %d oldest jobs were dropped",
                            sink.origin, sink.query_id, state.overflow)
                state.overflow = 0
            return
        self.client.ltrim(self.keys.webhook_queue(sink.id), -limit, -1)
        self._count("dropped", length - limit)
        if not state.overflow:
            log.warning("webhook %s for query %s: queue full (%d jobs, api.webhook_queue_max), dropping the oldest",
                        sink.origin, sink.query_id, limit)
        state.overflow += length - limit

    # ---- queues -> sinks ---------------------------------------------------------------------
    def pump(self) -> None:
        """Hand every sink with queued jobs to a worker, unless a worker has it or it backs off (a sink that is no
        longer wanted is handed over even then: its jobs are dropped at once)."""
        now = time.monotonic()
        if now - self._indexed_at >= INDEX_EVERY_S:  # queues a previous dispatcher filled
            for raw in self.client.smembers(self.keys.webhook_sinks()):
                self._state(text(raw))
            self._indexed_at = now
        for sid, state in list(self._states.items()):
            wanted = sid in self._sinks or sid in self._retired
            if state.idle and not state.busy and not wanted:
                del self._states[sid]  # emptied and out of the index: nothing more will come
                continue
            if state.busy or state.idle or (state.ready_at > now and wanted):
                continue
            state.busy = True
            self._pool.submit(self._drain, sid, state)

    def _drain(self, sid: str, state: _SinkState) -> None:
        """A worker: deliver the head jobs of one sink's queue until it is empty, a delivery fails (the sink backs
        off), or the sink had its share."""
        key = self.keys.webhook_queue(sid)
        attempted = dropped = 0
        try:
            while attempted < SLICE and self._holding and not self._closed and not self.stop_event.is_set():
                seen = state.seen()
                raw = self.client.lindex(key, 0)
                if raw is None:
                    state.emptied(seen)
                    if sid not in self._sinks and sid not in self._retired:
                        self.client.srem(self.keys.webhook_sinks(), sid)
                    return
                if raw != state.head:
                    state.head, state.attempts = raw, 0
                job = _job(raw)
                sink = self._target(sid, job) if job is not None else None
                if sink is None:
                    self._finish(key, raw, "dropped")
                    dropped += 1
                    continue
                attempted += 1
                if not self._attempt(sink, job, state, key, raw):
                    return
        except redis.RedisError as exc:
            log.warning("webhook sink %s: Redis error, retrying in a second: %s", sid, exc)
            state.ready_at = time.monotonic() + 1.0
        except Exception:  # a bug in here must not stop this sink for good, nor reach the pool
            log.exception("webhook sink %s: delivery failed unexpectedly; backing off", sid)
            state.ready_at = time.monotonic() + MAX_BACKOFF_S
        finally:
            if dropped:
                log.info("webhook sink %s: dropped %d queued jobs of a removed query or URL", sid, dropped)
            state.busy = False

    def _attempt(self, sink: Sink, job: dict, state: _SinkState, key: str, raw: bytes) -> bool:
        """One attempt at the head job; True when its outcome is final (the next job may follow)."""
        body = job["event"].encode()
        ts = str(int(time.time()))
        headers = {"Content-Type": "application/json", "User-Agent": "spacevllm-webhooks/1", "Connection": "close",
                   "X-SVL-Event-Id": job["event_id"], "X-SVL-Event-Type": job["type"],
                   "X-SVL-Delivery": job["delivery"], "X-SVL-Timestamp": ts,
                   "X-SVL-Signature": signature(sink.hook.secret, ts, body)}
        out = send(sink.hook.url, headers, body, self.policy, self.settings.webhook_timeout_s, self._tls)
        if out.ok:
            self._finish(key, raw, "delivered")
            return True
        state.attempts += 1
        self.counters.update({"svl_webhook_attempt_failures_total": 1})
        log.warning("webhook %s for query %s, event %s: attempt %d failed (%s)", sink.origin, sink.query_id,
                    job["event_id"], state.attempts, out.error)
        if out.retry and state.attempts < self.settings.webhook_max_attempts:
            state.ready_at = time.monotonic() + backoff_delay(state.attempts - 1, self.settings.webhook_backoff_s,
                                                              MAX_BACKOFF_S, self._rng)
            return False
        log.error("webhook %s for query %s: gave up on event %s (%s)", sink.origin, sink.query_id, job["event_id"],
                  out.error)
        try:
            self.client.xadd(self.keys.webhook_dead(), {"query": sink.query_id, "origin": sink.origin,
                                                        "event_id": job["event_id"], "delivery": job["delivery"],
                                                        "error": out.error, "event": job["event"]},
                             maxlen=DEAD_MAXLEN, approximate=True)
        except redis.RedisError as exc:
            log.warning("webhook dead letter not written: %s", exc)
        self._finish(key, raw, "gave_up")
        return True

    def _finish(self, key: str, raw: bytes, result: str) -> None:
        """The job's outcome is final: take it off its queue (wherever trimming left it) and count it."""
        self.client.lrem(key, 1, raw)
        self._count(result)


def _job(raw: bytes) -> dict | None:
    """A queued job, or None (logged) for one no worker can send."""
    try:
        job = json.loads(raw)
        if all(isinstance(job.get(k), str) for k in ("delivery", "event_id", "type", "event")):
            return job
    except (ValueError, AttributeError):
        pass
    log.error("unreadable webhook job dropped")
    return None
