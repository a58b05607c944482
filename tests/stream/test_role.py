"""The role kit: heartbeats, the loop, per-item isolation, and supervision of roles that die."""
from __future__ import annotations

import json
import logging
import threading

import pytest
import redis

from stream.keys import Keys
from stream.role import Beat, Heartbeat, Isolated, Keeper, RoleLoop, RoleStatus, StatusBoard, isolate, restart_delay
from tests.waiting import wait_for

KEYS = Keys("role:")


def test_beat_when_round_tripped_then_the_same():
    beat = Beat("engine", "w1", 1000.5, {"processed": 3})
    assert Beat.from_json(beat.to_json()) == beat
    assert json.loads(beat.to_json()) == {"processed": 3, "role": "engine", "id": "w1", "ts": 1000.5}


def test_heartbeat_when_written_then_one_schema_with_a_ttl_and_cleared_on_stop(redis_client):
    hb = Heartbeat(redis_client, KEYS, "media", "m1", every_s=2.0, now=lambda: 5.0)
    assert hb.beat({"pending_clips": 1}) and not hb.beat({"pending_clips": 2})  # at most once a period
    raw = redis_client.get(KEYS.heartbeat("media", "m1"))
    assert Beat.from_json(raw) == Beat("media", "m1", 5.0, {"pending_clips": 1})
    assert 0 < redis_client.ttl(KEYS.heartbeat("media", "m1")) <= 7
    hb.clear()
    assert redis_client.get(KEYS.heartbeat("media", "m1")) is None


def test_isolate_when_an_item_fails_then_counted_and_logged_and_redis_errors_pass(caplog):
    counted = Isolated()
    assert isolate("event e1", "snapshot", lambda: 1 / 0, counted) is None
    assert counted.failures == {"snapshot": 1} and "event e1 failed: ZeroDivisionError" in caplog.text
    with pytest.raises(redis.ConnectionError):
        isolate("event e2", "snapshot", lambda: (_ for _ in ()).throw(redis.ConnectionError("gone")), counted)


def test_role_loop_when_redis_fails_then_waits_it_out_and_tears_down_once():
    stop, calls, torn = threading.Event(), [], []

    def step():
        calls.append(1)
        if len(calls) == 1:
            raise redis.ConnectionError("down")
        return "stop"

    RoleLoop("t", stop).run(step, teardown=lambda: torn.append(1))
    assert len(calls) == 2 and torn == [1]


def test_restart_delay_when_a_role_keeps_dying_then_capped():
    assert [restart_delay(n, 1.0, 30.0) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]


def test_keeper_when_the_role_raises_then_restarted_and_the_board_says_why(redis_client, caplog):
    # given a role that dies twice, then runs until stopped
    stop, runs = threading.Event(), []

    def role():
        runs.append(1)
        if len(runs) <= 2:
            raise RuntimeError(f"boom {len(runs)}")
        stop.wait()

    board = StatusBoard(redis_client, KEYS, "sup1")
    caplog.set_level(logging.ERROR)
    keeper = Keeper("media", role, stop, board, initial_s=0.05, max_s=0.1).start()
    # then it is restarted with its error logged and recorded, and runs again
    wait_for(lambda: len(runs) == 3, 10, "the third run")
    assert "media stopped unexpectedly (RuntimeError: boom 2)" in caplog.text
    st = wait_for(lambda: [s for s in StatusBoard.read(redis_client, KEYS) if s.state == "running"], 5, "running")[0]
    assert (st.role, st.restarts, st.error) == ("media", 2, "RuntimeError: boom 2")
    # and a clean stop removes its status
    stop.set()
    keeper.join(5)
    assert StatusBoard.read(redis_client, KEYS) == []


def test_status_when_round_tripped_then_the_same():
    st = RoleStatus("engine", "up-1", "restarting", "exit code -9", 3, 1000.0)
    assert RoleStatus.from_json(st.to_json()) == st
