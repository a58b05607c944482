"""URLs that may carry credentials (RTSP cameras, Redis): shown and logged only redacted."""
from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str | None) -> str:
    """`rtsp://user:secret@host/x` -> `rtsp://user:***@host/x`; URLs without a password are returned unchanged."""
    if not url:
        return url or ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def url_origin(url: str) -> str:
    """Scheme and host only (`https://hooks.example.com`): what logs show of a URL whose path may be a secret."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "<unparseable url>"
