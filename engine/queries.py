"""Standing queries: validated frozen records stored in Redis (`HSET <queries> id json`), changes
announced on a channel so running workers pick them up without restart."""
from __future__ import annotations

import json
import logging
import time
import unicodedata
import uuid
from dataclasses import asdict, dataclass, field

import redis

from stream.keys import Keys, check_id

log = logging.getLogger(__name__)

MAX_TEXT = 256
FIELDS = {"id", "text", "cameras", "threshold", "min_duration_s", "cooldown_s", "created_at"}


class QueryError(ValueError):
    """A query that fails validation; the message says which field and why."""


@dataclass(frozen=True)
class StandingQuery:
    id: str
    text: str
    cameras: tuple[str, ...] = ("*",)  # ("*",): every camera
    threshold: float | None = None  # None: the model's calibrated default
    min_duration_s: float = 0.0
    cooldown_s: float = 4.0
    created_at: float = field(default=0.0)

    def applies_to(self, camera_id: str) -> bool:
        return "*" in self.cameras or camera_id in self.cameras

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cameras"] = list(self.cameras)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "StandingQuery":
        return validate_query(data)


def validate_query(data: dict, now: float | None = None) -> StandingQuery:
    if not isinstance(data, dict):
        raise QueryError("a query must be a JSON object")
    unknown = set(data) - FIELDS
    if unknown:
        raise QueryError(f"unknown query fields: {sorted(unknown)}")
    text = data.get("text")
    if not isinstance(text, str):
        raise QueryError("text: required, a string")
    if any(unicodedata.category(c) == "Cc" for c in text.strip()):
        raise QueryError("text: control characters are not allowed")
    text = " ".join(text.split())
    if not 1 <= len(text) <= MAX_TEXT:
        raise QueryError(f"text: must be 1-{MAX_TEXT} characters after trimming (got {len(text)})")
    try:
        qid = check_id(data.get("id") or f"q-{uuid.uuid4().hex[:10]}", "query id")
    except ValueError as exc:
        raise QueryError(str(exc)) from None
    cams = data.get("cameras", ["*"])
    if isinstance(cams, str):
        cams = [cams]
    if not isinstance(cams, (list, tuple)) or not cams:
        raise QueryError("cameras: a non-empty list of camera ids, or '*'")
    try:
        cams = tuple(c if c == "*" else check_id(c, "camera id") for c in cams)
    except ValueError as exc:
        raise QueryError(f"cameras: {exc}") from None
    numbers = {}
    for name, default, upper in (("threshold", None, 1.0), ("min_duration_s", 0.0, None), ("cooldown_s", 4.0, None)):
        v = data.get(name, default)
        if v is None and name == "threshold":
            numbers[name] = None
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
            raise QueryError(f"{name}: must be a number")
        if v < 0 or (upper is not None and v > upper):
            raise QueryError(f"{name}: must be in [0, {upper}]" if upper is not None else f"{name}: must be >= 0")
        numbers[name] = float(v)
    created = data.get("created_at") or (now if now is not None else time.time())
    return StandingQuery(qid, text, cams, numbers["threshold"], numbers["min_duration_s"], numbers["cooldown_s"], float(created))


class QueryRegistry:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        if client is None:
            raise TypeError("QueryRegistry needs a Redis client")
        self.client = client
        self.keys = keys

    def add(self, query: StandingQuery) -> StandingQuery:
        self.client.hset(self.keys.queries(), query.id, json.dumps(query.to_dict()))
        self._announce("add", query.id)
        return query

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

    def for_camera(self, camera_id: str) -> list[StandingQuery]:
        return [q for q in self.all() if q.applies_to(camera_id)]
