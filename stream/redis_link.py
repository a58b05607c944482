"""Living with a Redis that goes away: one log line per state change, capped backoff with jitter.

Every worker (camera threads, the ingest heartbeat, the engine loop) keeps a `RedisLink` and reports
each Redis call's outcome to it; the link logs "unavailable" once when the first call fails and
"back" once when a call succeeds again (with how long it was gone and what was dropped meanwhile),
never a traceback per attempt.
"""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping

import redis

log = logging.getLogger(__name__)


def backoff_delay(attempt: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential backoff with jitter in [50%, 100%] of the capped delay."""
    capped = min(max_s, initial_s * (2 ** min(attempt, 30)))
    return capped * (0.5 + 0.5 * rng.random())


class RedisLink:
    service = "Redis"  # what goes away, in the log lines (a subclass follows another server the same way)

    def __init__(self, who: str, initial_s: float = 0.5, max_s: float = 10.0, now: Callable[[], float] = time.monotonic,
                 seed: int | None = None) -> None:
        self.who = who
        self.initial_s = initial_s
        self.max_s = max_s
        self.now = now
        self.rng = random.Random(seed)
        self.down_since: float | None = None
        self.attempt = 0
        self.dropped = 0  # things given up while down (frames, heartbeats): reported on recovery
        self.outages = 0

    @property
    def up(self) -> bool:
        return self.down_since is None

    def failed(self, exc: BaseException, dropped: int = 0) -> float:
        """Record a failed call; returns how long to wait before the next attempt."""
        self.dropped += dropped
        if self.down_since is None:
            self.down_since = self.now()
            self.outages += 1
            self.attempt = 0
            what = "refused a command" if isinstance(exc, redis.ResponseError) else "unavailable"
            log.warning("%s: %s %s (%s: %s); retrying with backoff", self.who, self.service, what, type(exc).__name__, exc)
        delay = backoff_delay(self.attempt, self.initial_s, self.max_s, self.rng)
        self.attempt += 1
        return delay

    def ok(self) -> None:
        """Record a successful call (logs the recovery once)."""
        if self.down_since is not None:
            log.warning("%s: %s is back after %.1f s%s", self.who, self.service, self.now() - self.down_since,
                        f" ({self.dropped} dropped meanwhile)" if self.dropped else "")
            self.down_since = None
            self.attempt = 0
            self.dropped = 0


def text(raw: str | bytes | int | float) -> str:
    """A Redis reply as text. Roles share one client that returns bytes (frames and previews are binary); this is
    the one place replies meant as text are decoded."""
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def text_fields(d: Mapping) -> dict[str, str]:
    """A hash or stream entry's fields as text."""
    return {text(k): text(v) for k, v in d.items()}
