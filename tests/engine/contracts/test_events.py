"""The event lifecycle, pure: given a state and one window's observation, then the next state and events."""
from __future__ import annotations

from engine.contracts.events import Box, EndReason, EventState, EventType, GroundingEvent, Observation, advance, close
from engine.contracts.queries import validate_query

Q = validate_query({"id": "q1", "text": "the red circle", "cooldown_s": 4.0, "min_duration_s": 1.0})


def obs(win: int, span=None, score=0.9):
    boxes = () if span is None else (Box(span[0], (1, 2, 3, 4)),)
    return Observation(f"cam:{win}", win, win + 8, score, span, boxes, (320, 240))


def test_no_match_without_an_event_does_nothing():
    st, evs = advance(EventState(), obs(0), Q, "cam", "tiny")
    assert st == EventState() and evs == []


def test_a_blip_shorter_than_min_duration_is_not_published_and_ends_silently():
    st, evs = advance(EventState(), obs(0, (2.0, 2.5)), Q, "cam", "tiny")
    assert st.open and not st.published and evs == []
    st, evs = advance(st, obs(10), Q, "cam", "tiny")
    assert not st.open and evs == []


def test_new_then_update_then_end_after_cooldown():
    st, evs = advance(EventState(), obs(0, (2.0, 6.0)), Q, "cam", "tiny")
    assert [e.type for e in evs] == [EventType.NEW]
    first_id = evs[0].event_id
    st, evs = advance(st, obs(2, (3.0, 9.0), score=0.95), Q, "cam", "tiny")
    assert [e.type for e in evs] == [EventType.UPDATE]
    assert (evs[0].start_ts, evs[0].end_ts, evs[0].score, evs[0].event_id) == (2.0, 9.0, 0.95, first_id)
    assert len(evs[0].boxes) == 2
    st, evs = advance(st, obs(4, (3.0, 9.0), score=0.95), Q, "cam", "tiny")  # nothing new: no event
    assert evs == []
    st, evs = advance(st, obs(6), Q, "cam", "tiny")  # 14 - 9 >= cooldown 4
    assert [e.type for e in evs] == [EventType.END] and evs[0].end_ts == 9.0 and not st.open
    assert evs[0].reason is EndReason.ENDED and evs[0].to_dict()["reason"] == "ended"


def test_event_ids_are_deterministic_and_events_round_trip():
    a = advance(EventState(), obs(0, (2.0, 6.0)), Q, "cam", "tiny")[1][0]
    b = advance(EventState(), obs(0, (2.0, 6.0)), Q, "cam", "tiny")[1][0]
    assert a.event_id == b.event_id
    assert GroundingEvent.from_dict(a.to_dict()).to_dict() == a.to_dict()
    assert a.to_dict()["schema"] == 1 and a.to_dict()["frame_size"] == [320, 240]


def test_close_ends_a_published_event_and_state_round_trips():
    st, _ = advance(EventState(), obs(0, (2.0, 6.0)), Q, "cam", "tiny")
    assert EventState.from_json(st.to_json()) == st
    st2, evs = close(st, Q.id, "cam", "cam:stopped", "tiny", EndReason.QUERY_REMOVED)
    assert [e.type for e in evs] == [EventType.END] and not st2.open
    # the end names its reason and the text the event was opened for, and round-trips with it
    assert evs[0].reason is EndReason.QUERY_REMOVED and evs[0].query_text == Q.text
    assert GroundingEvent.from_dict(evs[0].to_dict()) == evs[0]
    # only `end` events carry a reason
    new = advance(EventState(), obs(0, (2.0, 6.0)), Q, "cam", "tiny")[1][0]
    assert "reason" not in new.to_dict()
