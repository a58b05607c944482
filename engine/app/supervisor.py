"""`up`'s roles as separate processes, each with its own CPU thread budget, stopped in order.

Why processes: ingest (FFmpeg decode, many camera threads with Python in between) and the engine (torch)
in one process fight over the GIL, and their thread pools (torch intra-op, FFmpeg) oversubscribe the
cores; separate processes measured faster (bench/headline.py). Each role is a module-level function
`target(control, *args)` run in a spawned process:

- `control.stop` (a threading.Event in the child) is set when the parent asks the role to stop, on
  SIGTERM, or when the parent process dies (nothing is left running on any exit path);
- `control.finish` is set when the parent asks the role to work off what is waiting and then stop (the
  engine, after ingest has stopped its cameras);
- SIGINT is ignored in the children: a terminal's Ctrl-C reaches the whole process group, and the parent
  stops the roles in its own order (ingest, then the engine, then Redis).

`threads` caps the role's compute threads (OMP/MKL/torch intra-op through the environment, read by the
role as `control.threads`).
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from stream.role import Restarts, StatusBoard

log = logging.getLogger(__name__)

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class RoleControl:
    """What a role's target gets in its process."""

    name: str
    stop: threading.Event
    finish: threading.Event
    threads: int  # 0: the role's own default


@dataclass
class _Role:
    name: str
    target: Callable
    args: tuple
    threads: int
    process: mp.Process | None = None
    stop: object = None  # shared flags (multiprocessing RawValue), polled by the child: unlike a multiprocessing Event,
    finish: object = None  # setting one never blocks on a child that died while waiting on it
    started_at: float = 0.0  # monotonic
    stopping: bool = False  # asked to stop or finish: its end is not a crash
    restarts: Restarts = field(default_factory=Restarts)
    restart_at: float | None = None  # monotonic; set while it waits to be started again
    error: str = ""


def _child(name: str, target: Callable, stop, finish, threads: int, log_level: int, args: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us, in order
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    local_stop, local_finish = threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: local_stop.set())
    logging.basicConfig(level=log_level, format=f"%(asctime)s %(levelname)s {name} %(name)s: %(message)s")
    parent = mp.parent_process()

    def watch() -> None:  # parent's requests, or its death, become the role's events
        while not local_stop.wait(0.1):
            if stop.value:
                local_stop.set()
            if finish.value:
                local_finish.set()
            if parent is not None and multiprocessing.connection.wait([parent.sentinel], timeout=0):
                log.warning("%s: the parent process is gone; stopping", name)
                local_stop.set()

    threading.Thread(target=watch, name=f"{name}-control", daemon=True).start()
    target(RoleControl(name, local_stop, local_finish, threads), *args)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "it stopped"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class Supervisor:
    """Start roles, tell them to finish or stop, restart one that dies on its own (`watch`, with capped backoff,
    recorded on the status board), and make sure none outlives `close()`."""

    def __init__(self, board: StatusBoard | None = None, initial_s: float = 1.0, max_s: float = 30.0) -> None:
        self.ctx = mp.get_context("spawn")  # a clean interpreter: no inherited threads, locks or torch state
        self.roles: dict[str, _Role] = {}
        self.board = board
        self.initial_s, self.max_s = initial_s, max_s

    def start(self, name: str, target: Callable, args: tuple = (), threads: int = 0) -> None:
        role = self.roles[name] = _Role(name, target, args, threads, restarts=Restarts(self.initial_s, self.max_s))
        self._spawn(role)
        if self.board is not None:
            self.board.set(name, "running")

    def _spawn(self, role: _Role) -> None:
        name, target, args, threads = role.name, role.target, role.args, role.threads
        stop, finish = self.ctx.RawValue("b", 0), self.ctx.RawValue("b", 0)
        proc = self.ctx.Process(target=_child, name=f"spacevllm-{name}", daemon=False,
                                args=(name, target, stop, finish, threads, logging.getLogger().getEffectiveLevel(), args))
        saved = {k: os.environ.get(k) for k in THREAD_ENV}
        if threads:
            os.environ.update({k: str(threads) for k in THREAD_ENV})  # read by the child's libraries at import
        # a Ctrl-C while the child is still starting must not kill it before it can ignore SIGINT
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        role.process, role.stop, role.finish, role.started_at = proc, stop, finish, time.monotonic()
        log.info("started %s (pid %d, threads %s)", name, proc.pid, threads or "default")

    def watch(self) -> list[str]:
        """Restart what died without being asked to: the death is logged with how it ended and recorded
        `restarting` on the board; the role starts again after `restart_delay` (capped). Returns the roles that
        died in this call. Call it often (`up` does, every 0.2 s)."""
        died = []
        now = time.monotonic()
        for role in self.roles.values():
            if role.stopping or role.process is None or role.process.is_alive():
                continue
            if role.restart_at is None:
                delay = role.restarts.died(now - role.started_at)
                role.error = describe_exit(role.process.exitcode)
                role.restart_at = now + delay
                log.error("%s stopped unexpectedly (%s); restarting in %.0f s (restart %d)", role.name, role.error, delay,
                          role.restarts.count)
                if self.board is not None:
                    self.board.set(role.name, "restarting", role.error, role.restarts.count)
                died.append(role.name)
            elif now >= role.restart_at:
                role.restart_at = None
                self._spawn(role)
                if self.board is not None:
                    self.board.set(role.name, "running", role.error, role.restarts.count)
        return died

    def alive(self, name: str) -> bool:
        role = self.roles.get(name)
        return role is not None and role.process is not None and role.process.is_alive()

    def restarts(self, name: str) -> int:
        return self.roles[name].restarts.count

    def exitcode(self, name: str) -> int | None:
        return self.roles[name].process.exitcode

    def finish(self, name: str, timeout_s: float) -> bool:
        """Ask a role to work off what is waiting and stop; True when it ended within `timeout_s`."""
        role = self.roles.get(name)
        if role is None or role.process is None:
            return True
        role.stopping = True
        role.finish.value = 1
        role.process.join(timeout_s)
        return not role.process.is_alive()

    def stop(self, name: str, timeout_s: float = 15.0) -> None:
        """Ask a role to stop; after `timeout_s` terminate it, then kill it."""
        role = self.roles.get(name)
        if role is None or role.process is None:
            return
        role.stopping = True
        if self.board is not None:
            self.board.clear(name)
        role.stop.value = 1
        role.process.join(timeout_s)
        if role.process.is_alive():
            log.warning("%s did not stop within %.0f s; terminating it", name, timeout_s)
            role.process.terminate()
            role.process.join(5.0)
        if role.process.is_alive():
            role.process.kill()
            role.process.join(5.0)

    def close(self) -> None:
        for name in reversed(list(self.roles)):
            self.stop(name, timeout_s=5.0)
