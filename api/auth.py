"""Bearer tokens with scopes `read` < `write` < `admin` (each includes the ones before it).

Where tokens come from:
- the token file (`api.tokens_file`, default `<data_dir>/api-tokens.json`), which holds only SHA-256
  digests: `{"tokens": [{"name": "grafana", "scope": "read", "sha256": "<hex>"}]}`;
  `spacevllm token create --name N --scope S` appends one and prints the token once;
- the environment: `SVL_API_TOKEN` is an admin token (hashed when read; the plain value is not kept).

Tokens are random (`svl_` + 32 bytes), so a plain SHA-256 is enough (no password stretching);
comparisons are constant-time and visit every stored digest. Nothing here logs a token.

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


@dataclass(frozen=True)
class TokenStore:
    entries: tuple[tuple[str, Identity], ...] = ()  # (sha256 hex, who)

    @property
    def empty(self) -> bool:
        return not self.entries

    def identify(self, token: str) -> Identity | None:
        """The identity of `token`, or None. Constant time in the token; visits every entry."""
        if not token:
            return None
        d = digest(token)
        found = None
        for stored, ident in self.entries:
            if hmac.compare_digest(stored, d) and found is None:
                found = ident
        return found

    @classmethod
    def load(cls, path: str | Path | None, environ: dict | None = None) -> "TokenStore":
        environ = os.environ if environ is None else environ
        entries: list[tuple[str, Identity]] = []
        if path is not None and Path(path).exists():
            entries += read_token_file(Path(path))
        if environ.get(ENV_TOKEN):
            entries.append((digest(environ[ENV_TOKEN].strip()), Identity(ENV_TOKEN, Scope.ADMIN)))
        return cls(tuple(entries))


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
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    return token
