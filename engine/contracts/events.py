"""Grounding events and their lifecycle per (camera, query): `new`, then `update`s, then `end`.

- `GroundingEvent` is the wire record (schema v1), with `to_dict` / `from_dict`: what the event feed,
  the HTTP API, SSE and webhooks carry. `EventType` and `EndReason` are its `type` and `reason`.
- `Observation` is one window's answer to one query (the grounder's output); `EventState` is the open
  event of a (camera, query), kept in Redis as JSON (`to_json` / `from_json`) so any worker can continue it.
- `advance(state, observation, query, camera_id, model)` is pure: the next state after one window and
  the events to publish; `close(...)` ends an open event now (camera stopped, query removed or changed).

Event ids are deterministic (`event_id_for`: camera, query, the window that opened it), so a window
processed twice yields the same ids.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from enum import Enum

SCHEMA_VERSION = 1


class EventType(str, Enum):
    NEW = "new"
    UPDATE = "update"
    END = "end"


class EndReason(str, Enum):
    """Why an event ended (the `reason` field of `end` events)."""

    ENDED = "ended"  # the query stopped matching for `cooldown_s`
    QUERY_REMOVED = "query_removed"
    QUERY_CHANGED = "query_changed"  # its text changed, or it no longer applies to this camera
    CAMERA_STOPPED = "camera_stopped"  # the camera stopped, failed, or its health expired


@dataclass(frozen=True)
class Box:
    ts: float
    xyxy: tuple[float, float, float, float]


@dataclass(frozen=True)
class GroundingEvent:
    type: EventType
    event_id: str
    query_id: str
    camera_id: str
    query_text: str
    score: float
    start_ts: float
    end_ts: float
    boxes: tuple[Box, ...]
    frame_size: tuple[int, int]
    window_id: str
    model: str
    schema: int = SCHEMA_VERSION
    reason: EndReason | None = None  # `end` events only

    def to_dict(self) -> dict:
        """The wire form (`reason` on `end` events only). Its schema for the HTTP API is `api.schemas.EventAnswer`."""
        d = {
            "schema": self.schema, "type": self.type.value, "event_id": self.event_id, "query_id": self.query_id,
            "camera_id": self.camera_id, "query_text": self.query_text, "score": round(self.score, 4),
            "start_ts": round(self.start_ts, 3), "end_ts": round(self.end_ts, 3),
            "boxes": [{"ts": round(b.ts, 3), "xyxy": [round(v, 1) for v in b.xyxy]} for b in self.boxes],
            "frame_size": list(self.frame_size), "window_id": self.window_id, "model": self.model,
        }
        if self.reason is not None:
            d["reason"] = self.reason.value
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict) -> "GroundingEvent":
        return cls(EventType(d["type"]), d["event_id"], d["query_id"], d["camera_id"], d["query_text"], float(d["score"]),
                   float(d["start_ts"]), float(d["end_ts"]), tuple(Box(float(b["ts"]), tuple(b["xyxy"])) for b in d["boxes"]),
                   tuple(d["frame_size"]), d["window_id"], d["model"], int(d.get("schema", SCHEMA_VERSION)),
                   EndReason(d["reason"]) if d.get("reason") else None)


@dataclass(frozen=True)
class Observation:
    """One window's answer to one query, on the capture clock and in camera pixels."""

    window_id: str
    window_start_ts: float
    window_end_ts: float
    score: float
    span: tuple[float, float] | None  # None: below threshold
    boxes: tuple[Box, ...]
    frame_size: tuple[int, int]


@dataclass(frozen=True)
class EventState:
    event_id: str = ""
    open: bool = False
    published: bool = False  # `new` was sent (min_duration reached)
    start_ts: float = 0.0
    end_ts: float = 0.0
    score: float = 0.0
    boxes: dict = field(default_factory=dict)  # "ts" -> xyxy
    last_match_ts: float = 0.0
    frame_size: tuple[int, int] = (0, 0)
    query_text: str = ""  # the text the event was opened for (a changed or removed query is detected by it)

    def to_json(self) -> str:
        d = asdict(self)
        d["frame_size"] = list(self.frame_size)
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes | None) -> "EventState":
        if not raw:
            return cls()
        d = json.loads(raw)
        d["frame_size"] = tuple(d["frame_size"])
        return cls(**d)


def event_id_for(camera_id: str, query_id: str, window_id: str) -> str:
    return hashlib.sha1(f"{camera_id}|{query_id}|{window_id}".encode()).hexdigest()[:16]


def _event(kind: EventType, st: EventState, query_id: str, camera_id: str, window_id: str, model: str,
           reason: EndReason | None = None) -> GroundingEvent:
    boxes = tuple(Box(float(ts), tuple(xyxy)) for ts, xyxy in sorted(st.boxes.items(), key=lambda kv: float(kv[0])))
    return GroundingEvent(kind, st.event_id, query_id, camera_id, st.query_text, st.score, st.start_ts, st.end_ts, boxes,
                          st.frame_size, window_id, model, reason=reason)


def advance(state: EventState, obs: Observation, query, camera_id: str, model: str) -> tuple[EventState, list[GroundingEvent]]:
    """The next lifecycle state after one window, and the events it produces."""
    out: list[GroundingEvent] = []
    if obs.span is not None:
        start, end = obs.span
        if not state.open:
            state = EventState(event_id_for(camera_id, query.id, obs.window_id), True, False, start, end, obs.score,
                               {}, end, obs.frame_size, query.text)
        new_boxes = dict(state.boxes)
        for b in obs.boxes:
            new_boxes[f"{b.ts:.3f}"] = [round(v, 1) for v in b.xyxy]
        grown = replace(state, start_ts=min(state.start_ts, start), end_ts=max(state.end_ts, end), score=max(state.score, obs.score),
                        boxes=new_boxes, last_match_ts=max(state.last_match_ts, end), frame_size=obs.frame_size)
        if not grown.published:
            if grown.end_ts - grown.start_ts >= query.min_duration_s:
                grown = replace(grown, published=True)
                out.append(_event(EventType.NEW, grown, query.id, camera_id, obs.window_id, model))
        elif (grown.start_ts, grown.end_ts, grown.boxes, grown.score) != (state.start_ts, state.end_ts, state.boxes, state.score):
            out.append(_event(EventType.UPDATE, grown, query.id, camera_id, obs.window_id, model))
        return grown, out
    if state.open and obs.window_end_ts - state.last_match_ts >= query.cooldown_s:
        if state.published:
            out.append(_event(EventType.END, state, query.id, camera_id, obs.window_id, model, EndReason.ENDED))
        return EventState(), out
    return state, out


def close(state: EventState, query_id: str, camera_id: str, window_id: str, model: str,
          reason: EndReason) -> tuple[EventState, list[GroundingEvent]]:
    """End an open event now (the camera stopped, the query was removed or changed)."""
    if state.open and state.published:
        return EventState(), [_event(EventType.END, state, query_id, camera_id, window_id, model, reason)]
    return EventState(), []
