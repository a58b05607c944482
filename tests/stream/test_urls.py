from __future__ import annotations

import pytest

from stream.urls import file_path, redact_text, redact_url, under_roots, url_origin, url_secrets


@pytest.mark.parametrize("url, shown", [
    ("", ""),
    ("synthetic://demo?fps=10", "synthetic://demo?fps=10"),
    ("rtsp://10.0.0.5/s", "rtsp://10.0.0.5/s"),
    ("rtsp://admin:hunter2@10.0.0.5:554/s1", "rtsp://admin:***@10.0.0.5:554/s1"),
    ("redis://:pw@redis:6379/0", "redis://:***@redis:6379/0"),
    ("rediss://svl:p%40ss@[::1]:6380/0", "rediss://svl:***@[::1]:6380/0"),
])
def test_redact_url_when_password_then_hidden(url, shown):
    assert redact_url(url) == shown


def test_url_origin_when_path_is_secret_then_only_scheme_and_host():
    assert url_origin("https://hooks.example.com/services/T0/B0/SECRET") == "https://hooks.example.com"
    assert url_origin("http://127.0.0.1:9000/x?token=1") == "http://127.0.0.1:9000"


@pytest.mark.parametrize("url, shown", [
    ("rtsp://admin:pa#ss@10.0.0.5:554/s", "rtsp://admin:***@10.0.0.5:554/s"),  # '#' ends a standard parser's netloc
    ("rtsp://admin:p/a?s@cam.local/x", "rtsp://admin:***@cam.local/x"),
    ("rtsp://admin:p@ss@cam.local/x", "rtsp://admin:***@cam.local/x"),
    ("http://admin:pw@127.0.0.1:99999/x", "http://admin:***@127.0.0.1:99999/x"),  # an invalid port never raises
    ("rtsp://admin:hunter2@10.0.0.5:5x4/s1", "rtsp://admin:***@10.0.0.5:5x4/s1"),  # nor a port that is no number
    ("http://cam/x.mjpg?user=a&password=s3cret&fps=5", "http://cam/x.mjpg?user=a&password=***&fps=5"),
    ("https://cam/live.m3u8?api_key=k1&Token=t2", "https://cam/live.m3u8?api_key=***&Token=***"),
    ("rtsp://host/stream@1", "rtsp://host/stream@1"),  # an '@' in the path is not userinfo
    ("http://127.0.0.1:0x50/", "http://127.0.0.1:0x50/"),
])
def test_redact_url_when_credentials_hide_in_odd_places_then_they_are_masked(url, shown):
    assert redact_url(url) == shown


def test_redact_text_when_an_error_repeats_the_url_or_the_decoded_password_then_neither_shows():
    url = "rtsp://admin:p%40ss%23w0rd@10.0.0.5:554/s?token=abc123"
    # FFmpeg's messages repeat the URL, sometimes percent-decoded
    message = f"cannot open {url}: Connection refused (rtsp://admin:p@ss#w0rd@10.0.0.5:554/s) abc123"
    shown = redact_text(message, url)
    for secret in ("p%40ss%23w0rd", "p@ss#w0rd", "abc123"):
        assert secret not in shown
    assert "Connection refused" in shown and "10.0.0.5:554" in shown


def test_url_secrets_when_no_credentials_then_none():
    assert url_secrets("rtsp://10.0.0.5/s") == [] and url_secrets("synthetic://demo?fps=10") == []


@pytest.mark.parametrize("path, roots, inside", [
    ("/data/cams/a.mp4", ["/data/cams"], True),
    ("/data/cams/../secrets/key.nfo", ["/data/cams"], False),
    ("/data/camsX/a.mp4", ["/data/cams"], False),
    ("/data/cams/a.mp4", [], False),
])
def test_under_roots_when_a_path_tries_to_leave_then_it_is_outside(path, roots, inside):
    assert under_roots(path, roots) is inside


def test_under_roots_when_a_symlink_points_outside_then_it_is_outside(tmp_path):
    root = tmp_path / "cams"
    root.mkdir()
    (root / "link.mp4").symlink_to(tmp_path / "elsewhere.mp4")
    assert not under_roots(str(root / "link.mp4"), [str(root)])


def test_file_path_when_camera_kinds_differ_then_only_files_have_one():
    assert file_path("file:///v/a%20b.mp4") == "/v/a b.mp4" and file_path("/v/a.mp4") == "/v/a.mp4"
    assert file_path("rtsp://h/x") is None and file_path("/dev/video0") is None
