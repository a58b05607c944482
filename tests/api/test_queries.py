"""`/v1/queries` over real HTTP: CRUD round trips and 422s that name the field."""
from __future__ import annotations

import pytest

from engine.contracts.queries import QueryRegistry
from tests.api.conftest import KEYS


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
        # when it is PUT, then it is replaced and keeps created_at
        created = http.get("/v1/queries/red").json()["created_at"]
        r = http.put("/v1/queries/red", json={"text": "the blue square"})
        assert r.status_code == 200 and r.json()["text"] == "the blue square" and r.json()["created_at"] == created
        assert r.json()["cameras"] == ["*"] and r.json()["webhooks"] == []
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
