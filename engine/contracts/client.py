"""A Python client for integrators: manage standing queries, read events live or from history.

    client = GroundingClient(redis.Redis.from_url(url))
    client.add_query("the red circle moving right", cameras=["cam1"], threshold=0.6)
    for cursor, event in client.events(since="0", camera="cam1"):   # history, then live
        print(event.type, event.start_ts, event.boxes[0].xyxy)     # keep `cursor` to resume later
"""
from __future__ import annotations

import logging
from collections.abc import Iterator

import redis

from engine.contracts.events import GroundingEvent
from engine.contracts.feed import EventFeed, EventFilter
from engine.contracts.queries import QueryRegistry, StandingQuery, validate_query
from stream.keys import Keys
from stream.role import require_client

log = logging.getLogger(__name__)


class GroundingClient:
    def __init__(self, client: redis.Redis, keys: Keys | None = None) -> None:
        self.client = require_client(client, "GroundingClient")
        self.keys = keys or Keys()
        self.registry = QueryRegistry(client, self.keys)

    def add_query(self, text: str, cameras: list[str] | None = None, threshold: float | None = None,
                  min_duration_s: float | None = None, cooldown_s: float | None = None, query_id: str | None = None,
                  webhooks: list[dict] | None = None, replace: bool = False) -> StandingQuery:
        """Validate through the one query schema (`engine.contracts.queries.QuerySpec`: its defaults apply to what is left
        None) and register. An existing id raises `QueryExists` unless `replace`."""
        data = {"text": text, "cameras": cameras, "threshold": threshold, "min_duration_s": min_duration_s,
                "cooldown_s": cooldown_s, "id": query_id, "webhooks": webhooks}
        return self.registry.add(validate_query({k: v for k, v in data.items() if v is not None}), replace=replace)

    def list_queries(self) -> list[StandingQuery]:
        return self.registry.all()

    def remove_query(self, query_id: str) -> bool:
        return self.registry.remove(query_id)

    def events(self, since: str | float | None = "$", camera: str | None = None, query: str | None = None,
               block_ms: int = 1000, limit: int | None = None, stop_when_idle: bool = False) -> Iterator[tuple[str, GroundingEvent]]:
        """Events from the durable feed, oldest first after `since` (a cursor, Unix seconds, '0' or '$': only new),
        then live (blocking reads). Yields (cursor, event): pass the cursor as `since` to resume exactly there."""
        feed = EventFeed(self.client, self.keys)
        flt = EventFilter(camera=camera, query=query)
        for n, entry in enumerate(feed.follow(feed.parse_since(since), flt, block_ms, stop_when_idle), start=1):
            yield entry.cursor, entry.event
            if limit is not None and n >= limit:
                return
