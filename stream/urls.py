"""URLs that may carry credentials (cameras, Redis, sinks): shown, logged and stored only redacted.

One rule for every text built from such a URL: `redact_url` for the URL itself, `redact_text` for an error
message or log line that may repeat it (FFmpeg's messages do, sometimes percent-decoded). Credentials are the
password of the userinfo (which may hold `#`, `/`, `?` and `@`, characters a standard URL parser stops at) and
the values of credential-like query parameters (`?password=`, `token=`, `key=`, ...)."""
from __future__ import annotations

import os
import re
from urllib.parse import quote, unquote, urlsplit

MASK = "***"
# query parameters whose values are credentials (case-insensitive, whole name or suffix: api_key, access_token)
_SECRET_PARAM = re.compile(r"(?i)^(.*[_-])?(pass|passwd|password|pwd|secret|token|key|apikey|auth|authorization|"
                           r"sig|signature|credential|credentials|session|sessionid)$")
_HOSTPORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%-]*)(:\d*)?$")


def _split_userinfo(url: str) -> tuple[str, str | None, str] | None:
    """(scheme://, userinfo, rest) where rest starts at the host; None without `scheme://`. The userinfo ends at
    the last `@` after which a plain host[:port] follows (so a password may hold `@`, `/`, `?` or `#`)."""
    head, sep, tail = url.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", head):
        return None
    best = last = None
    for i, ch in enumerate(tail):
        if ch == "@":
            last = i
            after = re.split(r"[/?#]", tail[i + 1:], maxsplit=1)[0]
            if _HOSTPORT.match(after):
                best = i
    if best is None:
        best = last  # no valid host[:port] follows any `@` (a bad port: the URL fails validation): mask up to the last
    if best is None:
        return head + sep, None, tail
    return head + sep, tail[:best], tail[best + 1:]


def _redact_query(rest: str) -> str:
    """`host/path?user=a&password=b#f` -> the credential values masked."""
    path, q, query_and_frag = rest.partition("?")
    if not q:
        return rest
    query, h, frag = query_and_frag.partition("#")
    params = []
    for part in query.split("&"):
        name, eq, value = part.partition("=")
        params.append(f"{name}={MASK}" if eq and value and _SECRET_PARAM.match(unquote(name)) else part)
    return path + "?" + "&".join(params) + (h + frag)


def redact_url(url: str | None) -> str:
    """`rtsp://user:secret@host/x?token=t` -> `rtsp://user:***@host/x?token=***`; a URL without credentials is
    returned unchanged. Never raises (a URL that fails validation is still shown redacted in the error)."""
    if not url:
        return url or ""
    split = _split_userinfo(url)
    if split is None:
        return _redact_query(url)
    scheme, userinfo, rest = split
    rest = _redact_query(rest)
    if userinfo is None:
        return scheme + rest
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}{user}{':' + MASK if colon else ''}@{rest}"


def url_secrets(url: str | None) -> list[str]:
    """The credential strings of a URL (as written, percent-decoded and re-encoded), longest first: what
    `redact_text` masks wherever a message repeats them."""
    if not url:
        return []
    found = set()
    split = _split_userinfo(url)
    if split is not None and split[1] is not None and ":" in split[1]:
        found.add(split[1].partition(":")[2])
    rest = split[2] if split is not None else url
    query = rest.partition("?")[2].partition("#")[0]
    for part in query.split("&"):
        name, eq, value = part.partition("=")
        if eq and value and _SECRET_PARAM.match(unquote(name)):
            found.add(value)
    variants = set()
    for s in found:
        variants |= {s, unquote(s), quote(unquote(s), safe="")}
    # a very short secret cannot be masked inside free text without mangling it; the whole URL still is
    return sorted((v for v in variants if len(v) >= 3), key=len, reverse=True)


def redact_text(text: str, *urls: str | None) -> str:
    """An error message or log line that may repeat `urls` (or their credentials): every URL and credential
    masked. Use it for every text built from a camera's or sink's error."""
    out = text
    for url in urls:
        if not url:
            continue
        for form in sorted({url, unquote(url)}, key=len, reverse=True):
            out = out.replace(form, redact_url(url))
        for secret in url_secrets(url):
            out = out.replace(secret, MASK)
    return out


def url_origin(url: str) -> str:
    """Scheme and host only (`https://hooks.example.com`): what logs show of a URL whose path may be a secret."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        if ":" in host:
            host = f"[{host}]"
        return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "<unparseable url>"


def file_path(url: str) -> str | None:
    """The local path a file camera plays (`file:///x` or a bare path), None for any other camera."""
    if url.startswith("file://"):
        return unquote(urlsplit(url).path)
    if "://" not in url and not url.startswith("/dev/video"):
        return url
    return None


def under_roots(path: str, roots: list[str]) -> bool:
    """`path`, with every link resolved, lies inside one of `roots` (also resolved): `..` and symlinks cannot leave."""
    real = os.path.realpath(path)
    for root in roots:
        base = os.path.realpath(root)
        if os.path.commonpath([real, base]) == base:
            return True
    return False
