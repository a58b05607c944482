"""A Python client for integrators: manage standing queries, read events live or from history.

    client = GroundingClient(redis.Redis.from_url(url))
    client.add_query("the red circle moving right", cameras=["cam1"], threshold=0.6)
    for entry_id, event in client.events(since="0", camera="cam1"):   # history, then live
        print(event.type, event.start_ts, event.boxes[0].xyxy)
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import redis

from engine.events import GroundingEvent
from engine.queries import QueryRegistry, StandingQuery, validate_query
from stream.keys import Keys

log = logging.getLogger(__name__)


def since_to_stream_id(since: str | float | None) -> str:
    """'$' (only new), a stream id ('1700000000000-0', '0'), or Unix seconds (float) -> a stream id."""
    if since is None or since == "$":
        return "$"
    if isinstance(since, (int, float)):
        return f"{int(since * 1000)}-0"
    s = str(since)
    if "-" in s or s == "0":
        return s
    try:
        return f"{int(float(s) * 1000)}-0"
    except ValueError:
        raise ValueError(f"--since must be a stream id, Unix seconds or '$', got {since!r}") from None


class GroundingClient:
    def __init__(self, client: redis.Redis, keys: Keys | None = None) -> None:
        if client is None:
            raise TypeError("GroundingClient needs a Redis client")
        self.client = client
        self.keys = keys or Keys()
        self.registry = QueryRegistry(client, self.keys)

    def add_query(self, text: str, cameras: list[str] | None = None, threshold: float | None = None, min_duration_s: float = 0.0,
                  cooldown_s: float = 4.0, query_id: str | None = None) -> StandingQuery:
        data = {"text": text, "cameras": cameras or ["*"], "threshold": threshold, "min_duration_s": min_duration_s,
                "cooldown_s": cooldown_s}
        if query_id:
            data["id"] = query_id
        return self.registry.add(validate_query(data))

    def list_queries(self) -> list[StandingQuery]:
        return self.registry.all()

    def remove_query(self, query_id: str) -> bool:
        return self.registry.remove(query_id)

    def events(self, since: str | float | None = "$", camera: str | None = None, query: str | None = None,
               block_ms: int = 1000, limit: int | None = None, stop_when_idle: bool = False) -> Iterator[tuple[str, GroundingEvent]]:
        """Events from the durable stream, oldest first from `since`, then live (blocking reads)."""
        last = since_to_stream_id(since)
        if last == "$":
            info = self.client.xinfo_stream(self.keys.events()) if self.client.exists(self.keys.events()) else None
            last = (info["last-generated-id"].decode() if isinstance(info["last-generated-id"], bytes) else info["last-generated-id"]) if info else "0"
        n = 0
        while True:
            res = self.client.xread({self.keys.events(): last}, count=100, block=block_ms)
            if not res:
                if stop_when_idle:
                    return
                continue
            for _, entries in res:
                for entry_id, fields in entries:
                    last = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    raw = fields.get(b"event") or fields.get("event")
                    try:
                        event = GroundingEvent.from_dict(json.loads(raw))
                    except (ValueError, KeyError, TypeError) as exc:
                        log.error("unreadable event %s: %s", last, exc)
                        continue
                    if (camera and event.camera_id != camera) or (query and event.query_id != query):
                        continue
                    yield last, event
                    n += 1
                    if limit is not None and n >= limit:
                        return
