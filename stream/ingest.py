"""The ingest worker: many cameras in one process (one thread each), a heartbeat, graceful stop.

Threads, not processes: decoding (FFmpeg) and image encoding release the GIL, so threads
scale to the cores without copying frames between processes; `bench/ingest.py` measures it.

With a `CameraRegistry` the cameras come from Redis (the ones passed in seed it) and the service
follows it while running: a camera added there starts, one removed stops, one whose settings
changed restarts, all without restarting the process (announcements on a channel, plus a full
re-read every `reload_s` in case one was missed). Without one, the list passed in is fixed and
the service ends when every camera has ended (files played once, tests).

Sharing the CPU with the engine: the camera threads run `ingest.nice` levels below the rest
(stream/priority.py), and a camera that falls behind real time decodes key frames only until
it catches up (stream/overload.py): an overloaded ingest loses frames, counted, not the engine's CPU.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time

import redis

from stream.camera import CameraWorker
from stream.cameras import CameraRegistry, redacted
from stream.config import CameraSettings, IngestSettings, WindowSettings
from stream.keys import Keys
from stream.priority import ThreadPriority
from stream.role import Heartbeat, Isolated, RoleLoop, install_stop_signals, isolate, require_client
from stream.urls import file_path, redact_url, under_roots

log = logging.getLogger(__name__)


class IngestService:
    def __init__(self, client: redis.Redis, keys: Keys, cameras: list[CameraSettings], windows: WindowSettings,
                 settings: IngestSettings | None = None, stop: threading.Event | None = None,
                 registry: CameraRegistry | None = None, reload_s: float = 5.0) -> None:
        self.client = require_client(client, "IngestService")
        self.keys = keys
        self.windows = windows
        self.settings = settings or IngestSettings()
        self.stop_event = stop or threading.Event()
        self.worker_id = f"{socket.gethostname()}-{threading.get_native_id()}"
        self.beats = Heartbeat(client, keys, "ingest", self.worker_id, self.settings.heartbeat_s)
        self.registry = registry
        self.reload_s = reload_s
        self._seed = list(cameras)
        self._running: dict[str, tuple[CameraSettings, CameraWorker, threading.Event]] = {}
        self._pubsub = None
        self._last_reload = 0.0
        self._seeded = not cameras  # the cameras passed in are written to the registry once
        self._refused: dict[str, CameraSettings] = {}
        self.failed = Isolated()  # cameras that failed to start or stop
        self.priority = ThreadPriority(self.settings.nice)  # each camera thread lowers itself: the engine comes first
        if registry is None:
            for c in cameras:
                self._start_camera(c)

    @property
    def workers(self) -> list[CameraWorker]:
        return [w for _, w, _ in self._running.values()]

    # ---- cameras ------------------------------------------------------------------------
    def _start_camera(self, cam: CameraSettings, start: bool = False) -> None:
        stop = threading.Event()  # per camera, so one can stop alone; teardown sets them all
        worker = CameraWorker(cam, self._windows_for(cam), self.client, self.keys, stop, self.settings.health_ttl_s,
                              decoder_threads=self._decoder_threads(), priority=self.priority)
        self._running[cam.id] = (cam, worker, stop)
        if start:
            log.info("camera %s: starting (%s)", cam.id, redact_url(cam.url))
            worker.start()

    def _windows_for(self, cam: CameraSettings) -> WindowSettings:
        """The camera's window settings (its own, else the service's); the model input (size, resample) the camera's
        own settings leave unset comes from the service's (the model's)."""
        if cam.windows is None:
            return self.windows
        unset = {k: getattr(self.windows, k) for k in ("input_size", "input_resample") if getattr(cam.windows, k) is None}
        return cam.windows.model_copy(update=unset) if unset else cam.windows

    def _decoder_threads(self) -> int:
        """FFmpeg threads for a camera's decoder: `ingest.decoder_threads`, else 1 when the cameras (this one
        included) at least fill the cores (more threads per decoder would only wait on each other), else FFmpeg's."""
        cameras = max(len(self._seed), len(self._running) + 1)
        return self.settings.decoder_threads or (1 if cameras >= (os.cpu_count() or 1) else 0)

    def _stop_camera(self, camera_id: str) -> None:
        _, worker, stop = self._running.pop(camera_id)
        stop.set()
        worker.join(timeout=10)
        log.info("camera %s: stopped", camera_id)

    def sync(self) -> None:
        """Make the running cameras match the registry (start added, stop removed, restart changed). One camera
        that cannot start or stop is logged and counted; the others go on."""
        wanted = {c.id: c for c in map(self._configured, self.registry.all()) if self._allowed(c)}
        for cid in list(self._running):
            if cid not in wanted or wanted[cid] != self._running[cid][0]:
                isolate(f"camera {cid}: stop", "camera", lambda cid=cid: self._stop_camera(cid), self.failed)
        for cid, cam in wanted.items():
            if cid not in self._running:
                isolate(f"camera {cid}: start", "camera", lambda cam=cam: self._start_camera(cam, start=True), self.failed)
        self._last_reload = time.monotonic()

    def _configured(self, stored: CameraSettings) -> CameraSettings:
        """The config file's camera for a stored entry that is its redacted form (credentials stay out of Redis)."""
        for c in self._seed:
            if c.id == stored.id and redacted(c) == stored:
                return c
        return stored

    def _allowed(self, cam: CameraSettings) -> bool:
        """A file camera added at run time plays only files under `ingest.file_roots`; the config file's own cameras
        may name any file. Refused once with one log line (and again only if it changes)."""
        path = file_path(cam.url)
        if path is None or any(c == cam for c in self._seed) or under_roots(path, self.settings.file_roots):
            return True
        if self._refused.get(cam.id) != cam:
            self._refused[cam.id] = cam
            roots = ", ".join(self.settings.file_roots) or "none configured"
            log.error("camera %s: refused: %s is not under ingest.file_roots (%s)", cam.id, path, roots)
        return False

    def _changes_announced(self) -> bool:
        changed = False
        if self._pubsub is None:
            self._pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            self._pubsub.subscribe(self.keys.camera_configs_changed())
            changed = True
        while (msg := self._pubsub.get_message(timeout=0)) is not None:
            if msg.get("type") == "message":
                changed = True
        return changed

    def _follow_registry(self) -> None:
        """A Redis error propagates to the role's loop: logged once per outage, retried with backoff."""
        if self._changes_announced() or time.monotonic() - self._last_reload >= self.reload_s:
            self.sync()

    # ---- the loop -----------------------------------------------------------------------
    def start(self) -> None:
        """Without a registry, start the fixed cameras; with one, the loop's first step seeds and follows it."""
        if self.registry is None:
            for w in self.workers:
                w.start()

    def stats(self) -> dict:
        return {"cameras": sum(w.is_alive() for w in self.workers), "camera_failures": self.failed.total,
                "refused": len(self._refused)}

    def run(self, install_signals: bool = True, max_seconds: float | None = None) -> None:
        """Run until SIGTERM/SIGINT (or `max_seconds`, or, without a registry, every camera ends), then stop cleanly.
        The cameras run in their own threads; this loop keeps the heartbeat and follows the registry."""
        if install_signals:
            install_stop_signals(self.stop_event)
        self.start()
        RoleLoop("ingest", self.stop_event, self.beats).run(self.step, stats=self.stats, teardown=self.teardown,
                                                           on_outage=self._lost_redis, max_seconds=max_seconds)

    def step(self) -> bool | str:
        if self.registry is not None:
            if not self._seeded:
                self.registry.seed(self._seed)
                self._seeded = True
            self._follow_registry()
        elif not any(w.is_alive() for w in self.workers):
            log.info("every camera has ended")
            return "stop"
        self.stop_event.wait(0.05)  # notice ended cameras promptly
        return True

    def _lost_redis(self) -> None:
        self._pubsub = None

    def teardown(self) -> None:
        self.stop_event.set()
        for _, _, stop in self._running.values():
            stop.set()
        for w in self.workers:
            if w.is_alive() or w.ident is not None:
                w.join(timeout=10)
        if self._pubsub is not None:
            try:
                self._pubsub.close()
            except redis.RedisError:
                pass
        log.info("ingest stopped")
