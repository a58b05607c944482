"""Roles share the cores on purpose: ingest's camera threads run at a lower CPU priority than the engine.

The kernel shares a contested CPU per thread, not per role: eight camera threads (each decoding, with FFmpeg's
threads beside it) and one engine thread get a share each by their weight, and the engine, the role the service
exists for, gets the smallest part. A higher nice value lowers a thread's weight (nice 0: 1024, 5: 335, 10: 110;
about 1.25x a step), and an unprivileged process can only lower its own priority, so "the engine first" is done
as "ingest lower" (`ingest.nice`). Nice only matters under contention: a camera thread still gets every cycle
the engine leaves idle. When ingest, so lowered, falls behind real time, its cameras decode key frames only
(stream/overload.py) instead of piling up late frames.

On Linux the nice value belongs to a thread (`setpriority(PRIO_PROCESS, 0)` sets the calling thread's), and a
new thread starts with its creator's. So each camera thread lowers itself as it starts, before it opens its
source: FFmpeg's decoder threads, made by it, inherit the value, and nothing else changes (the ingest loop and its
heartbeat; the thread that called `IngestService.run`, a test runner's or a benchmark's). Applied per thread, it
is also applied once per thread: a camera restarted is a new thread, lowered from the loop's priority again.

Under docker-compose each role is a container: containers share the CPU by their cgroup's weight, not by nice, so
give the engine's container the larger share there (`cpu_shares`, `cpus`).
"""
from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

MAX_NICE = 19


class ThreadPriority:
    """Lowers the priority of each thread that calls `lower()` by `nice` levels (0: unchanged). Says once what it
    applied (info), and once if it could not (warning); never raises: a camera at normal priority still works."""

    def __init__(self, nice: int, who: str = "ingest camera threads", setting: str = "ingest.nice") -> None:
        if not 0 <= nice <= MAX_NICE:
            raise ValueError(f"{setting} must be in 0..{MAX_NICE}, not {nice}")
        self.nice = nice
        self.who = who
        self.setting = setting
        self._lock = threading.Lock()
        self._said: set[str] = set()  # what was said already: applied, failed

    def lower(self) -> int | None:
        """Lower the calling thread's priority; its nice value after, or None when it was left as it was."""
        if not self.nice:
            self._say_once("applied", logging.INFO, "%s run at the process's priority (%s: 0)", self.who, self.setting)
            return None
        try:
            before = os.getpriority(os.PRIO_PROCESS, 0)  # 0: the calling thread (Linux)
            os.setpriority(os.PRIO_PROCESS, 0, min(MAX_NICE, before + self.nice))
            after = os.getpriority(os.PRIO_PROCESS, 0)
        except OSError as exc:  # a sandbox that forbids it: the cameras run, at the engine's priority
            self._say_once("failed", logging.WARNING, "%s could not lower their priority (%s: %d): %s; they compete with the "
                           "engine for the CPU as equals", self.who, self.setting, self.nice, exc)
            return None
        self._say_once("applied", logging.INFO, "%s run at nice %d (%d before, %s %d): under contention the engine "
                       "comes first", self.who, after, before, self.setting, self.nice)
        return after

    def _say_once(self, what: str, level: int, msg: str, *args) -> None:
        with self._lock:
            if what in self._said:
                return
            self._said.add(what)
        log.log(level, msg, *args)
