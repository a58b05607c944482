"""Lowering a thread's CPU priority: only the calling thread (and threads it makes) change, said once, and a
failure is a warning, never an error."""
from __future__ import annotations

import logging
import os
import threading

import pytest

from stream.priority import ThreadPriority


def _in_a_thread(fn):
    out = {}

    def run() -> None:
        out["result"] = fn()
        out["nice"] = os.getpriority(os.PRIO_PROCESS, 0)
        child = threading.Thread(target=lambda: out.setdefault("child", os.getpriority(os.PRIO_PROCESS, 0)))
        child.start()
        child.join()

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return out


def test_lower_when_called_in_a_thread_lowers_that_thread_and_what_it_starts_only(caplog):
    # given the calling thread's priority
    base = os.getpriority(os.PRIO_PROCESS, 0)
    priority = ThreadPriority(3)
    caplog.set_level(logging.INFO, logger="stream.priority")
    # when two threads lower themselves
    first, second = _in_a_thread(priority.lower), _in_a_thread(priority.lower)
    # then each runs 3 levels lower (not 6: each starts from its creator's), and so do the threads it starts
    want = min(19, base + 3)
    assert first == second == {"result": want, "nice": want, "child": want}
    # and this thread is unchanged; the priority was said once
    assert os.getpriority(os.PRIO_PROCESS, 0) == base
    assert caplog.text.count(f"run at nice {want}") == 1


def test_lower_when_nice_is_zero_leaves_the_thread_as_it_is():
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert _in_a_thread(ThreadPriority(0).lower) == {"result": None, "nice": base, "child": base}


def test_lower_when_the_system_refuses_warns_once_and_goes_on(monkeypatch, caplog):
    # given a system that refuses to change priorities (a sandbox)
    def refuse(*_):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "setpriority", refuse)
    priority = ThreadPriority(10)
    # when threads try
    results = [_in_a_thread(priority.lower)["result"] for _ in range(3)]
    # then nothing was raised, nothing changed, and one warning says so
    assert results == [None, None, None]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "could not lower" in r.getMessage()]
    assert len(warnings) == 1 and "ingest.nice" in warnings[0].getMessage()


def test_init_when_nice_is_out_of_range_refuses():
    with pytest.raises(ValueError, match="ingest.nice must be in 0..19"):
        ThreadPriority(20)
