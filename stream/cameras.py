"""The camera registry: which cameras ingest runs, held in Redis so they can change at run time.

`HSET <camera_configs> id CameraSettings-JSON`, changes announced on `camera_configs_changed`. The
YAML's `cameras:` seed it at start (a YAML camera replaces a stored one with its id: the file is the
record for the cameras it names); `POST/DELETE /v1/cameras` and `spacevllm cameras add|rm` edit it; a
running `IngestService` built with a registry starts and stops camera threads to match, without a
restart.
"""
from __future__ import annotations

import json
import logging

import redis
from pydantic import ValidationError

from stream.config import CameraSettings
from stream.keys import Keys
from stream.redis_link import text
from stream.role import require_client
from stream.urls import redact_url

log = logging.getLogger(__name__)


def redacted(camera: CameraSettings) -> CameraSettings:
    return camera.model_copy(update={"url": redact_url(camera.url)})


class CameraExists(KeyError):
    """A camera with this id is already registered."""


class CameraRegistry:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = require_client(client, "CameraRegistry")
        self.keys = keys
        self._malformed: dict[str, bytes | str] = {}  # stored entries already reported (logged once each)

    def _announce(self, op: str, camera_id: str) -> None:
        self.client.publish(self.keys.camera_configs_changed(), json.dumps({"op": op, "id": camera_id}))

    def add(self, camera: CameraSettings, replace: bool = True) -> CameraSettings:
        raw = camera.model_dump_json()
        if replace:
            self.client.hset(self.keys.camera_configs(), camera.id, raw)
        elif not self.client.hsetnx(self.keys.camera_configs(), camera.id, raw):
            raise CameraExists(camera.id)
        self._announce("add", camera.id)
        return camera

    def seed(self, cameras: list[CameraSettings]) -> None:
        """The config file's cameras, stored with their URLs redacted: their credentials stay in the file (ingest
        plays the configured camera whose redacted form is stored, see `IngestService`), never in Redis or its AOF."""
        for c in cameras:
            self.add(redacted(c))

    def remove(self, camera_id: str) -> bool:
        removed = bool(self.client.hdel(self.keys.camera_configs(), camera_id))
        if removed:
            self._announce("remove", camera_id)
        return removed

    def get(self, camera_id: str) -> CameraSettings | None:
        raw = self.client.hget(self.keys.camera_configs(), camera_id)
        return self._parse(camera_id, raw) if raw is not None else None

    def all(self) -> list[CameraSettings]:
        out = []
        for cid, raw in self.client.hgetall(self.keys.camera_configs()).items():
            cam = self._parse(cid, raw)
            if cam is not None:
                out.append(cam)
        return sorted(out, key=lambda c: c.id)

    def _parse(self, camera_id, raw) -> CameraSettings | None:
        try:
            return CameraSettings.model_validate_json(raw)
        except ValidationError as exc:
            cid = text(camera_id)
            if self._malformed.get(cid) != raw:
                self._malformed[cid] = raw
                err = exc.errors()[0]
                log.error("skipping stored camera %r: %s: %s", cid, ".".join(str(x) for x in err["loc"]), err["msg"])
            return None
