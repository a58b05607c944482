"""The auth matrix over real HTTP: no token, wrong token, too small a scope, enough scope; 401 vs 403;
public reads; the exposure rule; no token in any log line."""
from __future__ import annotations

import json
import logging
import threading
import time

import httpx
import pytest

from api.auth import Identity, Scope, TokenStore, add_token, digest
from api.server import ApiServer, ExposureError, check_exposure
from engine.contracts.settings import ApiSettings
from tests.api.conftest import KEYS, TOKENS, auth, start_api
from tests.waiting import wait_for

CAMERA = {"id": "cam9", "url": "synthetic://demo?fps=5"}
QUERY = {"id": "q1", "text": "the red circle"}

# (method, path, body, scope needed)
ROUTES = [
    ("GET", "/v1/queries", None, "read"),
    ("GET", "/v1/events?limit=1", None, "read"),
    ("GET", "/v1/cameras", None, "read"),
    ("GET", "/metrics", None, "read"),
    ("POST", "/v1/queries", QUERY, "write"),
    ("PUT", "/v1/queries/q2", {"text": "x"}, "write"),
    ("DELETE", "/v1/queries/q1", None, "write"),
    ("POST", "/v1/cameras", CAMERA, "admin"),
    ("DELETE", "/v1/cameras/cam9", None, "admin"),
]
ORDER = ["read", "write", "admin"]


@pytest.mark.parametrize("method, path, body, needed", ROUTES)
def test_routes_when_token_missing_wrong_too_small_or_enough(api, method, path, body, needed):
    def call(headers):
        with httpx.Client(base_url=api.url, timeout=10) as http:
            return http.request(method, path, json=body, headers=headers)

    # given no token: 401 with a Bearer challenge
    r = call({})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    # given a wrong token: 401
    assert call({"Authorization": "Bearer nope-not-a-token"}).status_code == 401
    assert call({"Authorization": f"Basic {TOKENS['admin']}"}).status_code == 401
    for scope in ORDER:
        r = call(auth(scope))
        if ORDER.index(scope) < ORDER.index(needed):
            # given a token whose scope is too small: 403
            assert r.status_code == 403, (scope, r.text)
        else:
            # given enough scope: not an auth error
            assert r.status_code not in (401, 403), (scope, r.text)


def test_reads_when_public_read_then_no_token_needed_but_writes_still_do(redis_client):
    server = start_api(redis_client, webhooks=False, public_read=True)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            assert http.get("/v1/queries").status_code == 200
            assert http.get("/metrics").status_code == 200
            assert http.post("/v1/queries", json=QUERY).status_code == 401
    finally:
        server.close()


def test_health_when_no_token_then_open(api):
    with httpx.Client(base_url=api.url, timeout=10) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get("/readyz").status_code in (200, 503)
        assert http.get("/openapi.json").json()["info"]["title"]


@pytest.mark.parametrize("host, tokens, refused", [
    ("127.0.0.1", TokenStore(), False),
    ("::1", TokenStore(), False),
    ("localhost", TokenStore(), False),
    ("0.0.0.0", TokenStore(), True),
    ("10.1.2.3", TokenStore(), True),
    ("0.0.0.0", TokenStore.load(None, {"SVL_API_TOKEN": "x"}), False),
])
def test_check_exposure_when_not_loopback_without_tokens_then_refused(host, tokens, refused):
    if refused:
        with pytest.raises(ExposureError, match=f"refusing to serve the API on {host} without tokens"):
            check_exposure(host, tokens)
    else:
        check_exposure(host, tokens)


def test_api_server_when_all_interfaces_and_no_tokens_then_refuses_to_start(redis_client):
    with pytest.raises(ExposureError):
        ApiServer(redis_client, KEYS, ApiSettings(host="0.0.0.0", port=0), TokenStore(), threading.Event())


def test_token_store_when_file_and_environment_then_hashed_and_scoped(tmp_path):
    path = tmp_path / "tokens.json"
    token = add_token(path, "grafana", Scope.READ)
    assert token not in path.read_text() and digest(token) in path.read_text()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    store = TokenStore.load(path, {"SVL_API_TOKEN": "env-admin"})
    assert store.identify(token).scope is Scope.READ and store.identify(token).name == "grafana"
    assert store.identify("env-admin").scope is Scope.ADMIN
    assert store.identify("other") is None and store.identify("") is None


def test_logs_when_requests_with_good_and_bad_tokens_then_no_token_appears(redis_client, caplog):
    caplog.set_level(logging.DEBUG)
    server = start_api(redis_client, webhooks=False)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for scope in ORDER:
                http.post("/v1/queries", json=QUERY, headers=auth(scope))
                http.post("/v1/cameras", json=CAMERA, headers=auth(scope))
            http.get("/v1/queries", headers={"Authorization": "Bearer wrong-token-abcdef"})
    finally:
        server.close()
    text = caplog.text
    assert "POST /v1/queries" in text  # the access log was captured
    for secret in [*TOKENS.values(), "wrong-token-abcdef"]:
        assert secret not in text


def test_token_file_when_changed_while_serving_then_new_tokens_work_and_removed_ones_stop(redis_client, tmp_path):
    # given an API serving the tokens of a file, with one token in it
    path = tmp_path / "tokens.json"
    first = add_token(path, "grafana", Scope.READ)
    server = ApiServer(redis_client, KEYS, ApiSettings(port=0, webhooks=False), TokenStore.load(path, {}),
                       threading.Event()).start()
    try:
        def status(token: str) -> int:
            with httpx.Client(base_url=server.url, timeout=10) as http:
                return http.get("/v1/queries", headers={"Authorization": f"Bearer {token}"}).status_code

        assert status(first) == 200
        # when `spacevllm token create` adds one, then it works at once, without a restart
        second = add_token(path, "ci", Scope.WRITE)
        assert status(second) == 200
        # when a token is taken out of the file, then it stops working (the file is checked at most every second)
        data = json.loads(path.read_text())
        path.write_text(json.dumps({"tokens": [t for t in data["tokens"] if t["name"] != "grafana"]}))
        wait_for(lambda: status(first) == 401, 10, "the removed token refused")
        assert status(second) == 200
        # when the file breaks, then the tokens read before stay in use
        path.write_text("{not json")
        time.sleep(1.2)
        assert status(second) == 200 and status(first) == 401
    finally:
        server.close()


def test_token_store_when_reloading_then_every_check_is_bounded_by_recheck_s(tmp_path):
    path = tmp_path / "tokens.json"
    token = add_token(path, "a", Scope.READ)
    now = [0.0]
    store = TokenStore((("0" * 64, Identity("up", Scope.ADMIN)),), path, clock=lambda: now[0])
    assert store.identify(token).name == "a" and len(store.entries) == 2
    path.write_text(json.dumps({"tokens": []}))
    assert store.identify(token).name == "a"  # within recheck_s of the last check: a hit does not look
    now[0] += 1.5
    assert store.identify(token) is None and [i.name for _, i in store.entries] == ["up"]
