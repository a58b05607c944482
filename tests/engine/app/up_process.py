"""`spacevllm up` run as a user runs it, in its own process group: its output read line by line, its API found."""
from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[3]


class UpProcess:
    def __init__(self, tmp_path: Path, config: str = "api:\n  port: 0\n", max_seconds: float = 300.0,
                 env: dict | None = None) -> None:
        cfg = tmp_path / "service.yaml"
        cfg.write_text(config)
        self.data_dir = tmp_path / "data"
        self.env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "SVL_DATA_DIR": str(self.data_dir),
                    "PYTHONPATH": str(ROOT), **(env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "engine.app.cli", "up", "--config", str(cfg),
                                      "--max-seconds", str(max_seconds)], env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, cwd=tmp_path, start_new_session=True)
        self._lines: queue.Queue[str] = queue.Queue()
        self.out: list[str] = []
        self._reader = threading.Thread(target=lambda: [self._lines.put(line) for line in self.proc.stdout], daemon=True)
        self._reader.start()
        self.url: str | None = None

    def wait_line(self, pattern: str, timeout_s: float = 90.0) -> str:
        """The next output line matching `pattern` (every line read is kept in `out`)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None and self._lines.empty():
                    break
                continue
            self.out.append(line)
            if re.search(pattern, line):
                return line.strip()
        raise AssertionError(f"no line matching {pattern!r} in:\n" + "".join(self.out[-80:]))

    def api(self) -> str:
        if self.url is None:
            pattern = r"^API: http://127\.0\.0\.1:\d+"
            seen = [line for line in self.out if re.search(pattern, line)]  # printed before what was awaited so far
            line = seen[0] if seen else self.wait_line(pattern)
            self.url = re.search(r"http://127\.0\.0\.1:\d+", line).group(0)
        return self.url

    def redis(self):
        """A client of the embedded Redis, as the service's user (its password read from its file)."""
        from stream.redis_server import connect

        line = next((line for line in self.out if line.startswith("Redis: ")), None) or self.wait_line(r"^Redis: ")
        port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))
        password = (self.data_dir / "redis" / "redis.password").read_text().strip()
        return connect(f"redis://svl:{password}@127.0.0.1:{port}/0")

    def token(self) -> str:
        return (self.data_dir / "api-token").read_text().strip()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.api(), headers={"Authorization": f"Bearer {self.token()}"}, timeout=20)

    def text(self) -> str:
        """Everything printed so far (the reader keeps collecting until the process ends)."""
        while not self._lines.empty():
            self.out.append(self._lines.get())
        return "".join(self.out)

    def stop(self, timeout_s: float = 60.0) -> str:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._reader.join(timeout=10)  # every line the process wrote, read
        return self.text()
