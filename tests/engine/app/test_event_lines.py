"""`up` prints one line per event; an UPDATE says what changed since the event's line before, never a span that
looks unchanged."""
from __future__ import annotations

from engine.app.service import EventLines, format_event
from engine.contracts.events import Box, EventType, GroundingEvent

T = 1_700_000_000.0


def event(type_: str, end: float, score: float = 0.61, boxes: int = 2, start: float = T) -> GroundingEvent:
    return GroundingEvent(EventType(type_), "e1", "red", "demo", "the red circle", score, start, end,
                          tuple(Box(T + k * 0.5, (10.0, 20.0, 30.0, 40.0)) for k in range(boxes)), (320, 240), "demo:w",
                          "test")


def test_event_lines_when_an_update_moves_the_end_a_little_then_the_line_says_so():
    lines = EventLines()
    lines(event("new", T + 2.0))
    line = lines(event("update", T + 2.04, score=0.72, boxes=3))
    assert line.startswith("2023-11-14 22:13:22.0 UPDATE camera=demo query=red \"the red circle\" ")
    assert "span end +0.04 s -> 22:13:22.0 (2.0 s)" in line and "score 0.61 -> 0.72" in line and "+1 box (3)" in line
    assert "span=" not in line and "\n" not in line


def test_event_lines_when_consecutive_updates_then_each_is_against_the_one_before():
    lines = EventLines()
    lines(event("new", T + 2.0))
    lines(event("update", T + 3.0, boxes=4))
    assert lines(event("update", T + 3.5, boxes=5)).endswith("span end +0.50 s -> 22:13:23.5 (3.5 s), +1 box (5)")


def test_event_lines_when_only_the_score_moves_below_the_shown_precision_then_still_not_a_blank_change():
    lines = EventLines()
    lines(event("new", T + 2.0, score=0.611))
    assert lines(event("update", T + 2.0, score=0.612)).endswith("score 0.61 (changed below the shown precision)")


def test_event_lines_when_an_update_comes_without_its_new_then_the_full_line():
    e = event("update", T + 2.0)
    assert EventLines()(e) == format_event(e) and "span=22:13:20.0-22:13:22.0 (2.0 s)" in format_event(e)


def test_event_lines_when_the_event_ends_then_forgotten():
    lines = EventLines()
    lines(event("new", T + 2.0))
    assert lines(event("end", T + 2.0)).split()[2] == "END"
    assert lines.last == {}
