"""Under `spacevllm up`, a role that dies is restarted, and /readyz says which one is down meanwhile."""
from __future__ import annotations

import os
import re
import signal

from tests.engine.app.up_process import UpProcess
from tests.waiting import wait_for


def _ready(http) -> dict | None:
    r = http.get("/readyz")
    return r.json() if r.status_code == 200 else None


def test_up_when_ingest_then_engine_are_killed_then_each_is_restarted_and_readyz_names_it_meanwhile(tmp_path):
    up = UpProcess(tmp_path)
    try:
        pids = {m.group(1): int(m.group(2)) for m in (re.search(r"started (\w+) \(pid (\d+)", up.wait_line(r"started (engine|ingest) \(pid"))
                                                       for _ in range(2))}
        with up.client() as http:
            wait_for(lambda: _ready(http), 120, "up to be ready")
            for role in ("ingest", "engine"):
                # when the role's process is killed outright
                os.kill(pids[role], signal.SIGKILL)
                # then /readyz is 503 and names it, with how it ended
                down = wait_for(lambda: (r := http.get("/readyz")).status_code == 503 and r.json()["down"], 30,
                                f"readyz to report {role} down")
                assert [(d["role"], d["error"]) for d in down] == [(role, "killed by SIGKILL")]
                # and `up` says so, restarts it, and is ready again
                line = up.wait_line(rf"started {role} \(pid", 60)
                assert int(re.search(r"pid (\d+)", line).group(1)) != pids[role]
                assert f"{role} stopped unexpectedly (killed by SIGKILL)" in up.text()
                wait_for(lambda: _ready(http), 120, f"up to be ready after {role} restarted")
    finally:
        out = up.stop()
    assert "Traceback" not in out
