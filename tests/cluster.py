"""A real 3-master Redis Cluster on 127.0.0.1 (Debian's redis-server and redis-cli), for tests and benches."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from tests.waiting import pings, wait_until


def _free_cluster_port() -> int:
    """A port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def cluster_unavailable() -> str | None:
    if not shutil.which("redis-server") or not shutil.which("redis-cli"):
        return "Redis Cluster needs Debian's redis-server and redis-cli (apt-get install redis-server)"
    return None


class LocalCluster:
    def __init__(self, root: Path, masters: int = 3) -> None:
        self.root = Path(root)
        self.ports = [_free_cluster_port() for _ in range(masters)]
        self.procs: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self, timeout_s: float = 20.0) -> "LocalCluster":
        for port in self.ports:
            d = self.root / str(port)
            d.mkdir(parents=True, exist_ok=True)
            self.procs.append(subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000", "--dir", str(d),
                 "--appendonly", "no", "--save", "", "--logfile", str(d / "redis.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + timeout_s
        for port in self.ports:
            if not wait_until(lambda port=port: pings(lambda: redis.Redis(port=port, socket_timeout=0.5)),
                              max(0.0, deadline - time.monotonic()), step_s=0.05):
                raise RuntimeError(f"cluster node {port} did not start")
        create = subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                                 "--cluster-replicas", "0", "--cluster-yes"], capture_output=True, text=True, timeout=60)
        if create.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {create.stdout[-500:]} {create.stderr[-500:]}")
        def states() -> list[str]:
            return [redis.Redis(port=p).cluster("info").get("cluster_state") for p in self.ports]

        if not wait_until(lambda: all(s == "ok" for s in states()), max(0.0, deadline - time.monotonic())):
            raise RuntimeError(f"cluster did not reach state ok: {states()}")
        return self

    def flush(self) -> None:
        for p in self.ports:
            redis.Redis(port=p).flushall()

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
