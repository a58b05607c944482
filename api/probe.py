"""`/healthz` for processes that serve no API (ingest, engine): what a container healthcheck calls.

200 while `alive()` says so (the worker loop ran recently), 503 otherwise; nothing else is served.
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)


def serve_healthz(host: str, port: int, alive: Callable[[], bool]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            ok = self.path.split("?")[0] == "/healthz" and alive()
            code = 200 if ok else (503 if self.path.startswith("/healthz") else 404)
            body = json.dumps({"status": "ok" if ok else "unhealthy"}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args) -> None:
            log.debug("healthz: " + fmt, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="healthz", daemon=True).start()
    log.info("healthz on http://%s:%d/healthz", host, server.server_address[1])
    return server
