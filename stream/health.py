"""Camera health: a small state machine, written to Redis as a hash."""
from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

from stream.redis_link import text_fields


class CameraState(str, Enum):
    CONNECTING = "connecting"
    RUNNING = "running"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    STOPPED = "stopped"


ALLOWED = {
    CameraState.CONNECTING: {CameraState.RUNNING, CameraState.RECONNECTING, CameraState.FAILED, CameraState.STOPPED},
    CameraState.RUNNING: {CameraState.RECONNECTING, CameraState.FAILED, CameraState.STOPPED},
    CameraState.RECONNECTING: {CameraState.CONNECTING, CameraState.FAILED, CameraState.STOPPED},
    CameraState.FAILED: {CameraState.STOPPED},
    CameraState.STOPPED: set(),
}


@dataclass(frozen=True)
class CameraHealth:
    camera_id: str
    state: CameraState = CameraState.CONNECTING
    fps: float = 0.0
    last_frame_ts: float = 0.0
    frames_decoded: int = 0
    frames_dropped: int = 0  # all drops: late frames (lag), frames Redis could not take, frames not decoded (overload)
    frames_stored: int = 0
    windows: int = 0
    reconnects: int = 0
    last_error: str = ""
    updated_at: float = 0.0
    frames_dropped_redis: int = 0  # of frames_dropped: not stored because Redis was unavailable
    frames_dropped_late: int = 0  # of frames_dropped: more than max_lag_s behind real time
    frames_dropped_overload: int = 0  # of frames_dropped: not decoded while behind real time (key frames only)

    def moved(self, state: CameraState, **changes) -> "CameraHealth":
        if state is not self.state and state not in ALLOWED[self.state]:
            raise ValueError(f"camera {self.camera_id}: illegal transition {self.state.value} -> {state.value}")
        return replace(self, state=state, **changes)

    def to_dict(self) -> dict[str, str]:
        return {
            "state": self.state.value, "fps": f"{self.fps:.2f}", "last_frame_ts": f"{self.last_frame_ts:.3f}",
            "frames_decoded": str(self.frames_decoded), "frames_dropped": str(self.frames_dropped),
            "frames_dropped_redis": str(self.frames_dropped_redis), "frames_dropped_late": str(self.frames_dropped_late),
            "frames_dropped_overload": str(self.frames_dropped_overload),
            "frames_stored": str(self.frames_stored), "windows": str(self.windows), "reconnects": str(self.reconnects),
            "last_error": self.last_error, "updated_at": f"{self.updated_at:.3f}",
        }

    @classmethod
    def from_dict(cls, camera_id: str, d: dict) -> "CameraHealth":
        d = text_fields(d)
        return cls(camera_id, CameraState(d["state"]), float(d["fps"]), float(d["last_frame_ts"]), int(d["frames_decoded"]),
                   int(d["frames_dropped"]), int(d.get("frames_stored", 0)), int(d.get("windows", 0)), int(d["reconnects"]),
                   d.get("last_error", ""), float(d["updated_at"]), int(d.get("frames_dropped_redis", 0)),
                   int(d.get("frames_dropped_late", 0)), int(d.get("frames_dropped_overload", 0)))

    def to_json(self) -> dict:
        """The health as the API shows it (numbers as numbers; drops by reason)."""
        return {"state": self.state.value, "fps": round(self.fps, 2), "last_frame_ts": self.last_frame_ts,
                "frames_decoded": self.frames_decoded, "frames_dropped": self.frames_dropped,
                "dropped": {"late": self.frames_dropped_late, "redis": self.frames_dropped_redis,
                            "overload": self.frames_dropped_overload},
                "frames_stored": self.frames_stored, "windows": self.windows, "reconnects": self.reconnects,
                "last_error": self.last_error, "updated_at": self.updated_at}


def read_health(client, keys, camera_id: str) -> CameraHealth | None:
    """A camera's health as the ingest last wrote it; None when it has expired (or never existed)."""
    raw = client.hgetall(keys.health(camera_id))
    if not raw:
        return None
    try:
        return CameraHealth.from_dict(camera_id, raw)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"camera {camera_id}: malformed health record: {exc}") from exc
