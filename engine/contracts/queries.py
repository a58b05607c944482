"""Standing queries: `QuerySpec`, the one schema of a query (fields, defaults, limits), and `StandingQuery`,
its validated frozen record, stored in Redis (`HSET <queries> id json`); changes are announced on a channel
so running workers pick them up without restart."""
from __future__ import annotations

import ipaddress
import json
import logging
import re
import socket
import time
import unicodedata
import uuid
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from engine.contracts.errors import error_list, error_lines
from stream.keys import Keys, check_id
from stream.role import require_client

log = logging.getLogger(__name__)

MAX_TEXT = 256
MAX_WEBHOOKS = 8
MAX_CAMERAS = 256  # camera ids one query names ('*' covers every camera)
MAX_COOLDOWN_S = 3600.0  # an event ends this long after its last match at the latest
MAX_MIN_DURATION_S = 3600.0


class QueryError(ValueError):
    """A query that fails validation; the message says which field and why (`errors` holds them one by one)."""

    def __init__(self, message: str, errors: list[dict] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or [{"loc": [], "msg": message, "type": "value_error"}]


class QueryExists(KeyError):
    """A query with this id is already registered (add it with `replace=True` to replace it)."""


# ---- the one schema ---------------------------------------------------------------------------
# `QuerySpec` is the only definition of a standing query's fields, defaults and limits: the YAML
# config (`queries:`), the CLI (`spacevllm query add`), the SDK (`GroundingClient.add_query`) and
# the HTTP API (`POST /v1/queries`, where its errors become 422s with the field path) all validate
# through it. `StandingQuery` is its stored, frozen form, with the same fields in the same order and
# QuerySpec's defaults.
def _stored(info: ValidationInfo) -> bool:
    """Validating a record read back from Redis: limits added since it was written do not make it unreadable (a
    query that vanished from the engine would be a silent outage); malformed values still are refused."""
    return bool((info.context or {}).get("stored"))


def _number(name: str, upper: float | None, unit: str = ""):
    def check(cls, v, info: ValidationInfo):
        if v is None and name == "threshold":
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
            raise ValueError("must be a number")
        if name == "threshold" and not 0 <= v <= upper:
            raise ValueError(f"must be in [0, {upper}]")
        if v < 0:
            raise ValueError("must be >= 0")
        if upper is not None and v > upper and not _stored(info):
            raise ValueError(f"must be at most {upper:g}{unit}")
        return float(v)
    return check


# ---- webhook URLs ------------------------------------------------------------------------------
# A sink URL is checked twice. When a query is registered, for what needs no DNS: the scheme, no
# user:password@, a decimal port in 1-65535, and a literal address or a name on the deny list below.
# When the dispatcher connects (api/webhooks.py), for every address the host resolves to (the same deny
# list, the service's own ports on loopback, `api.webhook_allow_hosts`), connecting only to a checked one.
# Loopback and private ranges stay allowed: tests and LAN integrators use them.
DENIED_NETWORKS: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.ip_network(net), why) for net, why in (
        ("169.254.0.0/16", "link-local (cloud metadata lives at 169.254.169.254)"),
        ("fe80::/10", "link-local"),
        ("fd00:ec2::254/128", "cloud metadata"),
        ("0.0.0.0/8", "unspecified"),  # 0.0.0.0 reaches the local host on Linux
        ("::/128", "unspecified"),
        ("224.0.0.0/4", "multicast"),
        ("ff00::/8", "multicast"),
        ("255.255.255.255/32", "broadcast"),
    ))
DENIED_NAMES = {"metadata.google.internal": "cloud metadata"}
_HOST_NAME = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")
_PORT = re.compile(r"^[0-9]{1,5}$")


def denied_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why a sink may never connect to `address` (None: it may, as far as the deny list goes)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:169.254.169.254 is 169.254.169.254
    return next((why for net, why in DENIED_NETWORKS if address in net), None)


@dataclass(frozen=True)
class SinkUrl:
    """A webhook URL taken apart the way the dispatcher connects to it."""

    scheme: str  # http | https
    host: str  # lower case, no brackets, no trailing dot
    port: int
    target: str  # path and query: what the request line carries
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None  # when the host is a literal address


def parse_sink_url(url: str) -> SinkUrl:
    """`url` as a sink, or ValueError saying what is wrong; needs no DNS (names are resolved at connect time)."""
    # printable ASCII only: what a request line can carry as it is (IDN hosts: their xn-- form)
    if not isinstance(url, str) or len(url) > 2048 or not re.fullmatch(r"https?://[!-~]+", url, re.I):
        raise ValueError("must be an http:// or https:// URL of printable ASCII (up to 2048 characters)")
    parts = urlsplit(url)
    if not parts.netloc:
        raise ValueError("must name a host: http(s)://host[:port]/path")
    if "@" in parts.netloc:
        raise ValueError("must not carry user:password@ (receivers authenticate deliveries by the signature)")
    host, port = parts.netloc, None
    if host.startswith("["):
        host, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("not a valid [IPv6] host")
        port = rest[1:] if rest else None
    elif ":" in host:
        host, port = host.rsplit(":", 1)
    if port is not None and (not _PORT.match(port) or not 1 <= int(port) <= 65535):
        raise ValueError(f"port must be a decimal number in 1-65535, got {port!r}")
    host = host.lower().rstrip(".")
    address = _literal_address(host)
    if address is None and (not _HOST_NAME.match(host) or len(host) > 253 or max(map(len, host.split("."))) > 63):
        raise ValueError(f"not a valid host name: {host!r}")
    why = denied_address(address) if address is not None else DENIED_NAMES.get(host)
    if why:
        raise ValueError(f"host {host} is not allowed for webhooks: {why}")
    scheme = parts.scheme.lower()
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return SinkUrl(scheme, host, int(port) if port else (443 if scheme == "https" else 80), target, address)


def _literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host string names without DNS, in every form the resolver accepts (`2852039166` and
    `0xa9.0xfe.0xa9.0xfe` are 169.254.169.254), else None."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


class WebhookSpec(BaseModel):
    """A sink: every event of the query is POSTed to `url`, signed with HMAC-SHA256 of `secret`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    url: str = Field(..., description="http:// or https:// URL that receives the events (POST, JSON); no user:password@, "
                                      "no link-local or cloud metadata address")
    secret: str = Field(..., description="HMAC-SHA256 key for the X-SVL-Signature header; never returned by the API")

    @field_validator("url", mode="before")
    @classmethod
    def _url(cls, v, info: ValidationInfo):
        if (info.context or {}).get("stored"):
            # a query stored before the checks tightened stays readable (the engine keeps serving it); its sink
            # is refused, and dead-lettered, when the dispatcher connects
            if not isinstance(v, str) or not re.match(r"^https?://\S+$", v, re.I):
                raise ValueError("must be an http:// or https:// URL")
            return v
        parse_sink_url(v)
        return v

    @field_validator("secret", mode="before")
    @classmethod
    def _secret(cls, v):
        if not isinstance(v, str) or not 1 <= len(v) <= 256:
            raise ValueError("must be a string of 1-256 characters")
        return v


class QuerySpec(BaseModel):
    """A standing query as written by people and programs (YAML, CLI, SDK, API). Every field is bounded: numbers
    are finite and within the ranges below, text and lists have maximum lengths."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    id: str | None = Field(None, description="[A-Za-z0-9][A-Za-z0-9_.-]{0,63}; generated when absent")
    text: str = Field(..., description=f"what to look for, 1-{MAX_TEXT} characters (whitespace collapsed)")
    cameras: list[str] = Field(["*"], description=f"camera ids (at most {MAX_CAMERAS}), or ['*'] for every camera "
                                                  "(a single string is one camera)")
    threshold: float | None = Field(None, description="match score in [0, 1]; null: the model's calibrated default")
    min_duration_s: float = Field(0.0, description=f"publish `new` only once the span is at least this long "
                                                   f"(0-{MAX_MIN_DURATION_S:g} s)")
    cooldown_s: float = Field(4.0, description=f"end the event after this long without a match (0-{MAX_COOLDOWN_S:g} s)")
    created_at: float | None = Field(None, ge=0, description="Unix seconds; set by the server when absent")
    webhooks: list[WebhookSpec] = Field([], description=f"sinks that receive every event of this query (at most {MAX_WEBHOOKS})")

    @field_validator("text", mode="before")
    @classmethod
    def _text(cls, v):
        if not isinstance(v, str):
            raise ValueError("required, a string")
        if len(v) > 16 * MAX_TEXT:  # bounded before any work on it (whitespace may shrink a longer one, not this)
            raise ValueError(f"must be 1-{MAX_TEXT} characters after trimming (got {len(v)})")
        if any(unicodedata.category(c) == "Cc" for c in v.strip()):
            raise ValueError("control characters are not allowed")
        text = " ".join(v.split())
        if not 1 <= len(text) <= MAX_TEXT:
            raise ValueError(f"must be 1-{MAX_TEXT} characters after trimming (got {len(text)})")
        return text

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, v):
        return None if v in (None, "") else check_id(v, "query id")

    @field_validator("cameras", mode="before")
    @classmethod
    def _cameras(cls, v, info: ValidationInfo):
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, (list, tuple)) or not v:
            raise ValueError("a non-empty list of camera ids, or '*'")
        if len(v) > MAX_CAMERAS and not _stored(info):
            raise ValueError(f"at most {MAX_CAMERAS} camera ids (got {len(v)}); use '*' for every camera")
        return [c if c == "*" else check_id(c, "camera id") for c in v]

    _threshold = field_validator("threshold", mode="before")(classmethod(_number("threshold", 1.0)))
    _min_duration = field_validator("min_duration_s", mode="before")(classmethod(_number("min_duration_s", MAX_MIN_DURATION_S, " s")))
    _cooldown = field_validator("cooldown_s", mode="before")(classmethod(_number("cooldown_s", MAX_COOLDOWN_S, " s")))

    @field_validator("webhooks")
    @classmethod
    def _webhooks(cls, v):
        if len(v) > MAX_WEBHOOKS:
            raise ValueError(f"at most {MAX_WEBHOOKS} webhooks")
        return v


@dataclass(frozen=True)
class Webhook:
    url: str
    secret: str


def _default(name: str):
    """QuerySpec's default of a field: StandingQuery's defaults are declared there, once."""
    return QuerySpec.model_fields[name].get_default(call_default_factory=True)


@dataclass(frozen=True)
class StandingQuery:
    """A validated query as stored and run (made by `validate_query` / `from_spec`): id and created_at are set."""

    id: str
    text: str
    cameras: tuple[str, ...] = tuple(_default("cameras"))  # ("*",): every camera
    threshold: float | None = _default("threshold")  # None: the model's calibrated default
    min_duration_s: float = _default("min_duration_s")
    cooldown_s: float = _default("cooldown_s")
    created_at: float = 0.0
    webhooks: tuple[Webhook, ...] = ()

    def applies_to(self, camera_id: str) -> bool:
        return "*" in self.cameras or camera_id in self.cameras

    def to_dict(self, redact: bool = False) -> dict:
        """The stored form (with webhook secrets), or with `redact` the form shown to API clients."""
        d = asdict(self)
        d["cameras"] = list(self.cameras)
        d["webhooks"] = [{"url": w.url, "secret": REDACTED if redact else w.secret} for w in self.webhooks]
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "StandingQuery":
        return validate_query(data, stored=True)


REDACTED = "<redacted>"


def validate_query(data, now: float | None = None, stored: bool = False) -> StandingQuery:
    """Validate through `QuerySpec` and build the stored record (id generated, created_at set when absent).
    `stored`: a record read back from Redis (webhook URLs checked for form only, see `WebhookSpec`)."""
    if isinstance(data, QuerySpec):
        spec = data
    else:
        if not isinstance(data, dict):
            raise QueryError("a query must be a JSON object")
        try:
            spec = QuerySpec.model_validate(data, context={"stored": stored})
        except ValidationError as exc:
            raise QueryError("; ".join(error_lines(exc.errors(), whole="query")), error_list(exc.errors())) from None
    return from_spec(spec, now)


def from_spec(spec: QuerySpec, now: float | None = None) -> StandingQuery:
    created = spec.created_at or (now if now is not None else time.time())
    return StandingQuery(id=spec.id or f"q-{uuid.uuid4().hex[:10]}", text=spec.text, cameras=tuple(spec.cameras),
                         threshold=spec.threshold, min_duration_s=spec.min_duration_s, cooldown_s=spec.cooldown_s,
                         created_at=float(created), webhooks=tuple(Webhook(w.url, w.secret) for w in spec.webhooks))


class QueryRegistry:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = require_client(client, "QueryRegistry")
        self.keys = keys

    def add(self, query: StandingQuery, replace: bool = True) -> StandingQuery:
        """Register `query`; an existing one with its id is replaced, or with `replace=False` refused (QueryExists)."""
        if replace:
            self.client.hset(self.keys.queries(), query.id, json.dumps(query.to_dict()))
        elif not self.client.hsetnx(self.keys.queries(), query.id, json.dumps(query.to_dict())):
            raise QueryExists(query.id)
        self._announce("add", query.id)
        return query

    def get(self, query_id: str) -> StandingQuery | None:
        raw = self.client.hget(self.keys.queries(), query_id)
        if raw is None:
            return None
        try:
            return StandingQuery.from_dict(json.loads(raw))
        except (ValueError, TypeError) as exc:
            log.error("malformed stored query %r: %s", query_id, exc)
            return None

    def remove(self, query_id: str) -> bool:
        removed = self.client.hdel(self.keys.queries(), query_id)
        self._announce("remove", query_id)
        return bool(removed)

    def _announce(self, op: str, query_id: str) -> None:
        """After the write (never inside a transaction: PUBLISH has no slot on Cluster). A worker that misses the
        message still reloads the queries within a few seconds."""
        try:
            self.client.publish(self.keys.queries_changed(), json.dumps({"op": op, "id": query_id}))
        except redis.RedisError as exc:
            log.warning("query %s stored, but announcing it failed (workers pick it up on their next reload): %s",
                        query_id, exc)

    def all(self) -> list[StandingQuery]:
        out = []
        for qid, raw in self.client.hgetall(self.keys.queries()).items():
            try:
                out.append(StandingQuery.from_dict(json.loads(raw)))
            except (ValueError, TypeError) as exc:
                log.error("skipping malformed stored query %r: %s", qid, exc)
        return sorted(out, key=lambda q: (q.created_at, q.id))
