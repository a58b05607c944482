"""Writing events into the feed as engine workers do, and reading SSE off a real HTTP connection."""
from __future__ import annotations

import time

from engine.contracts.events import Box, EventType, GroundingEvent


def make_event(n: int, camera: str = "cam1", query: str = "q1", type_: str = "new", event_id: str | None = None) -> GroundingEvent:
    ts = 1_700_000_000.0 + n
    return GroundingEvent(EventType(type_), event_id or f"e{n}", query, camera, "the red circle", 0.9, ts, ts + 1.0,
                          (Box(ts, (1.0, 2.0, 3.0, 4.0)),), (320, 240), f"{camera}:{n}", "test")


def write_event(client, keys, e: GroundingEvent) -> None:
    """XADD to the camera's shard stream and SET the event record (the write time), as the engine's event store
    (engine/serving/event_store.py `_append`) writes them. `client` may be a pipeline."""
    shard = keys.shard_of(e.camera_id)
    client.xadd(keys.events(shard), {"event": e.to_json(), "camera": e.camera_id, "query": e.query_id,
                                     "type": e.type.value, "event_id": e.event_id})
    client.set(keys.event_record(shard, e.event_id), str(int(time.time() * 1000)))


class SseReader:
    """Parses `text/event-stream` from an httpx streaming response: messages (id, data) and comments."""

    def __init__(self, response) -> None:
        self.lines = response.iter_lines()
        self.comments: list[str] = []

    def next_message(self, timeout_s: float = 10.0) -> dict:
        msg: dict = {}
        deadline = time.monotonic() + timeout_s
        for line in self.lines:
            if line == "":
                if "data" in msg:
                    return msg
                msg = {}
            elif line.startswith(":"):
                self.comments.append(line)
            else:
                field, _, value = line.partition(":")
                msg[field] = value[1:] if value.startswith(" ") else value
            if time.monotonic() > deadline:
                break
        raise TimeoutError("no SSE message")

    def next_comment(self, prefix: str) -> str:
        for line in self.lines:
            if line.startswith(prefix):
                return line
        raise TimeoutError("stream ended")
