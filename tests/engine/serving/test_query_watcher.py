"""QueryWatcher's bound on what the engine grounds per camera (engine.max_queries_per_camera), against real Redis."""
from __future__ import annotations

import logging

from engine.contracts.queries import QueryRegistry, validate_query
from engine.contracts.settings import EngineSettings
from engine.serving.event_store import EventStore
from engine.serving.query_watcher import QueryWatcher
from stream.keys import Keys

KEYS = Keys("qw:", 2)


def test_for_camera_when_more_queries_than_the_cap_then_the_oldest_are_grounded_and_the_rest_logged_once(redis_client, caplog):
    # given six queries that apply to cam1 (one of them on every camera) and one on cam2, with a cap of 4
    reg = QueryRegistry(redis_client, KEYS)
    for n in range(6):
        reg.add(validate_query({"id": f"q{n}", "text": "x", "cameras": "*" if n == 2 else ["cam1"], "created_at": 100.0 + n}))
    reg.add(validate_query({"id": "other", "text": "x", "cameras": ["cam2"], "created_at": 1.0}))
    watcher = QueryWatcher(redis_client, KEYS, EventStore(redis_client, KEYS, EngineSettings(), "test"), reload_s=0.0,
                           max_per_camera=EngineSettings(max_queries_per_camera=4).max_queries_per_camera)
    watcher.refresh()
    caplog.set_level(logging.INFO)
    # when windows of cam1 come, then the four oldest are grounded, the two newest are not, and that is logged once
    for _ in range(3):
        assert [q.id for q in watcher.for_camera("cam1")] == ["q0", "q1", "q2", "q3"]
    assert watcher.over_cap == {"cam1": ("q4", "q5")}
    assert sum("beyond engine.max_queries_per_camera" in r.getMessage() for r in caplog.records) == 1
    # and another camera is not affected
    assert [q.id for q in watcher.for_camera("cam2")] == ["other", "q2"]
    # when one is removed, then all are grounded again
    reg.remove("q5")
    reg.remove("q4")
    watcher.refresh()
    assert [q.id for q in watcher.for_camera("cam1")] == ["q0", "q1", "q2", "q3"] and watcher.over_cap == {}
