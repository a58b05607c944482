"""The FastAPI application: routers, error shape, health, metrics. Built by `create_app`; served by
`api.server` under uvicorn. OpenAPI at `/openapi.json` (every answer's schema is in `api/schemas.py`),
interactive docs at `/docs`."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import redis
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api import cameras, dashboard, events, media, queries
from api.auth import TokenStore
from api.context import READ, ApiContext, ctx
from api.events import StreamSlots
from api.metrics import build_registry
from api.middleware import RequestGuard
from api.schemas import Health, Readiness, error_answers
from engine.contracts.errors import error_list
from engine.contracts.feed import EventFeed
from engine.contracts.queries import QueryRegistry
from engine.contracts.settings import ApiSettings
from stream.cameras import CameraRegistry
from stream.keys import Keys
from stream.redis_link import text
from stream.role import ROLES, StatusBoard, require_client

log = logging.getLogger(__name__)

REQUIRED_ROLES = ("engine", "ingest")  # without one of each, nothing is grounded


def create_app(client: redis.Redis, keys: Keys, settings: ApiSettings | None = None, tokens: TokenStore | None = None,
               media_dir: str | Path | None = None, file_roots: tuple[str, ...] = ()) -> FastAPI:
    """`file_roots`: ingest.file_roots, the directories whose files a camera added here may play."""
    require_client(client, "create_app")
    settings = settings or ApiSettings()
    app = FastAPI(title="SpaceVLLM grounding service", version="1",
                  description="Standing natural-language queries on live cameras; grounding events (when and where).")
    app.state.ctx = ApiContext(client, keys, settings, tokens or TokenStore(), EventFeed(client, keys),
                               QueryRegistry(client, keys), CameraRegistry(client, keys),
                               Path(media_dir) if media_dir else None, tuple(file_roots))
    app.state.stream_slots = slots = StreamSlots(settings.max_streams)

    def camera_ids() -> set[str]:
        announced = {text(m) for m in client.smembers(keys.cameras())}
        return announced | {c.id for c in app.state.ctx.cameras.all()}

    registry, requests = build_registry(client, keys, camera_ids, lambda: slots.open)
    app.add_middleware(RequestGuard, max_body_bytes=settings.max_body_bytes, requests=requests)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": error_list(exc.errors())}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # a body FastAPI cannot even decode (not UTF-8) is invalid input like any other: the same 422 shape
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            return JSONResponse({"detail": [{"loc": ["body"], "msg": "the body is not valid JSON text (UTF-8)",
                                             "type": "json_invalid"}]}, status_code=422)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.get("/healthz", tags=["health"], response_model=Health)
    def healthz() -> dict:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], response_model=Readiness,
             responses={503: {"model": Readiness, "description": "not ready (the answer says what is missing)"}})
    def readyz(c: ApiContext = Depends(ctx)) -> JSONResponse:
        """Redis reachable, at least one engine and one ingest worker with a fresh heartbeat, and no role that its
        supervisor reports restarting or down (`down` names each, with its error)."""
        out: dict = {"redis": False, "workers": {}, "down": []}
        try:
            c.client.ping()
            out["redis"] = True
            for role in ROLES:
                out["workers"][role] = sum(1 for _ in c.client.scan_iter(keys.heartbeat_pattern(role), count=100))
            out["down"] = [{"role": s.role, "state": s.state, "error": s.error, "restarts": s.restarts, "since": s.since,
                            "supervisor": s.supervisor}
                           for s in StatusBoard.read(c.client, keys) if s.state != "running"]
        except redis.RedisError as exc:
            out["error"] = f"Redis unavailable: {type(exc).__name__}"
        ready = out["redis"] and all(out["workers"].get(r, 0) > 0 for r in REQUIRED_ROLES) and not out["down"]
        out["status"] = "ready" if ready else "not ready"
        return JSONResponse(out, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["health"], dependencies=[READ], response_class=Response,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **error_answers(401, 403)})
    def metrics() -> Response:
        """Prometheus text exposition (see api/metrics.py for the names)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(queries.router)
    app.include_router(cameras.router)
    app.include_router(media.router)  # before events: /v1/events/{id}/... paths
    app.include_router(events.router)
    dashboard.mount(app)
    app.state.started = time.time()
    return app
