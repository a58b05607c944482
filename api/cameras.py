"""`/v1/cameras`: the camera registry (what ingest runs) joined with each camera's health.

A camera added here is started by the running ingest, one deleted is stopped (no restart). Adding and
deleting need the `admin` scope: ingest opens whatever URL a camera names. A `file://` camera is accepted
only under `ingest.file_roots` (ingest refuses the others too). Passwords in camera URLs are never returned, nor
repeated in a 422.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Path, Response
from fastapi.exceptions import RequestValidationError

from api.context import ADMIN, READ, ApiContext, ctx
from api.schemas import CameraAnswer, error_answers
from engine.contracts.settings import CameraSettings
from stream.cameras import CameraExists
from stream.health import read_health
from stream.keys import ID_PATTERN
from stream.redis_link import text
from stream.urls import file_path, redact_url, under_roots

router = APIRouter(prefix="/v1/cameras", tags=["cameras"], responses=error_answers(401, 403))
CameraId = Path(..., pattern=ID_PATTERN.pattern, description="camera id")


def _show(c: ApiContext, camera_id: str, settings: CameraSettings | None) -> dict:
    try:
        health = read_health(c.client, c.keys, camera_id)
    except ValueError:  # a malformed health hash: shown as unknown
        health = None
    out = {"id": camera_id, "registered": settings is not None, "config": None, "health": health.to_json() if health else None}
    if settings is not None:
        cfg = settings.model_dump(mode="json")
        cfg["url"] = redact_url(settings.url)
        out["config"] = cfg
    return out


def _announced(c: ApiContext) -> set[str]:
    return {text(m) for m in c.client.smembers(c.keys.cameras())}


@router.get("", dependencies=[READ], response_model=list[CameraAnswer])
def list_cameras(c: ApiContext = Depends(ctx)) -> list[dict]:
    registered = {cam.id: cam for cam in c.cameras.all()}
    ids = sorted(set(registered) | _announced(c))
    return [_show(c, cid, registered.get(cid)) for cid in ids]


@router.post("", status_code=201, dependencies=[ADMIN], response_model=CameraAnswer, responses=error_answers(409, 413, 422))
def add_camera(camera: CameraSettings, response: Response, c: ApiContext = Depends(ctx)) -> dict:
    path = file_path(camera.url)
    if path is not None and not under_roots(path, list(c.file_roots)):
        roots = ", ".join(c.file_roots) or "none configured"
        raise RequestValidationError([{"loc": ("body", "url"), "type": "value_error",
                                       "msg": f"{redact_url(camera.url)!r}: a camera added at run time may play only "
                                              f"files under ingest.file_roots ({roots})"}])
    try:
        c.cameras.add(camera, replace=False)
    except CameraExists:
        raise HTTPException(409, f"camera {camera.id!r} exists (DELETE it first)") from None
    response.headers["Location"] = f"/v1/cameras/{camera.id}"
    return _show(c, camera.id, camera)


@router.get("/{camera_id}", dependencies=[READ], response_model=CameraAnswer, responses=error_answers(404, 422))
def get_camera(camera_id: str = CameraId, c: ApiContext = Depends(ctx)) -> dict:
    settings = c.cameras.get(camera_id)
    if settings is None and camera_id not in _announced(c):
        raise HTTPException(404, f"no camera {camera_id!r}")
    return _show(c, camera_id, settings)


@router.delete("/{camera_id}", status_code=204, dependencies=[ADMIN], responses=error_answers(404, 422))
def delete_camera(camera_id: str = CameraId, c: ApiContext = Depends(ctx)) -> Response:
    if not c.cameras.remove(camera_id):
        raise HTTPException(404, f"no registered camera {camera_id!r}")
    return Response(status_code=204)
