"""The API under a real uvicorn on a free loopback port, against the real Redis fixture."""
from __future__ import annotations

import socket
import threading
from dataclasses import dataclass

import httpx
import pytest

from api.auth import Identity, Scope, TokenStore, digest
from api.server import ApiServer
from engine.contracts.settings import ApiSettings
from stream.keys import Keys

TOKENS = {"read": "tok-read-0123456789", "write": "tok-write-0123456789", "admin": "tok-admin-0123456789"}
KEYS = Keys(shards=4)


def token_store() -> TokenStore:
    return TokenStore(tuple((digest(t), Identity(f"test-{s}", Scope(s))) for s, t in TOKENS.items()))


def auth(scope: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[scope]}"}


@dataclass
class RunningApi:
    server: ApiServer
    url: str

    def client(self, scope: str | None = "admin", **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=auth(scope) if scope else {}, timeout=10, **kw)


def start_api(redis_client, media_dir=None, file_roots: tuple[str, ...] = (), **settings) -> ApiServer:
    s = ApiSettings(port=0, sse_heartbeat_s=settings.pop("sse_heartbeat_s", 1.0), **settings)
    return ApiServer(redis_client, KEYS, s, token_store(), threading.Event(), media_dir, file_roots=file_roots).start()


@pytest.fixture
def api(redis_client):
    server = start_api(redis_client, webhooks=False)
    yield RunningApi(server, server.url)
    server.close()


def raw_request(port: int, head: str, body: bytes = b"", timeout_s: float = 10.0) -> tuple[int, bytes]:
    """One request written byte for byte on a fresh socket (no client library normalising the path or the method),
    `Connection: close` added; returns (status, the whole response as received until the server closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.sendall(head.rstrip("\r\n").encode("latin-1") + b"\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data
