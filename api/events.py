"""`/v1/events`: history (newest first, cursor paging), one event by id, and the live feed over SSE.

Everything reads the durable feed (`engine.contracts.feed.EventFeed`: one stream per shard, exact cursors):
- `GET /v1/events` pages backward: `next_cursor` goes in `cursor=` for the next (older) page.
  Entries are the feed's messages (`new`, `update`, `end`: one event id has several).
- `GET /v1/events/stream` follows forward. Every message has an `id:` line holding the feed cursor
  just after it; a client that reconnects with `Last-Event-ID` (EventSource does it by itself) gets
  every later message once: nothing missed, nothing twice. Without one it starts at `since`
  (a cursor, Unix seconds, `0` for everything, `$`/absent for only new). Heartbeats are SSE comments
  (`: heartbeat`) every `api.sse_heartbeat_s`.
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
from engine.contracts.feed import Cursor, CursorError, EventFilter, FeedFollower
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
                since: float | None = Query(None, description="events whose end_ts >= since (Unix seconds)"),
                until: float | None = Query(None, description="events whose start_ts <= until (Unix seconds)"),
                limit: int = Query(100, ge=1, le=1000),
                cursor: str | None = Query(None, description="next_cursor of the previous page"),
                c: ApiContext = Depends(ctx)) -> dict:
    try:
        before = Cursor.decode(cursor, c.keys.shards) if cursor else None
    except CursorError as exc:
        raise _bad("cursor", str(exc)) from None
    entries, nxt = c.feed.page(before, limit, _filter(camera, query, type, since, until))
    return {"events": [e.event.to_dict() for e in entries], "next_cursor": nxt.encode() if nxt else None}


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
    limiter = request.app.state.stream_limiter()
    if limiter.borrowed_tokens >= limiter.total_tokens:
        raise HTTPException(503, f"too many event streams open (api.max_streams = {c.settings.max_streams})")
    flt = _filter(camera, query, type, None, None)
    block_ms = int(min(1.0, c.settings.sse_heartbeat_s) * 1000)

    follower = FeedFollower(c.feed, start=cursor, flt=flt, count=100)  # the client keeps the position (Last-Event-ID)

    async def messages():
        yield "retry: 2000\n: connected\n\n"
        last_beat = time.monotonic()
        async with limiter:
            while not await request.is_disconnected():
                entries = await anyio.to_thread.run_sync(follower.read, block_ms)
                follower.commit()
                for e in entries:
                    yield f"id: {e.cursor}\ndata: {e.event.to_json()}\n\n"
                if entries:
                    last_beat = time.monotonic()
                elif time.monotonic() - last_beat >= c.settings.sse_heartbeat_s:
                    yield f": heartbeat {time.time():.3f}\n\n"
                    last_beat = time.monotonic()

    return StreamingResponse(messages(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/{event_id}", dependencies=[READ], response_model=EventAnswer, response_model_exclude_unset=True,
            responses=error_answers(404, 422))
def get_event(event_id: str, c: ApiContext = Depends(ctx)) -> dict:
    e = c.feed.event(event_id)
    if e is None:
        raise HTTPException(404, f"no event {event_id!r} (unknown, or older than the event retention)")
    return e.to_dict()
