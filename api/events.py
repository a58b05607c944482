"""`/v1/events`: history (newest first, cursor paging), one event by id, and the live feed over SSE.

Everything reads the durable feed (`engine.contracts.feed.EventFeed`: one stream per shard, exact cursors):
- `GET /v1/events` pages backward: `next_cursor` goes in `cursor=` for the next (older) page.
  Entries are the feed's messages (`new`, `update`, `end`: one event id has several).
- `GET /v1/events/stream` follows forward. Every message has an `id:` line holding the feed cursor
  just after it; a client that reconnects with `Last-Event-ID` (EventSource does it by itself) gets
  every later message once: nothing missed, nothing twice. Without one it starts at `since`
  (a cursor, Unix seconds, `0` for everything, `$`/absent for only new). Heartbeats are SSE comments
  (`: heartbeat`) every `api.sse_heartbeat_s`. At most `api.max_streams` streams are open at once (503 beyond);
  each holds its slot from its handler until its response ends, however it ends (see `SlotResponse`).
"""
from __future__ import annotations

import time

import anyio
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse

from api.context import READ, ApiContext, ctx
from api.schemas import EventAnswer, EventPage, error_answers
from engine.contracts.events import EventType
from engine.contracts.feed import MAX_UNIX_S, Cursor, CursorError, EventFilter, FeedFollower
from stream.keys import ID_PATTERN

router = APIRouter(prefix="/v1/events", tags=["events"], responses=error_answers(401, 403))


def _filter(camera, query, type_: EventType | None, since, until) -> EventFilter:
    return EventFilter(camera=camera, query=query, type=type_.value if type_ else None, since_ts=since, until_ts=until)


def _bad(field: str, msg: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("query", field), "msg": msg, "type": "value_error"}])


@router.get("", dependencies=[READ], response_model=EventPage, response_model_exclude_unset=True,
            responses=error_answers(422))
def list_events(camera: str | None = Query(None, pattern=ID_PATTERN.pattern),
                query: str | None = Query(None, pattern=ID_PATTERN.pattern),
                type: EventType | None = Query(None, description="new | update | end"),
                since: float | None = Query(None, ge=0, le=MAX_UNIX_S, allow_inf_nan=False,
                                            description="events whose end_ts >= since (Unix seconds)"),
                until: float | None = Query(None, ge=0, le=MAX_UNIX_S, allow_inf_nan=False,
                                            description="events whose start_ts <= until (Unix seconds)"),
                limit: int = Query(100, ge=1, le=1000),
                cursor: str | None = Query(None, description="next_cursor of the previous page"),
                c: ApiContext = Depends(ctx)) -> dict:
    try:
        before = Cursor.decode(cursor, c.keys.shards) if cursor else None
    except CursorError as exc:
        raise _bad("cursor", str(exc)) from None
    entries, nxt = c.feed.page(before, limit, _filter(camera, query, type, since, until))
    return {"events": [e.event.to_dict() for e in entries], "next_cursor": nxt.encode() if nxt else None}


class StreamSlots:
    """The SSE streams this process holds open, at most `limit` (api.max_streams). A plain counter on the event loop's
    thread: a handler checks and takes a slot with no await between, so a burst cannot overshoot the limit, and
    giving a slot back needs no particular task (a client that vanishes ends its stream from whichever task notices).
    Each stream's blocking Redis reads run on threads of its own limiter, so open streams never hold the threads
    that the other routes run on."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self._readers: anyio.CapacityLimiter | None = None

    def take(self) -> "StreamSlot | None":
        if self.open >= self.limit:
            return None
        self.open += 1
        return StreamSlot(self)

    def readers(self) -> anyio.CapacityLimiter:
        if self._readers is None:  # made inside the event loop, on first use
            self._readers = anyio.CapacityLimiter(self.limit)
        return self._readers


class StreamSlot:
    def __init__(self, slots: StreamSlots) -> None:
        self._slots: StreamSlots | None = slots

    def release(self) -> None:
        """Idempotent: the response and its generator both call it, whichever ends first gives the slot back."""
        slots, self._slots = self._slots, None
        if slots is not None:
            slots.open -= 1


class SlotResponse(StreamingResponse):
    """A stream that gives its slot back however it ends: the generator done, the client gone (before the first byte
    or mid-stream), the server stopping, or an error. The generator is closed here too, so it never lingers until
    the garbage collector finalizes it from another task."""

    def __init__(self, content, slot: StreamSlot, **kwargs) -> None:
        super().__init__(content, **kwargs)
        self.slot = slot

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()


@router.get("/stream", dependencies=[READ], response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "server-sent events"},
                       **error_answers(422, 503)})
async def stream_events(request: Request,
                        camera: str | None = Query(None, pattern=ID_PATTERN.pattern),
                        query: str | None = Query(None, pattern=ID_PATTERN.pattern),
                        type: EventType | None = Query(None),
                        since: str | None = Query(None, description="cursor, Unix seconds, '0' (all) or '$' (only new, default)"),
                        last_event_id: str | None = Header(None, alias="Last-Event-ID"),
                        c: ApiContext = Depends(ctx)) -> StreamingResponse:
    try:
        if last_event_id:
            cursor = Cursor.decode(last_event_id, c.keys.shards)
        else:
            cursor = await anyio.to_thread.run_sync(c.feed.parse_since, since)
    except CursorError as exc:
        raise _bad("Last-Event-ID" if last_event_id else "since", str(exc)) from None
    slots: StreamSlots = request.app.state.stream_slots
    flt = _filter(camera, query, type, None, None)
    block_ms = int(min(1.0, c.settings.sse_heartbeat_s) * 1000)
    follower = FeedFollower(c.feed, start=cursor, flt=flt, count=100)  # the client keeps the position (Last-Event-ID)
    slot = slots.take()  # the last step before the response: from here on, only the response gives it back
    if slot is None:
        raise HTTPException(503, f"too many event streams open (api.max_streams = {c.settings.max_streams})")

    async def messages():
        try:
            yield "retry: 2000\n: connected\n\n"
            last_beat = time.monotonic()
            while not await request.is_disconnected():
                entries = await anyio.to_thread.run_sync(follower.read, block_ms, limiter=slots.readers())
                follower.commit()
                for e in entries:
                    yield f"id: {e.cursor}\ndata: {e.event.to_json()}\n\n"
                if entries:
                    last_beat = time.monotonic()
                elif time.monotonic() - last_beat >= c.settings.sse_heartbeat_s:
                    yield f": heartbeat {time.time():.3f}\n\n"
                    last_beat = time.monotonic()
        finally:
            slot.release()

    return SlotResponse(messages(), slot, media_type="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/{event_id}", dependencies=[READ], response_model=EventAnswer, response_model_exclude_unset=True,
            responses=error_answers(404, 422))
def get_event(event_id: str, c: ApiContext = Depends(ctx)) -> dict:
    e = c.feed.event(event_id)
    if e is None:
        raise HTTPException(404, f"no event {event_id!r} (unknown, or older than the event retention)")
    return e.to_dict()
