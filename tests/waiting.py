"""Polling helpers shared by tests that wait on real servers and processes."""
from __future__ import annotations

import time


def wait_until(predicate, timeout_s: float, step_s: float = 0.1):
    """Poll `predicate` until it returns something truthy or `timeout_s` passes; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    return predicate()


def wait_for(predicate, timeout_s: float, what: str, step_s: float = 0.25):
    """`wait_until`, but a timeout is an AssertionError naming what was awaited."""
    value = wait_until(predicate, timeout_s, step_s)
    if not value:
        raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
    return value


def stop_process(proc, timeout_s: float = 20.0) -> None:
    """SIGTERM, then SIGKILL if it has not ended within `timeout_s` (a server fixture's teardown)."""
    import subprocess

    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def redis_clock_ticks(client) -> None:
    """Return once the Redis server's clock has moved past the millisecond it reads now.

    Stream ids carry the server's millisecond, and the all-shards feed orders entries by it: a test that needs two
    writes in a known order waits for this between them (a condition on the server's clock, not a guess at a
    sleep long enough on a loaded machine)."""
    def now_ms() -> int:
        seconds, micros = client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    start = now_ms()
    deadline = time.monotonic() + 5.0
    while now_ms() <= start:
        if time.monotonic() > deadline:
            raise AssertionError("the Redis clock did not move for 5 s")


def pending_idle_at_least(client, stream: str, group: str, idle_ms: int, timeout_s: float = 30.0) -> None:
    """Wait until every entry pending in `group` of `stream` has been idle for `idle_ms` (claimable by another
    consumer), as Redis itself counts it."""
    def idle_enough() -> bool:
        entries = client.xpending_range(stream, group, min="-", max="+", count=1000)
        return all(e["time_since_delivered"] >= idle_ms for e in entries)

    wait_for(idle_enough, timeout_s, f"pending entries of {stream} idle for {idle_ms} ms", step_s=0.02)


def still_true(predicate, for_s: float, step_s: float = 0.05) -> bool:
    """`predicate` holds the whole of `for_s` (an absence that must last: a process that must not die, windows that
    must not appear); False at the first time it does not."""
    deadline = time.monotonic() + for_s
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(step_s)
    return bool(predicate())


def pings(make_client) -> bool:
    """True once a Redis server answers PING (a server starting up refuses connections until then)."""
    import redis

    try:
        return bool(make_client().ping())
    except redis.ConnectionError:
        return False


def redis_contents(client) -> bytes:
    """Every key and value of a Redis database as bytes (strings, hashes, sets, streams): what a test searches
    for a secret that must be stored nowhere."""
    out = []
    for k in client.scan_iter(count=500):
        kind = client.type(k)
        out.append(k)
        if kind == b"string":
            out.append(client.get(k) or b"")
        elif kind == b"hash":
            out += [x for kv in client.hgetall(k).items() for x in kv]
        elif kind == b"set":
            out += list(client.smembers(k))
        elif kind == b"stream":
            out += [x for _, f in client.xrange(k) for kv in f.items() for x in kv]
    return b"\n".join(x if isinstance(x, bytes) else str(x).encode() for x in out)
