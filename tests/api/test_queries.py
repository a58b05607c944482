"""`/v1/queries` over real HTTP: CRUD round trips, 422s that name the field, bounds on every field, secrets kept
through GET -> PUT round trips, and the caps on standing queries (api.max_queries, api.max_queries_per_camera)."""
from __future__ import annotations

import json

import pytest

from engine.contracts.queries import QueryRegistry
from tests.api.conftest import KEYS, RunningApi, start_api


def test_create_query_when_posted_then_listed_fetched_replaced_and_deleted(api, redis_client):
    with api.client("write") as http:
        # given a new query
        body = {"id": "red", "text": "the  red circle", "cameras": ["cam1"], "threshold": 0.6,
                "webhooks": [{"url": "http://127.0.0.1:9/hook", "secret": "s3cret-value"}]}
        # when it is posted, then it is stored as validated and shown without its webhook secret
        r = http.post("/v1/queries", json=body)
        assert r.status_code == 201, r.text
        assert r.headers["location"] == "/v1/queries/red"
        assert r.json()["text"] == "the red circle" and r.json()["webhooks"] == [{"url": "http://127.0.0.1:9/hook", "secret": "<redacted>"}]
        assert "s3cret-value" not in http.get("/v1/queries").text
        assert [q["id"] for q in http.get("/v1/queries").json()] == ["red"]
        stored = QueryRegistry(redis_client, KEYS).get("red")
        assert stored.webhooks[0].secret == "s3cret-value" and stored.cameras == ("cam1",)
        # when the same id is posted again, then 409 and nothing changes
        assert http.post("/v1/queries", json={**body, "text": "other"}).status_code == 409
        assert http.get("/v1/queries/red").json()["text"] == "the red circle"
        # when it is PUT, then it is replaced and keeps created_at (and, with no `webhooks` in the body, its sinks)
        created = http.get("/v1/queries/red").json()["created_at"]
        r = http.put("/v1/queries/red", json={"text": "the blue square"})
        assert r.status_code == 200 and r.json()["text"] == "the blue square" and r.json()["created_at"] == created
        assert r.json()["cameras"] == ["*"] and r.json()["webhooks"] == [{"url": "http://127.0.0.1:9/hook", "secret": "<redacted>"}]
        assert QueryRegistry(redis_client, KEYS).get("red").webhooks[0].secret == "s3cret-value"
        # when it is PUT with an empty list of sinks, then they are gone
        assert http.put("/v1/queries/red", json={"text": "the blue square", "webhooks": []}).json()["webhooks"] == []
        # when it is deleted, then it is gone
        assert http.delete("/v1/queries/red").status_code == 204
        assert http.get("/v1/queries/red").status_code == 404
        assert http.delete("/v1/queries/red").status_code == 404


def test_put_query_when_new_then_created_with_the_path_id(api):
    with api.client("write") as http:
        r = http.put("/v1/queries/q9", json={"text": "the green triangle"})
        assert r.status_code == 201 and r.json()["id"] == "q9"


def test_post_query_when_no_id_then_one_is_generated(api):
    with api.client("write") as http:
        r = http.post("/v1/queries", json={"text": "the green triangle"})
        assert r.status_code == 201 and r.json()["id"].startswith("q-")


@pytest.mark.parametrize("body, loc, msg", [
    ({}, ["body", "text"], "required"),
    ({"text": "ok", "threshold": 1.5}, ["body", "threshold"], "must be in [0, 1.0]"),
    ({"text": "ok", "threshold": "high"}, ["body", "threshold"], "must be a number"),
    ({"text": "ok", "cooldown_s": -1}, ["body", "cooldown_s"], "must be >= 0"),
    ({"text": "ok", "cameras": ["cam/1"]}, ["body", "cameras"], "invalid camera id"),
    ({"text": "ok", "colour": "red"}, ["body", "colour"], "unknown field"),
    ({"text": "a\x00b"}, ["body", "text"], "control characters"),
    ({"text": "ok", "webhooks": [{"url": "ftp://x", "secret": "s"}]}, ["body", "webhooks", 0, "url"], "http:// or https://"),
    ({"text": "ok", "webhooks": [{"url": "http://x"}]}, ["body", "webhooks", 0, "secret"], "required"),
])
def test_post_query_when_invalid_then_422_names_the_field(api, body, loc, msg):
    with api.client("write") as http:
        r = http.post("/v1/queries", json=body)
        assert r.status_code == 422
        detail = r.json()["detail"]
        assert any(d["loc"] == loc and msg in d["msg"] for d in detail), detail


def test_put_query_when_body_id_differs_from_path_then_422(api):
    with api.client("write") as http:
        r = http.put("/v1/queries/a", json={"id": "b", "text": "x"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "id"]


def test_get_query_when_path_id_is_invalid_then_422(api):
    with api.client("read") as http:
        assert http.get("/v1/queries/bad%20id").status_code == 422


@pytest.mark.parametrize("raw, loc, msg", [
    ('{"text": "ok", "created_at": NaN}', ["body", "created_at"], "finite number"),
    ('{"text": "ok", "created_at": Infinity}', ["body", "created_at"], "finite number"),
    ('{"text": "ok", "cooldown_s": 1e308}', ["body", "cooldown_s"], "at most 3600 s"),
    ('{"text": "ok", "cooldown_s": Infinity}', ["body", "cooldown_s"], "must be a number"),
    ('{"text": "ok", "min_duration_s": 86400}', ["body", "min_duration_s"], "at most 3600 s"),
    ('{"text": "ok", "threshold": NaN}', ["body", "threshold"], "must be a number"),
    ('{"text": "' + "x " * 5000 + '"}', ["body", "text"], "must be 1-256 characters"),
    ('{"text": "ok", "cameras": ' + json.dumps([f"cam{n}" for n in range(300)]) + '}', ["body", "cameras"],
     "at most 256 camera ids"),
])
def test_post_query_when_a_value_is_unbounded_then_422_and_nothing_stored(api, redis_client, raw, loc, msg):
    with api.client("write") as http:
        r = http.post("/v1/queries", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and any(d["loc"] == loc and msg in d["msg"] for d in r.json()["detail"]), r.text[:300]
    assert QueryRegistry(redis_client, KEYS).all() == []


def test_post_query_when_200k_camera_ids_then_refused_before_it_is_read(api):
    body = json.dumps({"text": "ok", "cameras": [f"c{n}" for n in range(200_000)]})
    with api.client("write") as http:
        assert http.post("/v1/queries", content=body, headers={"Content-Type": "application/json"}).status_code == 413


SINK = {"url": "http://127.0.0.1:9/hook", "secret": "s3cret-value"}


def stored_secrets(redis_client, query_id: str) -> dict[str, str]:
    return {w.url: w.secret for w in QueryRegistry(redis_client, KEYS).get(query_id).webhooks}


def test_put_query_when_a_get_answer_is_sent_back_then_the_secrets_are_kept(api, redis_client):
    with api.client("write") as http:
        # given a query with two sinks
        other = {"url": "http://127.0.0.1:9/other", "secret": "other-secret"}
        assert http.post("/v1/queries", json={"id": "q1", "text": "the red circle", "min_duration_s": 1.5,
                                              "webhooks": [SINK, other]}).status_code == 201
        # when what GET answered is edited and sent back as it is (secrets `<redacted>`)
        answer = http.get("/v1/queries/q1").json()
        r = http.put("/v1/queries/q1", json={**answer, "text": "the blue square"})
        # then the text changed, and every sink kept its secret (never the literal `<redacted>`)
        assert r.status_code == 200 and r.json()["text"] == "the blue square" and r.json()["min_duration_s"] == 1.5
        assert stored_secrets(redis_client, "q1") == {SINK["url"]: SINK["secret"], other["url"]: "other-secret"}
        # when a sink is sent without a secret, another with a new one, and one left out: kept, replaced, removed
        r = http.put("/v1/queries/q1", json={"text": "x", "webhooks": [{"url": SINK["url"]},
                                                                       {"url": other["url"], "secret": "rotated"}]})
        assert r.status_code == 200
        assert stored_secrets(redis_client, "q1") == {SINK["url"]: SINK["secret"], other["url"]: "rotated"}
        r = http.put("/v1/queries/q1", json={"text": "x", "webhooks": [{"url": other["url"], "secret": "<redacted>"}]})
        assert stored_secrets(redis_client, "q1") == {other["url"]: "rotated"}


@pytest.mark.parametrize("sink", [{"url": "http://127.0.0.1:9/new", "secret": "<redacted>"}, {"url": "http://127.0.0.1:9/new"}])
def test_put_query_when_a_new_sink_has_no_real_secret_then_422(api, redis_client, sink):
    with api.client("write") as http:
        assert http.post("/v1/queries", json={"id": "q1", "text": "ok", "webhooks": [SINK]}).status_code == 201
        r = http.put("/v1/queries/q1", json={"text": "ok", "webhooks": [SINK, sink]})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "webhooks", 1, "secret"]
        # and a query that does not exist yet has no secret to keep
        assert http.put("/v1/queries/q2", json={"text": "ok", "webhooks": [{"url": SINK["url"]}]}).status_code == 422
    assert stored_secrets(redis_client, "q1") == {SINK["url"]: SINK["secret"]}


def test_post_query_when_a_secret_is_the_redacted_placeholder_then_422(api):
    with api.client("write") as http:
        r = http.post("/v1/queries", json={"text": "ok", "webhooks": [{"url": SINK["url"], "secret": "<redacted>"}]})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "webhooks", 0, "secret"]


def test_queries_when_over_the_caps_then_422_naming_the_setting(redis_client):
    server = start_api(redis_client, webhooks=False, max_queries=4, max_queries_per_camera=2)
    try:
        with RunningApi(server, server.url).client("write") as http:
            # given two queries on cam1
            for n in (1, 2):
                assert http.post("/v1/queries", json={"id": f"a{n}", "text": "x", "cameras": ["cam1"]}).status_code == 201
            # then a third on cam1 is refused, and so is one on every camera (it would be cam1's third)
            for cameras in (["cam1"], ["cam2", "cam1"], ["*"]):
                r = http.post("/v1/queries", json={"text": "x", "cameras": cameras})
                assert r.status_code == 422 and "camera cam1 would have 3" in r.text and "api.max_queries_per_camera" in r.text
            # and replacing one of them is not counted twice
            assert http.put("/v1/queries/a1", json={"text": "y", "cameras": ["cam1"]}).status_code == 200
            # given two on cam2, which reach the total: then a fifth is refused, wherever it looks
            for n in (3, 4):
                assert http.post("/v1/queries", json={"id": f"a{n}", "text": "x", "cameras": ["cam2"]}).status_code == 201
            r = http.put("/v1/queries/a5", json={"text": "x", "cameras": ["cam3"]})
            assert r.status_code == 422 and "at most 4 standing queries (api.max_queries)" in r.text
            assert http.delete("/v1/queries/a4").status_code == 204
            r = http.post("/v1/queries", json={"text": "x", "cameras": ["*"]})
            assert r.status_code == 422 and "would have 3" in r.text
            assert http.post("/v1/queries", json={"text": "x", "cameras": ["cam3"]}).status_code == 201
    finally:
        server.close()
