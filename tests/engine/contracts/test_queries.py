from __future__ import annotations

import json

import pytest

from dataclasses import fields

from engine.contracts.queries import QueryError, QueryRegistry, QuerySpec, StandingQuery, validate_query
from stream.keys import Keys


@pytest.mark.parametrize(
    "data, message",
    [
        ({}, "text: required"),
        ({"text": ""}, "text: must be 1-256 characters"),
        ({"text": "   "}, "text: must be 1-256 characters"),
        ({"text": "x" * 257}, "text: must be 1-256 characters"),
        ({"text": "the red\x00 circle"}, "control characters"),
        ({"text": "the red\ncircle"}, "control characters"),
        ({"text": "ok", "id": "has space"}, "invalid query id"),
        ({"text": "ok", "id": "x" * 65}, "invalid query id"),
        ({"text": "ok", "cameras": ["cam/1"]}, "cameras: invalid camera id"),
        ({"text": "ok", "cameras": []}, "cameras: a non-empty list"),
        ({"text": "ok", "threshold": 1.5}, "threshold: must be in"),
        ({"text": "ok", "threshold": -0.1}, "threshold: must be in"),
        ({"text": "ok", "threshold": "high"}, "threshold: must be a number"),
        ({"text": "ok", "threshold": float("nan")}, "threshold: must be a number"),
        ({"text": "ok", "cooldown_s": -1}, "cooldown_s: must be >= 0"),
        ({"text": "ok", "min_duration_s": -1}, "min_duration_s: must be >= 0"),
        ({"text": "ok", "colour": "red"}, "colour: unknown field"),
        ({"text": "ok", "cooldown_s": 1e308}, "cooldown_s: must be at most 3600 s"),
        ({"text": "ok", "cooldown_s": float("inf")}, "cooldown_s: must be a number"),
        ({"text": "ok", "min_duration_s": 3601}, "min_duration_s: must be at most 3600 s"),
        ({"text": "ok", "created_at": float("nan")}, "created_at: Input should be a finite number"),
        ({"text": "ok", "created_at": float("inf")}, "created_at: Input should be a finite number"),
        ({"text": "ok", "created_at": -1}, "created_at: Input should be greater than or equal to 0"),
        ({"text": "ok", "cameras": [f"c{n}" for n in range(257)]}, "cameras: at most 256 camera ids"),
        ({"text": "x" * 100_000}, "text: must be 1-256 characters"),
    ],
)
def test_validate_query_rejects_with_a_clear_message(data, message):
    with pytest.raises(QueryError, match=message):
        validate_query(data)


def test_validate_query_trims_and_fills_defaults():
    q = validate_query({"text": "  the red   circle ", "id": "q1"}, now=5.0)
    assert (q.text, q.cameras, q.threshold, q.created_at) == ("the red circle", ("*",), None, 5.0)
    assert q.applies_to("anything")
    assert validate_query({"text": "x", "cameras": "c1"}).applies_to("c1") and not validate_query({"text": "x", "cameras": "c1"}).applies_to("c2")


def test_standing_query_has_the_specs_fields_in_its_order_and_its_defaults():
    assert [f.name for f in fields(StandingQuery)] == list(QuerySpec.model_fields)
    spec, q = QuerySpec(text="x"), StandingQuery("q1", "x")
    assert (q.cameras, q.threshold, q.min_duration_s, q.cooldown_s) == (tuple(spec.cameras), spec.threshold,
                                                                        spec.min_duration_s, spec.cooldown_s)


def test_stored_query_json_when_written_before_loads_and_is_written_back_the_same(redis_client):
    # the JSON a registry stored (HSET <queries> id json), byte for byte
    stored = ('{"id": "red", "text": "the red circle", "cameras": ["cam1"], "threshold": 0.6, "min_duration_s": 0.0, '
              '"cooldown_s": 4.0, "created_at": 1700000000.0, "webhooks": [{"url": "http://127.0.0.1:9/hook", "secret": "s"}]}')
    redis_client.hset(Keys().queries(), "red", stored)
    reg = QueryRegistry(redis_client, Keys())
    q = reg.get("red")
    assert q.cameras == ("cam1",) and q.webhooks[0].secret == "s" and q.created_at == 1700000000.0
    reg.add(q)
    assert redis_client.hget(Keys().queries(), "red").decode() == stored


def test_registry_add_list_remove_and_announce(redis_client):
    reg = QueryRegistry(redis_client, Keys())
    sub = redis_client.pubsub(ignore_subscribe_messages=True)
    sub.subscribe(Keys().queries_changed())
    sub.get_message(timeout=1)
    reg.add(validate_query({"text": "the red circle", "id": "q1"}))
    msg = sub.get_message(timeout=2)
    assert json.loads(msg["data"]) == {"op": "add", "id": "q1"}
    assert [q.id for q in reg.all()] == ["q1"]
    assert reg.remove("q1") and not reg.remove("q1")
    assert reg.all() == []
    sub.close()


def test_registry_skips_a_malformed_stored_query(redis_client):
    redis_client.hset(Keys().queries(), "bad", "{not json")
    assert QueryRegistry(redis_client, Keys()).all() == []


def test_registry_needs_a_client():
    with pytest.raises(TypeError):
        QueryRegistry(None, Keys())


def test_stored_query_when_over_a_limit_added_since_then_still_readable(redis_client):
    # a record written before the maxima existed stays in service (a vanished query would be a silent outage)
    data = {"id": "old", "text": "x", "cameras": [f"c{n}" for n in range(300)], "cooldown_s": 7200.0, "created_at": 1.0}
    redis_client.hset(Keys().queries(), "old", json.dumps(data))
    q = QueryRegistry(redis_client, Keys()).get("old")
    assert q.cooldown_s == 7200.0 and len(q.cameras) == 300
    with pytest.raises(QueryError):
        validate_query(data)  # but a new one is refused
    redis_client.hset(Keys().queries(), "nan", json.dumps({**data, "id": "nan", "cooldown_s": float("nan")}))
    assert [q.id for q in QueryRegistry(redis_client, Keys()).all()] == ["old"]  # non-finite: never
