"""What every route needs, built once by `api.app.create_app` and kept on `app.state.ctx`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import redis
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.auth import Identity, Scope, TokenStore
from engine.contracts.feed import EventFeed
from engine.contracts.queries import QueryRegistry
from engine.contracts.settings import ApiSettings
from stream.cameras import CameraRegistry
from stream.keys import Keys


@dataclass(frozen=True)
class ApiContext:
    client: redis.Redis
    keys: Keys
    settings: ApiSettings
    tokens: TokenStore
    feed: EventFeed
    queries: QueryRegistry
    cameras: CameraRegistry
    media_dir: Path | None = None  # event media (snapshots, clips) made by the media worker
    file_roots: tuple[str, ...] = ()  # ingest.file_roots: where a camera added over HTTP may read files


def ctx(request: Request) -> ApiContext:
    return request.app.state.ctx


_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <token> (scopes read < write < admin)")
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="spacevllm"'}


def require(scope: Scope):
    """A dependency: 401 without a valid token (unless reads are public), 403 when its scope is too small."""

    def check(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Identity | None:
        c = ctx(request)
        if scope is Scope.READ and c.settings.public_read:
            return None
        if creds is None or creds.scheme.lower() != "bearer":
            raise HTTPException(401, "a bearer token is required (Authorization: Bearer <token>)", headers=CHALLENGE)
        ident = c.tokens.identify(creds.credentials.strip())
        if ident is None:
            raise HTTPException(401, "invalid token", headers=CHALLENGE)
        if not ident.allows(scope):
            raise HTTPException(403, f"this token ({ident.name}, scope {ident.scope.value}) lacks the {scope.value} scope")
        return ident

    return check


READ = Depends(require(Scope.READ))
WRITE = Depends(require(Scope.WRITE))
ADMIN = Depends(require(Scope.ADMIN))
