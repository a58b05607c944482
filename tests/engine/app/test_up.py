"""`spacevllm up` as an operator runs it: bad models fail in one line and leave nothing behind; state survives a
restart; Ctrl-C (SIGINT to the whole process group) still ends the open events."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from stream.keys import Keys
from stream.redis_server import EmbeddedRedis, connect
from tests.engine.harness import events_of


def _config(tmp_path: Path, model_dir, data_dir: Path) -> Path:
    cfg = tmp_path / "up.yaml"
    cfg.write_text(yaml.safe_dump({
        "data_dir": str(data_dir),
        "windows": {"sample_fps": 2, "window_seconds": 4, "stride_seconds": 1},  # input size: the model's
        "cameras": [{"id": "cam1", "url": "synthetic://random?seed=2&fps=10&w=160&h=120"}],
        "engine": {"model": str(model_dir), "threads": 1},
        "queries": [{"id": "q-any", "text": "the red circle", "threshold": 0.0, "cooldown_s": 30.0}],
        "api": {"port": 0},  # up starts the API too: a free port, not 8080
    }))
    return cfg


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "REDIS_CLUSTER", "SVL_DATA_DIR")}


def _redis_servers_on(data_dir: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", "redis-server"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(data_dir) in line]


def _up(cfg: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine.app.cli", "up", "--config", str(cfg), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), start_new_session=True)


def _stored_events(data_dir: Path) -> tuple[list[dict], list[str]]:
    """Open the data directory's Redis after `up` has stopped, and read the feed and the queries."""
    server = EmbeddedRedis.start(data_dir / "redis")
    try:
        client = connect(server.url)
        return events_of(client, Keys()), sorted(k.decode() for k in client.hkeys(Keys().queries()))
    finally:
        server.stop()


@pytest.mark.parametrize("damage", ["missing", "truncated", "pickle"])
def test_up_with_a_bad_model_fails_in_one_line_and_leaves_nothing_running(tmp_path, tiny_model_dir, damage):
    model = tmp_path / "model"
    if damage == "missing":
        model = tmp_path / "no-such-model"
    else:
        shutil.copytree(tiny_model_dir, model)
        weights = model / "model.safetensors"
        if damage == "truncated":
            weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        else:
            (model / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    data = tmp_path / "data"
    proc = _up(_config(tmp_path, model, data))
    out, err = proc.communicate(timeout=120)
    # then exit code 1 and one line naming the problem, no traceback
    assert proc.returncode == 1, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: cannot load the model:"), err
    assert {"missing": "does not exist", "truncated": "not a readable safetensors", "pickle": "refusing pickle"}[damage] in err
    # and no embedded Redis was started or left behind
    assert _redis_servers_on(data) == [] and not (data / "redis" / "redis.pid").exists()


def test_validate_config_checks_that_the_model_directory_loads(tmp_path, tiny_model_dir):
    data = tmp_path / "data"
    good = subprocess.run([sys.executable, "-m", "engine.app.cli", "validate-config", str(_config(tmp_path, tiny_model_dir, data))],
                          capture_output=True, text=True, env=_env())
    assert good.returncode == 0 and "model test (" in good.stdout, good.stderr
    bad = subprocess.run([sys.executable, "-m", "engine.app.cli", "validate-config", str(_config(tmp_path, tmp_path / "nope", data))],
                         capture_output=True, text=True, env=_env())
    assert bad.returncode == 1 and "engine.model: model directory" in bad.stderr and "does not exist" in bad.stderr


def test_up_keeps_state_across_restarts_and_ctrl_c_ends_open_events(tmp_path, tiny_model_dir):
    data = tmp_path / "data"
    cfg = _config(tmp_path, tiny_model_dir, data)
    # given `up` running until it has published an event (its query always matches; cooldown keeps the event open)
    proc = _up(cfg)
    deadline = time.monotonic() + 90
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen.append(line)
        if " NEW " in line or line.startswith("NEW") or "NEW   " in line:
            break
        assert proc.poll() is None, "".join(seen) + proc.stderr.read()
    assert any("NEW" in line for line in seen), "".join(seen)
    # when Ctrl-C reaches its whole process group (what a terminal does)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    # then nothing is left running, and the open event was ended (the camera stopped) before Redis was stopped
    assert _redis_servers_on(data) == [], _redis_servers_on(data)
    first, queries = _stored_events(data)
    assert queries == ["q-any"]
    ends = [e for e in first if e["type"] == "end"]
    assert ends and ends[-1]["reason"] == "camera_stopped" and ends[-1]["event_id"] == first[0]["event_id"]

    # when `up` runs a second time on the same data directory
    again = _up(cfg, "--max-seconds", "12")
    out2, err2 = again.communicate(timeout=120)
    assert again.returncode == 0, err2
    # then the first run's events are still there, new ones follow, and nothing appears twice
    second, queries = _stored_events(data)
    assert second[: len(first)] == first and len(second) > len(first)
    ids = [(e["event_id"], e["type"], e["window_id"]) for e in second]
    assert len(ids) == len(set(ids)) and queries == ["q-any"]
    assert _redis_servers_on(data) == []
