"""What every request passes through (api/middleware.py), over real sockets: the body limit before auth, bounded
metric labels, tokens refused in URLs, and an access log without query strings."""
from __future__ import annotations

import logging
import socket

import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.middleware import KNOWN_METHODS
from tests.api.conftest import TOKENS, RunningApi, raw_request, start_api
from tests.waiting import wait_for

LIMIT = 4096


@pytest.fixture
def small_api(redis_client):
    server = start_api(redis_client, webhooks=False, max_body_bytes=LIMIT)
    yield RunningApi(server, server.url)
    server.close()


def request_labels(api: RunningApi) -> list[dict]:
    with api.client("read") as http:
        text = http.get("/metrics").text
    return [s.labels for fam in text_string_to_metric_families(text) for s in fam.samples
            if s.name == "svl_api_requests_total"]


def test_body_when_content_length_is_over_the_limit_then_413_before_any_byte_of_it_is_sent(small_api):
    # given a client that announces 50 MB and sends none of it, without a token
    with socket.create_connection(("127.0.0.1", small_api.server.port), timeout=5) as s:
        s.sendall(b"POST /v1/queries HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 50000000\r\n\r\n")
        # then the answer comes at once: 413, not 401 (nothing read, nothing parsed), and the connection closes
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 413") and b"api.max_body_bytes" in data


def test_body_when_chunked_and_passing_the_limit_then_413(small_api):
    port = small_api.server.port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"PUT /v1/queries/q1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n" + f"Authorization: Bearer {TOKENS['write']}\r\n\r\n".encode())
        chunk = b"x" * 1024
        try:
            for _ in range(LIMIT // 1024 + 4):
                s.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            s.sendall(b"0\r\n\r\n")
        except OSError:  # the server answered and closed while the body was still coming
            pass
        data = b""
        try:
            while part := s.recv(65536):
                data += part
        except ConnectionResetError:
            pass
    assert data.startswith(b"HTTP/1.1 413"), data[:200]
    # and a body within the limit is served as before
    with small_api.client("write") as http:
        assert http.put("/v1/queries/q1", json={"text": "the red circle"}).status_code == 201


def test_request_labels_when_methods_and_paths_are_arbitrary_then_bounded(api):
    port = api.server.port
    # given requests with made-up methods (one of 4 KB) and made-up paths
    for method in ("FOOBAR", "M" * 4000, "get"):
        raw_request(port, f"{method} /v1/queries HTTP/1.1\r\nAuthorization: Bearer {TOKENS['read']}")
    for n in range(5):
        raw_request(port, f"GET /no/such/path-{n} HTTP/1.1")
    with api.client("read") as http:
        assert http.get("/v1/queries/q-42").status_code == 404
    # then the counter's labels are the known methods or OTHER, and route templates or `unmatched`
    labels = request_labels(api)
    assert {lab["method"] for lab in labels} <= KNOWN_METHODS | {"OTHER"} and "OTHER" in {lab["method"] for lab in labels}
    routes = {lab["route"] for lab in labels}
    assert "unmatched" in routes and "/v1/queries/{query_id}" in routes
    assert not any("path-" in r or "q-42" in r for r in routes)
    assert len(labels) < 20


def test_token_when_in_the_query_string_then_refused_and_never_logged(api, caplog):
    caplog.set_level(logging.DEBUG)
    port = api.server.port
    for name in ("token", "access_token", "Authorization"):
        status, answer = raw_request(port, f"GET /v1/events?limit=1&{name}={TOKENS['read']} HTTP/1.1")
        assert status == 401 and b"Authorization: Bearer" in answer
    # even with a good header: the URL still carried a token
    status, _ = raw_request(port, f"GET /v1/events?token={TOKENS['admin']} HTTP/1.1\r\n"
                                  f"Authorization: Bearer {TOKENS['read']}")
    assert status == 401
    with api.client("read") as http:
        assert http.get("/v1/events", params={"limit": 1, "camera": "cam1"}).status_code == 200
    # then the server's access log has the requests (each line is written once its answer is sent), without their
    # query strings (httpx logs its own URLs)
    def served() -> str:
        return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(("api", "uvicorn")))

    wait_for(lambda: 'GET /v1/events" 401' in served() and 'GET /v1/events" 200' in served(), 5, "the access log lines")
    assert "limit=" not in served() and "camera=cam1" not in served()
    for secret in TOKENS.values():
        assert secret not in caplog.text
