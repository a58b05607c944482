"""Event media and live previews over HTTP (real uvicorn, real Redis, files the media worker wrote), and the dashboard's
static files."""
from __future__ import annotations

import threading

import pytest

from engine.media.worker import MediaWorker
from engine.media.store import MediaStore
from engine.contracts.settings import MediaSettings
from tests.api.conftest import TOKENS, RunningApi, raw_request, start_api
from tests.engine.media import test_media as m


@pytest.fixture
def media_api(redis_client, tmp_path):
    root = tmp_path / "media"
    # given an ended event whose snapshot and clip the media worker made
    m.store_previews(redis_client, m.T0, m.T0 + 8)
    worker = MediaWorker(redis_client, m.KEYS, MediaSettings(pre_s=1.0, post_s=1.0), MediaStore(root), threading.Event(),
                         now=lambda: m.T0 + 100)
    worker.handle(m.event("new"))
    worker.handle(m.event("end"))
    worker.make_due_clips()
    server = start_api(redis_client, media_dir=root, webhooks=False)
    yield RunningApi(server, server.url)
    server.close()


def test_snapshot_when_made_then_served_as_jpeg_and_404_with_state_otherwise(media_api):
    with media_api.client("read") as c:
        r = c.get("/v1/events/ev1/snapshot.jpg")
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content[:2] == b"\xff\xd8"
        r = c.get("/v1/events/nope/snapshot.jpg")
        assert r.status_code == 404
        assert c.get("/v1/events/..%2F..%2Fetc/snapshot.jpg").status_code in (404, 422)


def test_clip_when_range_requested_then_206_with_the_bytes(media_api):
    with media_api.client("read") as c:
        full = c.get("/v1/events/ev1/clip.mp4")
        assert full.status_code == 200 and full.headers["content-type"] == "video/mp4"
        assert full.headers["accept-ranges"] == "bytes"
        part = c.get("/v1/events/ev1/clip.mp4", headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == full.content[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{len(full.content)}"
        assert c.get("/v1/events/ev1/clip.mp4", headers={"Range": f"bytes={len(full.content) + 10}-"}).status_code == 416


def test_media_status_when_clip_made_then_span_and_frames_reported(media_api):
    with media_api.client("read") as c:
        st = c.get("/v1/events/ev1/media").json()
    assert st["snapshot"]["state"] == "ok" and st["clip"]["state"] == "ok" and st["clip"]["missing_frames"] == 0
    assert "end_event" not in st


def test_media_when_no_token_then_401(media_api):
    with media_api.client(None) as c:
        for path in ("/v1/events/ev1/snapshot.jpg", "/v1/events/ev1/clip.mp4", "/v1/cameras/cam/latest.jpg"):
            assert c.get(path).status_code == 401


def test_latest_jpg_when_previews_stored_then_the_newest_with_its_time(media_api):
    with media_api.client("read") as c:
        r = c.get("/v1/cameras/cam/latest.jpg")
        assert r.status_code == 200 and r.content[:2] == b"\xff\xd8"
        assert float(r.headers["x-frame-ts"]) == m.T0 + 8
        assert r.headers["cache-control"] == "no-store"
        assert c.get("/v1/cameras/other/latest.jpg").status_code == 404


def test_dashboard_when_requested_then_page_and_static_files_without_a_token(media_api):
    with media_api.client(None) as c:
        page = c.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        for ref in ("/static/app.js", "/static/app.css"):
            assert ref in page.text
            assert c.get(ref).status_code == 200
        assert "http" not in c.get("/static/app.js").text.replace("http://www.w3.org/2000/svg", "")  # no CDN, no remote URL


@pytest.mark.parametrize("path", ["/v1/events/%2E%2E/media", "/v1/events/..%2Fx/media", "/v1/events/%2e%2e/snapshot.jpg",
                                  "/v1/events/..%2F..%2Fsecret/clip.mp4", "/v1/events/./media", "/v1/events/%2E/media"])
def test_media_when_the_id_climbs_out_of_the_media_dir_then_404_or_422_never_the_file(media_api, tmp_path, path):
    # given files beside the media directory that a `..` id would reach (media/../media.json, media/../snapshot.jpg)
    for name in ("media.json", "snapshot.jpg", "clip.mp4"):
        (tmp_path / name).write_text('{"outside": "the media dir"}')
    # when the path is sent byte for byte (no client normalises the dots away)
    status, answer = raw_request(media_api.server.port, f"GET {path} HTTP/1.1\r\nAuthorization: Bearer {TOKENS['read']}")
    # then it is refused, and nothing outside the media directory is served
    assert status in (404, 422) and b"outside" not in answer
