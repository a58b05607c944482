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
