"""The kit every long-running role is built from (ingest, engine, media, webhooks, and whatever comes next).

A role is one loop of the same shape:

    until stopped:  one step (read -> handle each item -> store)      RoleLoop.run
                    a bad item is logged, counted and skipped          isolate()
                    Redis going away is waited out, logged once        RedisLink (stream/redis_link.py)
                    a heartbeat every `heartbeat_s`                    Heartbeat
    finally:        the role's teardown, the heartbeat removed

Heartbeats have one payload schema for every role (`Beat`): `svl:heartbeat:<role>:<id>` holds
`{"role", "id", "ts", ...the role's counters}` with a TTL of three periods, so a role that stops
beating disappears from `/readyz` and `svl_workers{role}` by itself.
"""
from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis

from stream.keys import Keys
from stream.redis_link import RedisLink

log = logging.getLogger(__name__)

T = TypeVar("T")


def require_client(client: Any, who: str) -> Any:
    """Roles and stores get their Redis client passed in (never a global); a missing one fails at construction."""
    if client is None:
        raise TypeError(f"{who} needs a Redis client")
    return client


def install_stop_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set `stop` (only the main thread can install handlers; elsewhere a no-op)."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())


@dataclass(frozen=True)
class Beat:
    """One heartbeat: which role, which worker, when, and the role's own counters (JSON values)."""

    role: str
    worker_id: str
    ts: float
    stats: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({**self.stats, "role": self.role, "id": self.worker_id, "ts": round(self.ts, 3)})

    @classmethod
    def from_json(cls, raw: str | bytes) -> "Beat":
        d = json.loads(raw)
        if not isinstance(d, dict):
            raise ValueError("a heartbeat is a JSON object")
        role, worker_id, ts = d.pop("role"), d.pop("id"), float(d.pop("ts"))
        return cls(str(role), str(worker_id), ts, d)


class Heartbeat:
    """Writes a role's `Beat` at most every `every_s` (TTL: three periods, plus a second)."""

    def __init__(self, client: redis.Redis, keys: Keys, role: str, worker_id: str, every_s: float,
                 now: Callable[[], float] = time.time) -> None:
        self.client = require_client(client, "Heartbeat")
        self.key = keys.heartbeat(role, worker_id)
        self.role = role
        self.worker_id = worker_id
        self.every_s = every_s
        self.now = now
        self._last = float("-inf")

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.every_s

    def beat(self, stats: Mapping[str, Any] | None = None, force: bool = False) -> bool:
        """Write the beat when one is due (or `force`); a Redis error propagates to the role's loop."""
        if not force and not self.due():
            return False
        beat = Beat(self.role, self.worker_id, self.now(), dict(stats or {}))
        self.client.set(self.key, beat.to_json(), ex=int(self.every_s * 3) + 1)
        self._last = time.monotonic()
        return True

    def clear(self) -> None:
        """Remove the beat (a clean stop): readers see the role gone at once, not after the TTL."""
        try:
            self.client.delete(self.key)
        except redis.RedisError:
            pass


@dataclass
class Isolated:
    """What `isolate` counted: failed items by kind."""

    failures: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.failures.values())

    def count(self, kind: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1


def isolate(what: str, kind: str, fn: Callable[[], T], counted: Isolated | None = None) -> T | None:
    """Run one item's work. Redis errors propagate (an outage is the loop's business, not the item's); any other
    error is logged with `what` (the item: a window, a camera, a sink, an event), counted under `kind`, and None is
    returned so the role goes on with the next item."""
    try:
        return fn()
    except redis.RedisError:
        raise
    except Exception as exc:  # one bad item never ends the role
        if counted is not None:
            counted.count(kind)
        log.error("%s failed: %s: %s", what, type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        return None


class RoleLoop:
    """The loop every role runs: `step()` until stopped, Redis outages waited out with one log line each way,
    the heartbeat kept, teardown always.

    `step()` returns True when it did work (used for `idle_exit_s`), or "stop" to end the loop by itself.
    `on_outage()` runs after a Redis error (e.g. forget subscriptions, so `setup` makes them again)."""

    def __init__(self, name: str, stop: threading.Event, heartbeat: Heartbeat | None = None,
                 link: RedisLink | None = None) -> None:
        self.name = name
        self.stop = stop
        self.heartbeat = heartbeat
        self.link = link or RedisLink(name)

    def run(self, step: Callable[[], bool | str], stats: Callable[[], Mapping[str, Any]] = dict,
            teardown: Callable[[], None] | None = None, on_outage: Callable[[], None] | None = None,
            max_seconds: float | None = None, idle_exit_s: float | None = None) -> None:
        started = last_work = time.monotonic()
        try:
            while not self.stop.is_set():
                try:
                    if self.heartbeat is not None and self.heartbeat.due():  # stats only when a beat is written
                        self.heartbeat.beat(stats())
                    did = step()
                    self.link.ok()
                except redis.RedisError as exc:
                    if on_outage is not None:
                        on_outage()
                    self.stop.wait(self.link.failed(exc))
                    continue
                if did == "stop":
                    return
                now = time.monotonic()
                if did:
                    last_work = now
                if max_seconds is not None and now - started >= max_seconds:
                    return
                if idle_exit_s is not None and now - last_work > idle_exit_s:
                    return
        finally:
            try:
                if teardown is not None:
                    teardown()
            finally:
                if self.heartbeat is not None:
                    self.heartbeat.clear()



# ---- supervision ----------------------------------------------------------------------------
ROLES = ("ingest", "engine", "media", "webhooks", "mqtt")  # the long-running roles readiness and metrics report on


@dataclass(frozen=True)
class RoleStatus:
    """A supervisor's word on one role it runs: `running`, `restarting` (it died; restarted after a backoff) or `down`
    (given up, or not restartable), with the last error and how often it was restarted."""

    role: str
    supervisor: str
    state: str
    error: str = ""
    restarts: int = 0
    since: float = 0.0  # when the current state began (Unix s)

    def to_json(self) -> str:
        return json.dumps({"role": self.role, "supervisor": self.supervisor, "state": self.state, "error": self.error,
                           "restarts": self.restarts, "since": round(self.since, 3)})

    @classmethod
    def from_json(cls, raw: str | bytes) -> "RoleStatus":
        d = json.loads(raw)
        return cls(str(d["role"]), str(d["supervisor"]), str(d["state"]), str(d.get("error", "")),
                   int(d.get("restarts", 0)), float(d.get("since", 0.0)))


class StatusBoard:
    """Where supervisors record their roles' states in Redis (TTL: a supervisor that is gone says nothing), and
    where `/readyz` and `/metrics` read them. Writing never raises: supervision must not die of an outage."""

    TTL_S = 120  # longer than the longest restart delay: a role being restarted stays reported meanwhile

    def __init__(self, client: redis.Redis, keys: Keys, supervisor: str) -> None:
        self.client = require_client(client, "StatusBoard")
        self.keys = keys
        self.supervisor = supervisor
        self.current: dict[str, RoleStatus] = {}

    def set(self, role: str, state: str, error: str = "", restarts: int | None = None) -> RoleStatus:
        old = self.current.get(role)
        st = RoleStatus(role, self.supervisor, state, error,
                        restarts if restarts is not None else (old.restarts if old else 0),
                        old.since if old and old.state == state else time.time())
        self.current[role] = st
        self.publish(st)
        return st

    def publish(self, st: RoleStatus | None = None) -> None:
        """Write one status (or refresh all of this supervisor's); called at every change and periodically."""
        try:
            for s in [st] if st is not None else list(self.current.values()):
                self.client.set(self.keys.role_status(s.role, s.supervisor), s.to_json(), ex=self.TTL_S)
        except redis.RedisError as exc:
            log.debug("role status not written: %s", exc)

    def clear(self, role: str | None = None) -> None:
        """Forget a role (a clean stop), or every role of this supervisor."""
        for r in [role] if role is not None else list(self.current):
            self.current.pop(r, None)
            try:
                self.client.delete(self.keys.role_status(r, self.supervisor))
            except redis.RedisError:
                pass

    @staticmethod
    def read(client: redis.Redis, keys: Keys) -> list[RoleStatus]:
        out = []
        for k in client.scan_iter(keys.role_status_pattern(), count=100):
            raw = client.get(k)
            if raw:
                try:
                    out.append(RoleStatus.from_json(raw))
                except (ValueError, KeyError, TypeError):
                    continue
        return sorted(out, key=lambda s: (s.role, s.supervisor))


def restart_delay(restarts: int, initial_s: float = 1.0, max_s: float = 30.0) -> float:
    """Capped exponential backoff between restarts of a role that keeps dying (no jitter: one supervisor per role)."""
    return min(max_s, initial_s * 2 ** min(restarts, 10))


class Restarts:
    """One role's restart record, for whatever supervises it (a process or a thread): how many times it was
    restarted, and the delay before the next start: `restart_delay` over its deaths in a row, where a run of
    `STABLE_S` or more starts the count again from the shortest delay."""

    STABLE_S = 60.0

    def __init__(self, initial_s: float = 1.0, max_s: float = 30.0) -> None:
        self.initial_s, self.max_s = initial_s, max_s
        self.count = 0
        self.streak = 0  # deaths in a row, each within STABLE_S of its start

    def died(self, ran_s: float) -> float:
        """Record a death after `ran_s` seconds of running; returns the delay before starting it again."""
        self.streak = self.streak + 1 if ran_s < self.STABLE_S else 1
        self.count += 1
        return restart_delay(self.streak - 1, self.initial_s, self.max_s)


class Keeper:
    """Runs a role in a thread and keeps it running: when its `run()` raises, or returns while not asked to stop,
    the error is logged, the role is recorded `restarting` on the board, and it is started again after a capped
    backoff (`restart_delay`). A role that ran a while before dying starts again from the shortest delay."""

    def __init__(self, name: str, run: Callable[[], None], stop: threading.Event, board: StatusBoard | None = None,
                 initial_s: float = 1.0, max_s: float = 30.0) -> None:
        self.name = name
        self.run = run
        self.stop = stop
        self.board = board
        self.restarts = Restarts(initial_s, max_s)
        self.last_error = ""
        self.thread = threading.Thread(target=self._keep, name=f"{name}-keeper", daemon=True)

    def start(self) -> "Keeper":
        self.thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    def _keep(self) -> None:
        while not self.stop.is_set():
            if self.board is not None:
                self.board.set(self.name, "running", self.last_error, self.restarts.count)
            started = time.monotonic()
            try:
                self.run()
                if self.stop.is_set():
                    break
                self.last_error = "it stopped by itself"
            except Exception as exc:  # whatever ended the role, the keeper outlives it
                self.last_error = f"{type(exc).__name__}: {exc}"
            delay = self.restarts.died(time.monotonic() - started)
            log.error("%s stopped unexpectedly (%s); restarting in %.0f s (restart %d)", self.name, self.last_error,
                      delay, self.restarts.count, exc_info=log.isEnabledFor(logging.DEBUG))
            if self.board is not None:
                self.board.set(self.name, "restarting", self.last_error, self.restarts.count)
            self.stop.wait(delay)
        if self.board is not None:
            self.board.clear(self.name)
