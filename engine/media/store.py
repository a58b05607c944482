"""Event media on disk: `<media dir>/<event id>/{snapshot.jpg, clip.mp4, media.json}`, with retention.

Why files and not Redis: a clip is tens to hundreds of kilobytes and must outlive the frames (60 s TTL) by days;
Redis memory is the service's scarcest resource (the embedded server caps it and evicts volatile keys first),
while a directory is cheap, served by the API with range requests, and pruned by age and total size. The API
and the media worker share the directory (a volume in docker-compose).

`media.json` is the event's media status: what exists, and what is missing and why (an expired frame is
reported there, never raised). Every file is written to a temporary name and renamed into place, so a reader
sees the old version or the new one, never half a file.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from stream.keys import check_id

log = logging.getLogger(__name__)

SNAPSHOT = "snapshot.jpg"
CLIP = "clip.mp4"
STATUS = "media.json"


@dataclass(frozen=True)
class PruneResult:
    removed: int
    kept: int
    bytes: int  # total size kept


class MediaStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def dir(self, event_id: str) -> Path:
        return self.root / check_id(event_id, "event id")  # an id is a safe single path component

    def path(self, event_id: str, name: str) -> Path:
        assert name in (SNAPSHOT, CLIP, STATUS), name
        return self.dir(event_id) / name

    def write(self, event_id: str, name: str, data: bytes) -> Path:
        d = self.dir(event_id)
        d.mkdir(parents=True, exist_ok=True)
        target = d / name
        tmp = target.with_name(name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        return target

    def status(self, event_id: str) -> dict | None:
        try:
            return json.loads(self.path(event_id, STATUS).read_text())
        except FileNotFoundError:
            return None
        except (ValueError, OSError) as exc:
            log.warning("unreadable media status of %s: %s", event_id, exc)
            return None

    def write_status(self, event_id: str, status: dict) -> None:
        self.write(event_id, STATUS, json.dumps(status, separators=(",", ":")).encode())

    def pending_clips(self) -> list[dict]:
        """Statuses whose clip is still to be made (a restarted worker picks them up)."""
        out = []
        if not self.root.is_dir():
            return out
        for d in self.root.iterdir():
            st = self.status(d.name) if d.is_dir() else None
            if st and (st.get("clip") or {}).get("state") == "pending" and st.get("end_event"):
                out.append(st)
        return out

    def prune(self, now: float, max_age_s: float, max_bytes: int) -> PruneResult:
        """Delete events' media older than `max_age_s` (by last write), then the oldest until the total is at most
        `max_bytes`."""
        if not self.root.is_dir():
            return PruneResult(0, 0, 0)
        entries = []
        for d in self.root.iterdir():
            if not d.is_dir():
                continue
            try:
                files = [f.stat() for f in d.iterdir() if f.is_file()]
            except FileNotFoundError:
                continue
            mtime = max((s.st_mtime for s in files), default=d.stat().st_mtime)
            entries.append((mtime, sum(s.st_size for s in files), d))
        entries.sort()
        total = sum(size for _, size, _ in entries)
        removed = 0
        for mtime, size, d in entries:
            if now - mtime > max_age_s or total > max_bytes:
                shutil.rmtree(d, ignore_errors=True)
                total -= size
                removed += 1
        if removed:
            log.info("media retention: removed %d events' media, %d bytes kept", removed, total)
        return PruneResult(removed, len(entries) - removed, total)
