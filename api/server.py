"""Serving the API: the exposure rule, the listening socket, uvicorn, and the webhook dispatcher.

`ApiServer.start()` binds first (so a taken port fails at once with one line, and port 0 picks a free
one), then runs uvicorn in a thread; `serve_forever()` runs it in the caller's thread (`spacevllm
serve`). Binding to anything but loopback without any token configured is refused (`ExposureError`).
"""
from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import redis
import uvicorn

from api.app import create_app
from api.auth import ENV_TOKEN, TokenStore
from api.webhooks import WebhookDispatcher, redis_ports
from engine.contracts.settings import ApiSettings
from stream.keys import Keys
from stream.redis_server import read_or_create_secret
from stream.role import Keeper, StatusBoard

log = logging.getLogger(__name__)


class ExposureError(RuntimeError):
    """The API would listen beyond this host with no token configured."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, tokens: TokenStore) -> None:
    if not is_loopback(host) and tokens.empty:
        raise ExposureError(f"refusing to serve the API on {host} without tokens: set {ENV_TOKEN} or api.tokens_file "
                            f"(spacevllm token create), or bind to 127.0.0.1")


def tokens_path(settings: ApiSettings, data_dir: str | None) -> Path | None:
    if settings.tokens_file:
        return Path(settings.tokens_file)
    return Path(data_dir) / "api-tokens.json" if data_dir else None


def demo_admin_token(data_dir: str) -> tuple[str, str]:
    """`up`'s admin token: SVL_API_TOKEN when set, else one generated once and kept in <data_dir>/api-token (0600).
    Returns (token, how to write it in a shell command)."""
    if os.environ.get(ENV_TOKEN):
        return os.environ[ENV_TOKEN].strip(), f"${ENV_TOKEN}"
    path = Path(data_dir) / "api-token"
    path.parent.mkdir(parents=True, exist_ok=True)
    return read_or_create_secret(path, 32), f"$(cat {path})"


@dataclass
class ApiServer:
    client: redis.Redis
    keys: Keys
    settings: ApiSettings
    tokens: TokenStore
    stop: threading.Event
    media_dir: Path | None = None  # event media served under /v1/events/{id}/ (the media worker writes it)
    # where the webhook dispatcher's state is recorded when it dies and is restarted (`up` passes its own board)
    board: StatusBoard | None = None
    file_roots: tuple[str, ...] = ()  # ingest.file_roots: the files a camera added over HTTP may play

    def __post_init__(self) -> None:
        if self.board is None:
            self.board = StatusBoard(self.client, self.keys, f"api-{socket.gethostname()}-{os.getpid()}")
        self._keeper: Keeper | None = None
        check_exposure(self.settings.host, self.tokens)
        self.app = create_app(self.client, self.keys, self.settings, self.tokens, self.media_dir, self.file_roots)
        family = socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # accepted connections inherit it: without it, a keep-alive client waits ~40 ms per response (Nagle
        # against delayed ACKs: uvicorn writes headers and body separately); measured by bench/api.py
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock.bind((self.settings.host, self.settings.port))
        except OSError as exc:
            self.sock.close()
            raise ExposureError(f"cannot listen on {self.settings.host}:{self.settings.port}: {exc.strerror} "
                                f"(set api.port, or --port)") from None
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        # no uvicorn access log: it prints the query string; api/middleware.py logs each request without it. Disabled,
        # not only left without handlers: a handler attached later (a logging config, a test harness) gets nothing
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_config=None, lifespan="off", timeout_graceful_shutdown=2,
                                                    timeout_keep_alive=5, access_log=False))
        logging.getLogger("uvicorn.access").disabled = True
        own_ports = (self.port, *redis_ports(self.client))
        self._new_dispatcher = lambda: WebhookDispatcher(self.client, self.keys, self.settings, self.stop, own_ports=own_ports)
        self.dispatcher = self._new_dispatcher() if self.settings.webhooks else None
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        host = f"[{self.settings.host}]" if ":" in self.settings.host else self.settings.host
        return f"http://{host}:{self.port}"

    def _watch_stop(self) -> None:
        self.stop.wait()
        self.server.should_exit = True

    def start(self) -> "ApiServer":
        """Serve in background threads until `stop` is set (or `close()`)."""
        self._threads = [threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, name="api", daemon=True),
                         threading.Thread(target=self._watch_stop, name="api-stop", daemon=True)]
        for t in self._threads:
            t.start()
        self._keep_dispatcher()
        log.info("API on %s", self.url)
        return self

    def serve_forever(self) -> None:
        """Serve in this thread (uvicorn handles SIGINT/SIGTERM here) until stopped."""
        self._keep_dispatcher()
        threading.Thread(target=self._watch_stop, name="api-stop", daemon=True).start()
        log.info("API on %s", self.url)
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self.stop.set()

    def _keep_dispatcher(self) -> None:
        """The webhook dispatcher in a thread that is restarted (and reported on the board) if it ever dies."""
        if self.dispatcher is None:
            return

        def run() -> None:
            try:
                self.dispatcher.run()
            finally:  # a dispatcher that ended has shut its pool down: a restart gets a fresh one
                self.dispatcher = self._new_dispatcher()

        self._keeper = Keeper("webhooks", run, self.stop, self.board).start()

    def close(self) -> None:
        self.stop.set()
        self.server.should_exit = True
        for t in self._threads:
            t.join(timeout=5)
        if self._keeper is not None:
            self._keeper.join(timeout=10)
        self.sock.close()


def build_server(client: redis.Redis, keys: Keys, settings: ApiSettings, data_dir: str | None,
                 stop: threading.Event | None = None, media_dir: Path | None = None,
                 file_roots: tuple[str, ...] = ()) -> ApiServer:
    tokens = TokenStore.load(tokens_path(settings, data_dir))
    return ApiServer(client, keys, settings, tokens, stop or threading.Event(), media_dir, file_roots=tuple(file_roots))
