"""The Python SDK against a real Redis: queries, and events read with a cursor that resumes exactly."""
from __future__ import annotations

from engine.contracts.client import GroundingClient
from engine.serving.event_store import EventStore
from engine.contracts.settings import EngineSettings
from stream.keys import Keys
from tests.engine.harness import event, write


def test_events_resume_from_the_cursor_the_sdk_hands_out(redis_client):
    keys = Keys("sdk:")
    sdk = GroundingClient(redis_client, keys)
    q = sdk.add_query("the red circle moving right", cameras=["a"], query_id="red")
    assert [x.id for x in sdk.list_queries()] == [q.id] == ["red"]
    store = EventStore(redis_client, keys, EngineSettings(), "test")
    write(store, [event(c, i) for i, c in enumerate("abcab")])
    # when a client reads two events and keeps the cursor of the second
    first = list(sdk.events(since="0", block_ms=0, limit=2, stop_when_idle=True))
    cursor = first[-1][0]
    write(store, [event("c", 9)])
    # then resuming from it yields the rest, once, including what was written since
    rest = list(sdk.events(since=cursor, block_ms=0, stop_when_idle=True))
    assert [e.event_id for _, e in first + rest] == ["a-0", "b-1", "c-2", "a-3", "b-4", "c-9"]
    # and a camera filter reads only that camera
    assert [e.event_id for _, e in sdk.events(since="0", camera="a", block_ms=0, stop_when_idle=True)] == ["a-0", "a-3"]
    assert sdk.remove_query("red") and sdk.list_queries() == []
