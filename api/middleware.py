"""What every HTTP request passes through before the app reads it: one pure ASGI middleware, outermost in the app.

- Body size: a body over `api.max_body_bytes` is refused with 413 before anything reads it (FastAPI reads and
  parses a whole body before it resolves auth): a Content-Length over the limit at once, a chunked body as soon
  as the bytes that came pass it. The connection is closed after the answer.
- Tokens travel in the Authorization header only: a query string with a token-like parameter is refused (401)
  whatever the route, so a token pasted into a URL fails loudly instead of working and sitting in logs.
- `svl_api_requests_total{method, route, status}`: the method is one of the known ones or `OTHER`, the route is
  the route's template (`/v1/queries/{query_id}`) or `unmatched`, never the raw path: what a client sends adds
  no series.
- The access log (logger `api.access`, replacing uvicorn's): one line per request with the path as sent, cut at
  200 characters, and never the query string.
"""
from __future__ import annotations

import json
import logging
import time
from urllib.parse import parse_qsl

from prometheus_client import Counter
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("api.access")

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# query parameters that carry a credential when someone puts a token in a URL (compared lower-cased)
TOKEN_PARAMS = frozenset({"token", "access_token", "api_key", "apikey", "api_token", "auth", "authorization", "bearer"})
CHALLENGE = (b"www-authenticate", b'Bearer realm="spacevllm"')
MAX_LOGGED_PATH = 200


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "OTHER"


def route_label(scope: Scope) -> str:
    """The template of the route that took the request (the router writes it into the scope), else `unmatched`."""
    return getattr(scope.get("route"), "path", None) or "unmatched"


def has_token_param(query_string: bytes) -> bool:
    return any(name.lower() in TOKEN_PARAMS for name, _ in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a body passes the limit; FastAPI answers it as it answers any HTTPException."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes (api.max_body_bytes)",
                         headers={"Connection": "close"})


class RequestGuard:
    def __init__(self, app: ASGIApp, max_body_bytes: int, requests: Counter) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.requests = requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status: list[int] = []

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await _answer(send_and_note, *refusal)
            else:
                await self.app(scope, self._limited(receive), send_and_note)
        except BodyTooLarge as exc:  # a body read outside FastAPI's handler (which answers it itself)
            if status:
                raise
            await _answer(send_and_note, exc.status_code, exc.detail, (b"connection", b"close"))
        finally:
            self._record(scope, status[0] if status else 500, time.monotonic() - started)

    def _refusal(self, scope: Scope) -> tuple | None:
        """(status, detail, extra headers...) of a request refused before the app sees it, or None."""
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            return 413, BodyTooLarge(self.max_body_bytes).detail, (b"connection", b"close")
        if has_token_param(scope.get("query_string", b"")):
            return (401, "a token in the URL is refused (URLs are logged and kept in histories): send it as "
                         "Authorization: Bearer <token>", CHALLENGE)
        return None

    def _limited(self, receive: Receive) -> Receive:
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        return receive_limited

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        method = method_label(scope["method"])
        self.requests.labels(method, route_label(scope), str(status)).inc()
        path = scope.get("raw_path") or scope["path"].encode()
        shown = path[:MAX_LOGGED_PATH].decode("ascii", "backslashreplace") + ("..." if len(path) > MAX_LOGGED_PATH else "")
        client = scope.get("client")
        access_log.info('%s "%s %s" %d %.1f ms', f"{client[0]}:{client[1]}" if client else "-", method, shown, status,
                        seconds * 1000)


async def _answer(send: Send, status: int, detail: str, *headers: tuple[bytes, bytes]) -> None:
    """An ErrorAnswer (`{"detail": ...}`, api/schemas.py), sent without the app."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})
