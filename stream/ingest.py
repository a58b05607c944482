"""The ingest worker: many cameras in one process (one thread each), a heartbeat, graceful stop.

Threads, not processes: decoding (FFmpeg) and image encoding release the GIL, so threads
scale to the cores without copying frames between processes; `bench/ingest.py` measures it.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time

import redis

from stream.camera import CameraWorker
from stream.config import CameraSettings, IngestSettings, WindowSettings
from stream.keys import Keys
from stream.redis_link import RedisLink

log = logging.getLogger(__name__)


class IngestService:
    def __init__(self, client: redis.Redis, keys: Keys, cameras: list[CameraSettings], windows: WindowSettings,
                 settings: IngestSettings | None = None, stop: threading.Event | None = None) -> None:
        if client is None:
            raise TypeError("IngestService needs a Redis client")
        self.client = client
        self.keys = keys
        self.settings = settings or IngestSettings()
        self.stop_event = stop or threading.Event()
        self.worker_id = f"{socket.gethostname()}-{threading.get_native_id()}"
        self.link = RedisLink("ingest heartbeat")
        threads = self.settings.decoder_threads or (1 if len(cameras) >= (os.cpu_count() or 1) else 0)
        self.workers = [CameraWorker(c, c.windows or windows, client, keys, self.stop_event, self.settings.health_ttl_s,
                                     decoder_threads=threads) for c in cameras]

    def start(self) -> None:
        for w in self.workers:
            w.start()

    def heartbeat(self) -> None:
        try:
            alive = sum(w.is_alive() for w in self.workers)
            self.client.set(self.keys.heartbeat("ingest", self.worker_id), f"{time.time():.3f} cameras={alive}",
                            ex=int(self.settings.heartbeat_s * 3) + 1)
            self.link.ok()
        except redis.RedisError as exc:
            self.link.failed(exc)

    def run(self, install_signals: bool = True, max_seconds: float | None = None) -> None:
        """Run until SIGTERM/SIGINT (or `max_seconds`, or every camera ends), then stop cleanly."""
        if install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop_event.set())
        self.start()
        started = time.monotonic()
        last_beat = 0.0
        try:
            while not self.stop_event.is_set():
                if time.monotonic() - last_beat >= self.settings.heartbeat_s:
                    self.heartbeat()
                    last_beat = time.monotonic()
                if not any(w.is_alive() for w in self.workers):
                    log.info("every camera has ended")
                    break
                if max_seconds is not None and time.monotonic() - started >= max_seconds:
                    break
                self.stop_event.wait(0.05)  # notice ended cameras promptly; heartbeat every heartbeat_s
        finally:
            self.teardown()

    def teardown(self) -> None:
        self.stop_event.set()
        for w in self.workers:
            w.join(timeout=10)
        try:
            self.client.delete(self.keys.heartbeat("ingest", self.worker_id))
        except redis.RedisError:
            pass
        log.info("ingest stopped")
