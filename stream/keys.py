"""Every Redis key and channel, from one place. `{camera_id}` hash tags keep a camera's keys in
one Redis Cluster slot. Camera and query ids are validated (`[A-Za-z0-9_.-]{1,64}`) before
they become key parts."""
from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_PREFIX = "svl:"
ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise ValueError(f"invalid {what} {value!r}: use 1-64 characters from A-Z a-z 0-9 _ . -")
    return value


@dataclass(frozen=True)
class Keys:
    prefix: str = DEFAULT_PREFIX

    def frame(self, camera_id: str, ts_ms: int) -> str:
        return f"{self.prefix}{{{camera_id}}}:frame:{ts_ms}"

    def frame_pattern(self, camera_id: str) -> str:
        return f"{self.prefix}{{{camera_id}}}:frame:*"

    def health(self, camera_id: str) -> str:
        return f"{self.prefix}{{{camera_id}}}:health"

    def cameras(self) -> str:
        """Set of camera ids that an ingest worker has announced."""
        return f"{self.prefix}cameras"

    def windows(self) -> str:
        return f"{self.prefix}windows"

    def heartbeat(self, role: str, worker_id: str) -> str:
        return f"{self.prefix}heartbeat:{role}:{worker_id}"

    def queries(self) -> str:
        return f"{self.prefix}queries"

    def queries_changed(self) -> str:
        return f"{self.prefix}queries:changed"

    def events(self) -> str:
        return f"{self.prefix}events"

    def events_channel(self, camera_id: str) -> str:
        return f"{self.prefix}events:{camera_id}"

    def event_state(self, camera_id: str, query_id: str) -> str:
        return f"{self.prefix}{{{camera_id}}}:event:{query_id}"

    def window_done(self, camera_id: str, window_id: str) -> str:
        """Marks a window whose events were written (idempotent re-processing)."""
        return f"{self.prefix}{{{camera_id}}}:done:{window_id}"
