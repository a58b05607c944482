"""The OpenAPI document describes every answer (`api/schemas.py`), and answering through those schemas leaves the
JSON exactly as the records write it."""
from __future__ import annotations

import dataclasses

import pytest

from engine.contracts.events import EndReason
from engine.contracts.queries import validate_query
from tests.api.conftest import KEYS
from tests.api.events_helpers import make_event, write_event

SUCCESS = ("200", "201", "204")


@pytest.fixture
def spec(api):
    with api.client(None) as http:
        return http.get("/openapi.json").json()


def operations(spec):
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            yield f"{method.upper()} {path}", op


def test_openapi_when_read_then_every_v1_answer_has_a_schema(spec):
    v1 = [(name, op) for name, op in operations(spec) if " /v1/" in name]
    assert len(v1) == 16
    for name, op in v1:
        ok = {code: r for code, r in op["responses"].items() if code in SUCCESS}
        assert ok, name
        for code, r in ok.items():
            if code == "204":
                assert "content" not in r, name
                continue
            content = r["content"]
            if "application/json" in content:
                assert content["application/json"]["schema"], name
            else:  # media files and the SSE stream
                assert set(content) <= {"image/jpeg", "video/mp4", "text/event-stream"}, name


def test_openapi_when_read_then_error_answers_are_ours(spec):
    for name, op in operations(spec):
        for code, r in op["responses"].items():
            ref = r.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", "")
            if code == "422":
                assert ref.endswith("/ValidationAnswer"), name
            elif code.startswith(("4", "5")) and name.split()[1] != "/readyz":
                assert ref.endswith("/ErrorAnswer"), name
        if " /v1/" in name:
            assert {"401", "403"} <= set(op["responses"]), name
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_event_answers_when_reason_absent_or_present_then_exactly_the_records_json(api, redis_client):
    plain = make_event(1)
    ended = dataclasses.replace(make_event(2, type_="end"), reason=EndReason.ENDED)
    for e in (plain, ended):
        write_event(redis_client, KEYS, e)
    with api.client("read") as http:
        assert http.get("/v1/events/e1").json() == plain.to_dict() and "reason" not in http.get("/v1/events/e1").json()
        assert http.get("/v1/events/e2").json() == ended.to_dict()
        assert http.get("/v1/events").json()["events"] == [ended.to_dict(), plain.to_dict()]


def test_query_answer_when_fetched_then_exactly_the_redacted_record(api):
    body = {"id": "q1", "text": "the red circle", "webhooks": [{"url": "http://127.0.0.1:9/h", "secret": "s"}]}
    with api.client("write") as http:
        answer = http.post("/v1/queries", json=body).json()
        assert answer == validate_query({**body, "created_at": answer["created_at"]}).to_dict(redact=True)
        assert list(answer) == list(validate_query(body).to_dict())  # the stored form's key order
