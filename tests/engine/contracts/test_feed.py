"""The durable event feed across shards: exact cursors forward, pages backward, lookups by id (real Redis)."""
from __future__ import annotations

import pytest

from engine.serving.event_store import EventStore
from engine.contracts.events import EventType
from engine.contracts.feed import Cursor, CursorError, EventFeed, EventFilter
from engine.contracts.settings import EngineSettings
from stream.keys import Keys
from tests.engine.harness import event, write

CAMERAS = ["a", "b", "c", "d", "e"]  # spread over several of the 4 shards


@pytest.fixture
def feed_setup(redis_client):
    keys = Keys("feed:", 4)
    assert len({keys.shard_of(c) for c in CAMERAS}) >= 3
    store = EventStore(redis_client, keys, EngineSettings(), "test")
    written = [event(CAMERAS[i % len(CAMERAS)], i) for i in range(40)]
    write(store, written)
    return keys, store, EventFeed(redis_client, keys), written


def ident(entries) -> list[str]:
    return [e.event.event_id for e in entries]


def test_cursor_round_trips_and_rejects_what_does_not_fit():
    c = Cursor(("0-0", "5-1", "17-0"))
    assert Cursor.decode(c.encode(), 3) == c
    assert Cursor.decode("12-3", 3) == Cursor(("12-3",) * 3)  # a plain stream id applies to every shard
    with pytest.raises(CursorError, match="2 positions; this deployment has 3 shards"):
        Cursor.decode("1-0.2-0", 3)
    with pytest.raises(CursorError, match="not a stream id"):
        Cursor.decode("x-y.1-0.1-0", 3)


@pytest.mark.parametrize("text, message", [
    ("1-0." * 10_000, "cursor too long"),
    ("5_0-0", "not a stream id"),  # int() takes it, Redis does not
    (" 5-0", "not a stream id"),
    ("+5-0", "not a stream id"),
    ("18446744073709551616-0", "not a stream id"),  # past 64 bits
    ("1" * 30 + "-0", "not a stream id"),
])
def test_cursor_decode_when_text_is_what_redis_would_refuse_then_cursor_error(text, message):
    with pytest.raises(CursorError, match=message) as err:
        Cursor.decode(text, 3)
    assert len(str(err.value)) < 200  # the client's text is never echoed whole


@pytest.mark.parametrize("since", ["inf", "-inf", "nan", "1e400", "1e12", float("inf"), float("nan"), -1.0, "abc"])
def test_parse_since_when_not_a_finite_time_in_range_then_cursor_error(redis_client, since):
    with pytest.raises(CursorError):
        EventFeed(redis_client, Keys("feed:", 2)).parse_since(since)


def test_page_when_since_is_in_the_first_hour_of_the_epoch_then_served(feed_setup):
    keys, _, feed, written = feed_setup
    entries, _ = feed.page(limit=100, flt=EventFilter(since_ts=100.0))
    assert len(entries) == len(written)


def test_following_in_small_reads_and_resuming_from_any_cursor_misses_nothing_and_repeats_nothing(feed_setup):
    keys, store, feed, written = feed_setup
    # when a reader follows the feed 7 entries at a time, resuming each time from the cursor of its last entry
    got, cursor = [], Cursor.start(keys.shards)
    while True:
        entries, _ = feed.read(cursor, count=7)
        if not entries:
            break
        got += entries[:7]
        cursor = Cursor.decode(entries[:7][-1].cursor, keys.shards)
    # then it saw every event exactly once, in the order written
    assert ident(got) == [e.event_id for e in written]
    # and resuming from the middle yields exactly the rest
    rest, _ = feed.read(Cursor.decode(got[19].cursor, keys.shards), count=100)
    assert ident(rest) == [e.event_id for e in written[20:]]


def test_filters_move_the_cursor_past_what_they_reject(feed_setup):
    keys, store, feed, written = feed_setup
    entries, cursor = feed.read(Cursor.start(keys.shards), count=100, flt=EventFilter(camera="b"))
    assert ident(entries) == [e.event_id for e in written if e.camera_id == "b"]
    write(store, [event("b", 100), event("a", 101)])
    more, _ = feed.read(cursor, count=100, flt=EventFilter(camera="b"))
    assert ident(more) == ["b-100"]


def test_following_from_the_end_yields_only_new_events(feed_setup):
    keys, store, feed, written = feed_setup
    end = feed.parse_since("$")
    assert feed.read(end, block_ms=0)[0] == []
    write(store, [event("c", 200)])
    assert ident(feed.read(end, block_ms=50)[0]) == ["c-200"]


def test_pages_newest_first_cover_the_feed_exactly_once_with_filters(feed_setup):
    keys, store, feed, written = feed_setup
    pages, before = [], None
    while True:
        page, before = feed.page(before, limit=6, flt=EventFilter(query="q1"))
        pages.append(ident(page))
        if before is None:
            break
    flat = [i for p in pages for i in p]
    assert flat == [e.event_id for e in reversed(written) if e.query_id == "q1"]
    assert all(len(p) == 6 for p in pages[:-1])
    # a page's cursor round-trips through its text form
    page, nxt = feed.page(None, limit=3)
    again, _ = feed.page(Cursor.decode(nxt.encode(), keys.shards), limit=3)
    assert ident(page) + ident(again) == [e.event_id for e in reversed(written)][:6]


def test_an_event_is_found_by_id_in_its_latest_version(feed_setup):
    keys, store, feed, written = feed_setup
    write(store, [event("d", 3, EventType.UPDATE, eid="d-3"), event("d", 3, EventType.END, eid="d-3")])
    assert feed.event("d-3").type is EventType.END
    assert feed.event("a-0").type is EventType.NEW
    assert feed.event("no-such-event") is None
