"""Event media and live previews: `GET /v1/events/{id}/snapshot.jpg`, `/clip.mp4` (HTTP range requests, so players
seek), `/media` (the event's media status: what exists, what is missing and why), and
`GET /v1/cameras/{id}/latest.jpg` (the newest preview frame; its capture time in `X-Frame-Ts`).

The files are made by the media worker (`engine/media/worker.py`) under the media directory this API is given
(`media.dir`, default `<data_dir>/media`); previews are read from Redis. All need the `read` scope: a page
fetches them with its bearer token and shows them through blob URLs (see api/static/app.js).
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Path, Response
from fastapi.responses import FileResponse

from api.context import READ, ApiContext, ctx
from api.schemas import MediaStatus, error_answers
from engine.media.store import CLIP, SNAPSHOT, MediaStore
from stream.keys import ID_PATTERN
from stream.store import preview_times

router = APIRouter(tags=["media"], responses=error_answers(401, 403, 404, 422))
EventId = Path(..., pattern=ID_PATTERN.pattern, description="event id")
CameraId = Path(..., pattern=ID_PATTERN.pattern, description="camera id")


def _store(c: ApiContext) -> MediaStore:
    if c.media_dir is None:
        raise HTTPException(404, "event media is not configured on this API (media.dir)")
    return MediaStore(c.media_dir)


def _file(c: ApiContext, event_id: str, name: str, kind: str, media_type: str) -> FileResponse:
    store = _store(c)
    path = store.path(event_id, name)
    if not path.is_file():
        part = (store.status(event_id) or {}).get(kind) or {}
        detail = f"no {kind} for event {event_id!r}"
        if part.get("state"):
            detail += f": {part['state']}" + (f" ({part['reason']})" if part.get("reason") else "")
        raise HTTPException(404, detail)
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=5"})


@router.get("/v1/events/{event_id}/snapshot.jpg", dependencies=[READ], response_class=FileResponse,
            responses={200: {"content": {"image/jpeg": {}}}})
def snapshot(event_id: str = EventId, c: ApiContext = Depends(ctx)) -> FileResponse:
    """The event's best frame, box and caption drawn (replaced while the event's score improves)."""
    return _file(c, event_id, SNAPSHOT, "snapshot", "image/jpeg")


@router.get("/v1/events/{event_id}/clip.mp4", dependencies=[READ], response_class=FileResponse,
            responses={200: {"content": {"video/mp4": {}}}, 206: {"description": "a byte range (Range: bytes=...)"}})
def clip(event_id: str = EventId, c: ApiContext = Depends(ctx)) -> FileResponse:
    """The event's clip (H.264 MP4, made when it ends), with pre/post padding; supports `Range`."""
    return _file(c, event_id, CLIP, "clip", "video/mp4")


@router.get("/v1/events/{event_id}/media", dependencies=[READ], response_model=MediaStatus,
            response_model_exclude_unset=True)
def media_status(event_id: str = EventId, c: ApiContext = Depends(ctx)) -> dict:
    """What the media worker made for this event: snapshot and clip state (`ok`, `pending`, `missing` with a reason),
    the clip's span, frames and missing frames (expired previews)."""
    st = _store(c).status(event_id)
    if st is None:
        raise HTTPException(404, f"no media for event {event_id!r} (none yet, or removed by retention)")
    st.pop("end_event", None)
    return st


@router.get("/v1/cameras/{camera_id}/latest.jpg", dependencies=[READ], response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}})
def latest_preview(camera_id: str = CameraId, c: ApiContext = Depends(ctx)) -> Response:
    """The camera's newest preview frame; `X-Frame-Ts` is its capture time (Unix seconds)."""
    for ts_ms in preview_times(c.client, c.keys, camera_id, latest=True):
        data = c.client.get(c.keys.preview(camera_id, ts_ms))
        if data is not None:
            return Response(data, media_type="image/jpeg",
                            headers={"X-Frame-Ts": f"{ts_ms / 1000:.3f}", "Cache-Control": "no-store"})
    raise HTTPException(404, f"no preview of camera {camera_id!r} (not running, or windows.preview_size is 0)")
