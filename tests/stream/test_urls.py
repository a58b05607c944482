from __future__ import annotations

import pytest

from stream.urls import redact_url, url_origin


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
