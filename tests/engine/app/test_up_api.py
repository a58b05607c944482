"""`spacevllm up` (what `make demo` runs) as a user runs it: the API comes up with it, and the curl and
redis-cli lines it prints work as printed; the Redis password and the admin token are never printed."""
from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def test_up_when_started_then_api_curl_line_and_redis_cli_line_work(tmp_path):
    if shutil.which("curl") is None:
        pytest.skip("curl not installed (apt-get install curl; .ci/run does)")
    cfg = tmp_path / "service.yaml"
    cfg.write_text("api:\n  port: 0\n")  # a free port (8080 may be taken on a test machine)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "SVL_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "engine.app.cli", "up", "--config", str(cfg), "--max-seconds", "60"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                            start_new_session=True)
    lines: queue.Queue[str] = queue.Queue()
    out: list[str] = []
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)
    reader.start()

    def wait_line(pattern: str, timeout_s: float = 60.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            out.append(line)
            if re.search(pattern, line):
                return line.strip()
        raise AssertionError(f"no line matching {pattern!r} in:\n" + "".join(out))

    try:
        events_line = wait_line(r"^\s*events: REDISCLI_AUTH=")
        api_line = wait_line(r"^API: http://127\.0\.0\.1:\d+")
        curl_line = wait_line(r"^\s*curl ")
        url = re.search(r"http://127\.0\.0\.1:\d+", api_line).group(0)
        # the curl line works as printed (the token read from its file in the data dir)
        r = subprocess.run(["bash", "-c", curl_line + " -s -w '\\n%{http_code}'"], env=env, capture_output=True, text=True,
                           timeout=20)
        body, code = r.stdout.rsplit("\n", 1)
        assert code == "200" and "events" in json.loads(body), r
        token_file = tmp_path / "data" / "api-token"
        assert oct(token_file.stat().st_mode & 0o777) == "0o600"
        # without the token: 401
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{url}/v1/queries"], capture_output=True,
                           text=True, timeout=20)
        assert r.stdout == "401"
        # the redis-cli line works (here with a 1 ms block instead of forever)
        cli = events_line.split("events: ", 1)[1].replace("BLOCK 0", "BLOCK 1")
        r = subprocess.run(["bash", "-c", cli], env=env, capture_output=True, text=True, timeout=20)
        assert r.returncode == 0 and "NOAUTH" not in r.stdout + r.stderr and "WRONGPASS" not in r.stdout + r.stderr, r
        # and the embedded Redis refuses administrative commands to the service's user
        r = subprocess.run(["bash", "-c", cli.split(" XREAD ")[0] + " CONFIG SET dir /tmp"], env=env, capture_output=True,
                           text=True, timeout=20)
        assert "NOPERM" in r.stdout + r.stderr
        password = (tmp_path / "data" / "redis" / "redis.password").read_text().strip()
        token = token_file.read_text().strip()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(timeout=10)  # every line the process wrote, read
    while not lines.empty():
        out.append(lines.get())
    text = "".join(out)
    assert password not in text and token not in text
