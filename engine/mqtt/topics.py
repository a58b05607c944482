"""What the MQTT publisher sends where: topics, payloads and Home Assistant discovery configs (pure, no broker).

    <prefix>/events                          every event, the JSON the API serves (GroundingEvent.to_json()); not retained
    <prefix>/<camera>/<query>/state          ON (new, update) / OFF (end); retained
    <prefix>/<camera>/<query>/snapshot       the event's snapshot JPEG (when the media worker made one); retained
    <prefix>/available                       online / offline (the last will); retained
    <discovery>/binary_sensor/<prefix>_<camera>_<query>/config    one binary sensor per (camera, query); retained,
                                             removed (an empty retained payload) when the query or the camera goes

Camera and query ids are topic-safe by construction (`[A-Za-z0-9_.-]`, stream/keys.py): no `/`, `+` or `#`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from engine.contracts.events import EventType, GroundingEvent

ON, OFF = "ON", "OFF"
ONLINE, OFFLINE = "online", "offline"
MANUFACTURER = "SpaceVLLM"


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool = False


@dataclass(frozen=True)
class Topics:
    prefix: str = "spacevllm"
    discovery_prefix: str = "homeassistant"

    @property
    def events(self) -> str:
        return f"{self.prefix}/events"

    @property
    def available(self) -> str:
        return f"{self.prefix}/available"

    def state(self, camera_id: str, query_id: str) -> str:
        return f"{self.prefix}/{camera_id}/{query_id}/state"

    def snapshot(self, camera_id: str, query_id: str) -> str:
        return f"{self.prefix}/{camera_id}/{query_id}/snapshot"

    def object_id(self, camera_id: str, query_id: str) -> str:
        """`<prefix>_<camera>_<query>` in the characters Home Assistant allows in an object id."""
        return re.sub(r"[^A-Za-z0-9_-]", "_", f"{self.prefix}_{camera_id}_{query_id}")

    def discovery(self, camera_id: str, query_id: str) -> str:
        return f"{self.discovery_prefix}/binary_sensor/{self.object_id(camera_id, query_id)}/config"

    def will(self) -> Message:
        return Message(self.available, OFFLINE.encode(), retain=True)

    def online(self) -> Message:
        return Message(self.available, ONLINE.encode(), retain=True)


def event_messages(topics: Topics, e: GroundingEvent) -> list[Message]:
    """An event's messages, in order: the event itself, then its (camera, query) state."""
    state = OFF if e.type is EventType.END else ON
    return [Message(topics.events, e.to_json().encode()),
            Message(topics.state(e.camera_id, e.query_id), state.encode(), retain=True)]


def discovery_config(topics: Topics, camera_id: str, query_id: str, query_text: str,
                     device_class: str | None = "motion") -> dict:
    """One binary sensor: ON while the query matches on the camera; one device per camera."""
    config = {
        "name": query_text,
        "unique_id": topics.object_id(camera_id, query_id),
        "object_id": topics.object_id(camera_id, query_id),
        "state_topic": topics.state(camera_id, query_id),
        "availability_topic": topics.available,
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
        "payload_on": ON,
        "payload_off": OFF,
        "device": {"identifiers": [re.sub(r"[^A-Za-z0-9_-]", "_", f"{topics.prefix}_{camera_id}")],
                   "name": f"{camera_id} ({topics.prefix})", "manufacturer": MANUFACTURER, "model": "camera"},
    }
    if device_class is not None:
        config["device_class"] = device_class
    return config


def discovery_message(topics: Topics, camera_id: str, query_id: str, config: dict | None) -> Message:
    """The retained config, or (None) the empty retained payload that removes the sensor."""
    payload = b"" if config is None else json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    return Message(topics.discovery(camera_id, query_id), payload, retain=True)


def removal_messages(topics: Topics, camera_id: str, query_id: str) -> list[Message]:
    """A (camera, query) pair gone: its sensor, and its retained state and snapshot, cleared."""
    return [discovery_message(topics, camera_id, query_id, None),
            Message(topics.state(camera_id, query_id), b"", retain=True),
            Message(topics.snapshot(camera_id, query_id), b"", retain=True)]
