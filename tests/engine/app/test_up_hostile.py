"""A live `spacevllm up` fed what careless or hostile operators send: a camera whose password must never show,
a camera URL that cannot work, and files that must never be readable by others."""
from __future__ import annotations

import socket
import stat

from tests.engine.app.up_process import UpProcess
from tests.waiting import redis_contents, wait_for

SECRET = "Pa#ss/w0rd?x"


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_up_when_a_configured_camera_with_a_password_keeps_failing_then_the_password_is_in_no_answer_log_key_or_file(tmp_path):
    # given `up` with the demo camera and a camera whose password holds # / ?, on a port where nothing listens
    config = (f"api:\n  port: 0\ncameras:\n  - id: demo\n    url: synthetic://demo?fps=10\n"
              f"  - id: door\n    url: rtsp://admin:{SECRET}@127.0.0.1:{_closed_port()}/live\n"
              f"    open_timeout_s: 1\n    backoff_initial_s: 0.2\n    backoff_max_s: 0.5\n")
    up = UpProcess(tmp_path, config)
    try:
        with up.client() as http:
            # when the camera has failed a few times
            door = wait_for(lambda: [c for c in http.get("/v1/cameras").json() if c["id"] == "door"
                                     and c["health"] and int(c["health"].get("reconnects", 0)) >= 3], 120,
                            "the door camera to have reconnected 3 times")[0]
            # then the API shows what is wrong, without the password
            assert "cannot open" in door["health"]["last_error"] and SECRET not in str(door)
            assert SECRET not in http.get("/v1/cameras").text
            # and Redis holds it nowhere (the config's credentials stay in the config)
            assert SECRET.encode() not in redis_contents(up.redis())
            # and the demo camera beside it runs, and nothing is reported down
            assert wait_for(lambda: http.get("/readyz").status_code == 200, 60, "readiness")
            assert http.get("/readyz").json()["down"] == []
    finally:
        out = up.stop()
    # and neither the output (every log line) nor any file of the data dir contains it
    assert SECRET not in out
    for p in up.data_dir.rglob("*"):
        if p.is_file():
            assert SECRET.encode() not in p.read_bytes(), p
    # and the data dir, the Redis dir and every file in them are the owner's only
    for p in [up.data_dir, *up.data_dir.rglob("*")]:
        if p.is_symlink() or p.suffix == ".sock":
            continue
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode & 0o077 == 0, f"{p.relative_to(up.data_dir)} is {oct(mode)}"


def test_up_when_a_camera_with_an_impossible_port_is_posted_then_refused_and_the_demo_keeps_running(tmp_path):
    up = UpProcess(tmp_path)
    try:
        with up.client() as http:
            wait_for(lambda: http.get("/readyz").status_code == 200, 120, "readiness")
            # when an operator posts a camera whose port is out of range, with a password in it
            r = http.post("/v1/cameras", json={"id": "bad", "url": "http://admin:pw99@127.0.0.1:99999/x"})
            # then it is refused with a clear message, never stored, the password not echoed
            assert r.status_code == 422 and "port" in r.text.lower() and "pw99" not in r.text
            assert [c["id"] for c in http.get("/v1/cameras").json()] == ["demo"]
            # and the service keeps running: the demo camera produces, nothing is reported down
            before = int(http.get("/v1/cameras").json()[0]["health"]["windows"])
            wait_for(lambda: int(http.get("/v1/cameras").json()[0]["health"]["windows"]) > before + 1, 60,
                     "more demo windows")
            assert http.get("/readyz").status_code == 200 and http.get("/readyz").json()["down"] == []
    finally:
        out = up.stop()
    assert "Traceback" not in out and "pw99" not in out
