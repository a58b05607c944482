"""Bearer tokens with scopes `read` < `write` < `admin` (each includes the ones before it).

Where tokens come from:
- the token file (`api.tokens_file`, default `<data_dir>/api-tokens.json`), which holds only SHA-256
  digests: `{"tokens": [{"name": "grafana", "scope": "read", "sha256": "<hex>"}]}`;
  `spacevllm token create --name N --scope S` appends one and prints the token once. A running API follows
  the file: a token added works, and one removed stops working, within a second;
- the environment: `SVL_API_TOKEN` is an admin token (hashed when read; the plain value is not kept).

Tokens are random (`svl_` + 32 bytes), so a plain SHA-256 is enough (no password stretching);
comparisons are constant-time and visit every stored digest. A token is read from the Authorization
header only: one in a URL's query string is refused (URLs end up in logs and browser histories, see
api/middleware.py). Nothing here logs a token.

What needs what: reads (GET, SSE, /metrics) need `read` unless `api.public_read`; query writes
need `write`; cameras (whose URLs the ingest opens: a `file://` camera reads local files) need `admin`.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

log = logging.getLogger(__name__)

ENV_TOKEN = "SVL_API_TOKEN"
TOKEN_PREFIX = "svl_"


class Scope(str, Enum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"

    def includes(self, other: "Scope") -> bool:
        order = [Scope.READ, Scope.WRITE, Scope.ADMIN]
        return order.index(self) >= order.index(other)


class TokenFileError(ValueError):
    """A token file that cannot be read; the message names the file and the entry."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Identity:
    name: str
    scope: Scope

    def allows(self, scope: Scope) -> bool:
        return self.scope.includes(scope)


class TokenStore:
    """The tokens this API accepts: fixed ones (SVL_API_TOKEN, `up`'s own) and the token file's. The file is read
    again when it changes (its mtime, size and inode are checked at most every `recheck_s`, and on every miss), so a
    token made by `spacevllm token create` works, and one removed from the file stops working, without a restart.
    A file that cannot be read at start is an error (TokenFileError); one that breaks later is logged and the tokens
    read before stay in use."""

    def __init__(self, entries: tuple[tuple[str, Identity], ...] = (), path: str | Path | None = None,
                 recheck_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.fixed = tuple(entries)  # (sha256 hex, who)
        self.path = Path(path) if path is not None else None
        self.recheck_s = recheck_s
        self.clock = clock
        self._lock = threading.Lock()
        self._checked_at = clock()
        self._seen = _signature(self.path) if self.path is not None else None
        self._file: tuple[tuple[str, Identity], ...] = tuple(read_token_file(self.path)) if self._seen else ()

    @property
    def entries(self) -> tuple[tuple[str, Identity], ...]:
        return self._file + self.fixed

    @property
    def empty(self) -> bool:
        return not self.entries

    def identify(self, token: str) -> Identity | None:
        """The identity of `token`, or None. Constant time in the token; visits every entry."""
        if not token:
            return None
        self._reload(force=False)
        found = self._match(token)
        if found is None and self._reload(force=True):  # a token created a moment ago
            found = self._match(token)
        return found

    def _match(self, token: str) -> Identity | None:
        d = digest(token)
        found = None
        for stored, ident in self.entries:
            if hmac.compare_digest(stored, d) and found is None:
                found = ident
        return found

    def _reload(self, force: bool) -> bool:
        """Read the token file again if it changed since it was last read; True when its tokens changed."""
        if self.path is None or (not force and self.clock() - self._checked_at < self.recheck_s):
            return False
        with self._lock:
            self._checked_at = self.clock()
            seen = _signature(self.path)
            if seen == self._seen:
                return False
            self._seen = seen  # a broken version is reported once, not on every request
            try:
                entries = tuple(read_token_file(self.path)) if seen else ()
            except TokenFileError as exc:
                log.error("token file not reloaded (the tokens read before stay in use): %s", exc)
                return False
            changed = entries != self._file
            self._file = entries
            log.info("token file %s reloaded: %d tokens", self.path, len(entries))
            return changed

    @classmethod
    def load(cls, path: str | Path | None, environ: dict | None = None,
             extra: tuple[tuple[str, Identity], ...] = ()) -> "TokenStore":
        """The token file at `path` (followed while running), SVL_API_TOKEN from `environ`, and `extra` entries."""
        environ = os.environ if environ is None else environ
        fixed = tuple(extra)
        if environ.get(ENV_TOKEN):
            fixed += ((digest(environ[ENV_TOKEN].strip()), Identity(ENV_TOKEN, Scope.ADMIN)),)
        return cls(fixed, path)


def _signature(path: Path) -> tuple[int, int, int] | None:
    """What changes when the file is written or replaced; None when there is no file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def read_token_file(path: Path) -> list[tuple[str, Identity]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TokenFileError(f"{path}: {exc}") from None
    out = []
    for i, t in enumerate(data.get("tokens", []) if isinstance(data, dict) else []):
        try:
            sha, scope, name = t["sha256"], Scope(t["scope"]), str(t.get("name") or f"token-{i}")
        except (KeyError, ValueError, TypeError) as exc:
            raise TokenFileError(f"{path}: tokens[{i}]: needs name, scope (read|write|admin) and sha256 ({exc})") from None
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise TokenFileError(f"{path}: tokens[{i}]: sha256 must be 64 lowercase hex digits")
        out.append((sha, Identity(name, scope)))
    return out


def add_token(path: str | Path, name: str, scope: Scope) -> str:
    """Create a token, append its digest to the token file (created with mode 0600), return the token."""
    path = Path(path)
    data = {"tokens": []}
    if path.exists():
        read_token_file(path)  # refuse to extend a broken file
        data = json.loads(path.read_text())
    if any(t.get("name") == name for t in data["tokens"]):
        raise TokenFileError(f"{path}: a token named {name!r} exists")
    token = new_token()
    data["tokens"].append({"name": name, "scope": scope.value, "sha256": digest(token)})
    path.parent.mkdir(parents=True, exist_ok=True)
    # written beside it and renamed over it: a running API that reads the file never sees half of it
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return token
