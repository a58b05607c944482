"""/readyz tells the truth: which roles are up, and which role a supervisor reports down, with why."""
from __future__ import annotations

from stream.role import StatusBoard
from tests.api.conftest import KEYS


def _beat(redis_client, role: str, worker: str = "w1") -> None:
    redis_client.set(KEYS.heartbeat(role, worker), "{}", ex=10)


def test_readyz_when_engine_and_ingest_beat_and_nothing_is_down_then_ready(api, redis_client):
    _beat(redis_client, "engine")
    _beat(redis_client, "ingest")
    with api.client(None) as http:
        r = http.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready" and r.json()["down"] == []
    assert r.json()["workers"] == {"ingest": 1, "engine": 1, "media": 0, "webhooks": 0, "mqtt": 0}


def test_readyz_when_a_supervisor_reports_a_role_restarting_then_not_ready_naming_it(api, redis_client):
    # given both required roles beating, and the media role dead and being restarted by its supervisor
    _beat(redis_client, "engine")
    _beat(redis_client, "ingest")
    StatusBoard(redis_client, KEYS, "up-1").set("media", "restarting", "OSError: [Errno 28] No space left", restarts=3)
    # when readiness is asked
    with api.client(None) as http:
        r = http.get("/readyz")
    # then it is not ready, and says which role, why, and how often it was restarted
    assert r.status_code == 503 and r.json()["status"] == "not ready"
    [down] = r.json()["down"]
    assert (down["role"], down["state"], down["restarts"], down["supervisor"]) == ("media", "restarting", 3, "up-1")
    assert "No space left" in down["error"]


def test_readyz_when_ingest_has_no_heartbeat_then_not_ready(api, redis_client):
    _beat(redis_client, "engine")
    with api.client(None) as http:
        r = http.get("/readyz")
    assert r.status_code == 503 and r.json()["workers"]["ingest"] == 0
