"""Two engine worker processes on one Redis: standalone and a real 3-master Cluster on 127.0.0.1."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest
import yaml

from stream.config import CameraSettings, WindowSettings
from stream.ingest import IngestService
from stream.keys import Keys
from stream.redis_server import connect
from stream.types import Window
from tests.engine.harness import ALWAYS, add_queries, events_of, pending
from tests import waiting

CAMERAS = [CameraSettings(id=f"cam{i}", url=f"synthetic://random?seed={i}&fps=10&realtime=0&seconds=10&epoch=1000&w=160&h=120")
           for i in range(6)]
WINDOWS = WindowSettings(sample_fps=2, window_seconds=4, stride_seconds=1, input_size=32, frame_ttl_seconds=600)


@pytest.fixture(params=["standalone", "cluster"])
def target(request, redis_url):
    """(Redis URL, cluster?) for both deployments."""
    if request.param == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        return cluster.url, True
    return redis_url, False


def _setup(url: str, cluster: bool, prefix: str, wait_for: tuple[str, ...] = ()):
    """Queries, then (once the named workers are up, so that each can take a share) the cameras' windows."""
    client = connect(url, cluster=cluster)
    keys = Keys(prefix)
    add_queries(client, keys, ALWAYS)
    waiting.wait_for(lambda: all(client.exists(keys.heartbeat("engine", w)) for w in wait_for), 120,
                     "the workers to start", step_s=0.05)
    IngestService(client, keys, CAMERAS, WINDOWS).run(install_signals=False)
    total = sum(client.xlen(keys.windows(s)) for s in keys.all_shards())
    assert total >= 6 * 6
    return client, keys, total


def _engine(tmp_path, url, cluster, prefix, model_dir, name, idle_s=3.0) -> subprocess.Popen:
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump({"redis": {"url": url, "cluster": cluster, "prefix": prefix},
                                   "engine": {"model": str(model_dir), "claim_idle_ms": 500, "block_ms": 100, "threads": 1}}))
    env = {**os.environ, "REDIS_URL": "", "REDIS_CLUSTER": ""}
    return subprocess.Popen([sys.executable, "-m", "engine.app.cli", "engine", "--config", str(cfg), "--consumer", name,
                             "--exit-when-idle", str(idle_s)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _assert_each_event_once(client, keys):
    events = events_of(client, keys)
    ids = [(e["event_id"], e["type"], e["window_id"]) for e in events]
    assert events and len(ids) == len(set(ids))


def test_two_workers_process_every_window_exactly_once(target, tmp_path, tiny_model_dir):
    url, cluster = target
    # when two engine worker processes share the windows of 6 cameras
    procs = [_engine(tmp_path, url, cluster, "two:", tiny_model_dir, f"w{i}", idle_s=8.0) for i in range(2)]
    client, keys, total = _setup(url, cluster, "two:", wait_for=("w0", "w1"))
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    # then every window was processed once, by one of them, and both took a share
    counts = [int(re.search(r"stopped: (\d+) windows processed", o).group(1)) for o in outs]
    assert sum(counts) == total and min(counts) > 0, counts
    assert pending(client, keys) == 0
    # and no command crossed slots, and each event (id, type, window) is in the feed once
    assert not any("CROSSSLOT" in o or "Traceback" in o for o in outs), outs
    _assert_each_event_once(client, keys)


def test_a_killed_worker_leaves_its_windows_to_the_other(target, tmp_path, tiny_model_dir):
    url, cluster = target
    client, keys, total = _setup(url, cluster, "kill:")
    victim = _engine(tmp_path, url, cluster, "kill:", tiny_model_dir, "victim", idle_s=60)
    try:
        waiting.wait_for(lambda: events_of(client, keys), 90, "the victim to process something", step_s=0.1)
        # when it is SIGKILLed mid-run
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
    finally:
        if victim.poll() is None:
            victim.kill()
    done_by_victim = len({e["window_id"] for e in events_of(client, keys)})
    assert done_by_victim < total
    survivor = _engine(tmp_path, url, cluster, "kill:", tiny_model_dir, "survivor")
    out = survivor.communicate(timeout=180)[0]
    # then the other worker finishes every window (the victim's pending one included)
    assert survivor.returncode == 0, out
    assert pending(client, keys) == 0 and int(re.search(r"stopped: (\d+) windows processed", out).group(1)) > 0
    windows = [Window.from_fields(f) for s in keys.all_shards() for _, f in client.xrange(keys.windows(s))]
    assert len(windows) == total and all(client.exists(keys.window_done(w.camera_id, w.window_id)) for w in windows)
    assert not any(s in out for s in ("CROSSSLOT", "Traceback"))
    _assert_each_event_once(client, keys)
