"""Engine scale-out: windows/s with 1 vs 2 engine worker processes on one Redis, standalone and a local
3-master Cluster, measured side by side in one run (the order alternates between repeats).

A backlog of windows (N cameras of the demo scenes, rendered as fast as possible) is ingested first;
then the workers start, and throughput is counted from their heartbeats once every worker is up (so
process start and model load are not counted), until the backlog is gone. Each worker uses one torch
thread, so 2 workers can use both cores of this machine.

    .venv/bin/python bench/scale_out.py [--cameras 8] [--seconds 40] [--repeats 2] [--no-cluster]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.contracts.queries import QueryRegistry, validate_query  # noqa: E402
from engine.contracts.settings import DEFAULT_MODEL_DIR  # noqa: E402
from stream.config import CameraSettings, WindowSettings  # noqa: E402
from stream.ingest import IngestService  # noqa: E402
from stream.keys import Keys  # noqa: E402
from stream.redis_server import EmbeddedRedis, connect  # noqa: E402

QUERIES = ["the red circle moving right", "the yellow triangle moving down", "the blue square", "the green triangle moving up"]
WINDOWS = WindowSettings(sample_fps=2, window_seconds=8, stride_seconds=2, input_size=64, frame_ttl_seconds=3600)


def backlog(url: str, cluster: bool, prefix: str, cameras: int, seconds: float) -> int:
    client = connect(url, cluster=cluster)
    keys = Keys(prefix)
    cams = [CameraSettings(id=f"cam{i}", url=f"synthetic://random?seed={i}&fps=10&realtime=0&seconds={seconds}&epoch=1000")
            for i in range(cameras)]
    IngestService(client, keys, cams, WINDOWS).run(install_signals=False)
    reg = QueryRegistry(client, keys)
    for k, text in enumerate(QUERIES):
        reg.add(validate_query({"id": f"q{k}", "text": text, "cooldown_s": 2.0}))
    return sum(client.xlen(keys.windows(s)) for s in keys.all_shards())


def drain(url: str, cluster: bool, prefix: str, workers: int, total: int, tmp: Path) -> float:
    """Windows/s of `workers` engine processes working off the backlog."""
    cfg = tmp / f"{prefix.strip(':')}.yaml"
    cfg.write_text(yaml.safe_dump({"redis": {"url": url, "cluster": cluster, "prefix": prefix},
                                   "engine": {"model": DEFAULT_MODEL_DIR, "threads": 1, "block_ms": 200}}))
    env = {**os.environ, "REDIS_URL": "", "REDIS_CLUSTER": "", "OMP_NUM_THREADS": "1"}
    client = connect(url, cluster=cluster)
    keys = Keys(prefix)
    procs = [subprocess.Popen([sys.executable, "-m", "engine.app.cli", "engine", "--config", str(cfg), "--consumer", f"w{i}",
                               "--exit-when-idle", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
             for i in range(workers)]

    def processed() -> tuple[int, int]:
        beats = [client.get(keys.heartbeat("engine", f"w{i}")) for i in range(workers)]
        alive = [json.loads(b) for b in beats if b]
        return len(alive), sum(b["processed"] + b["frames_gone"] for b in alive)

    try:
        while processed()[0] < workers:
            time.sleep(0.05)
        t0, n0 = time.monotonic(), processed()[1]
        last = (t0, n0)
        while any(p.poll() is None for p in procs):
            alive, n = processed()
            if alive:
                last = (time.monotonic(), n)
            if n >= total:
                break
            time.sleep(0.05)
        t1, n1 = last
    finally:
        for p in procs:
            p.wait(timeout=120)
    return (n1 - n0) / (t1 - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=40.0, help="video per camera in the backlog")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-cluster", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="svl-scale-"))
    targets = []
    server = EmbeddedRedis.start(tmp / "redis", appendonly=False, prefer_system=True)
    targets.append(("standalone", server.url, False))
    cluster = None
    if not args.no_cluster:
        from tests.cluster import LocalCluster, cluster_unavailable

        if cluster_unavailable():
            print(f"cluster skipped: {cluster_unavailable()}")
        else:
            cluster = LocalCluster(tmp / "cluster").start()
            targets.append(("cluster (3 masters)", cluster.url, True))
    results: dict[tuple[str, int], list[float]] = {}
    try:
        run = 0
        for r in range(args.repeats):
            for name, url, is_cluster in targets:
                for workers in ((1, 2) if r % 2 == 0 else (2, 1)):
                    run += 1
                    prefix = f"b{run}:"
                    total = backlog(url, is_cluster, prefix, args.cameras, args.seconds)
                    rate = drain(url, is_cluster, prefix, workers, total, tmp)
                    results.setdefault((name, workers), []).append(rate)
                    print(f"{name}: {workers} worker(s), {total} windows: {rate:.2f} windows/s", flush=True)
    finally:
        server.stop()
        if cluster is not None:
            cluster.stop()
    print(f"\nengine scale-out, {args.cameras} cameras x {len(QUERIES)} queries, shipped tiny model, 1 torch thread per "
          f"worker, medians of {args.repeats}")
    print("| Redis | 1 worker windows/s | 2 workers windows/s | ratio |")
    print("| --- | --- | --- | --- |")
    for name, _, _ in targets:
        one, two = statistics.median(results[(name, 1)]), statistics.median(results[(name, 2)])
        print(f"| {name} | {one:.2f} | {two:.2f} | {two / one:.2f}x |")


if __name__ == "__main__":
    main()
