"""Soak: memory stays bounded when the service runs for a long time.

4 real-time synthetic cameras x 4 standing queries through the real processes (`spacevllm ingest` and
`spacevllm engine` against an embedded Redis with AOF and its memory cap), with retention settings short
enough to reach steady state inside the run (frames 30 s, events 5 min / 500 per shard). Every 30 s it
samples each process's RSS, Redis `used_memory`, its key count and the AOF size. After the warm-up
(retention + 1 min) none may grow more than 10%: the table shows the value at the end of warm-up, the
largest value after it, and the growth.

It also measures the unit sizes (MEMORY USAGE of a stored frame, a window entry, an event entry, a done
marker, an event record) and works out the steady-state memory per camera for the *default* retention.

    .venv/bin/python bench/soak.py [--minutes 30] [--cameras 4] [--queries 4]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.serving.event_store import done_ttl_s  # noqa: E402
from engine.contracts.queries import QueryRegistry, validate_query  # noqa: E402
from engine.contracts.settings import EngineSettings  # noqa: E402
from stream.config import WindowSettings  # noqa: E402
from stream.keys import Keys  # noqa: E402
from stream.redis_server import EmbeddedRedis, connect  # noqa: E402

QUERIES = ["the red circle moving right", "the yellow triangle moving down", "the blue square", "the green triangle moving up"]
SHORT = {"frame_ttl_seconds": 30, "windows_maxlen": 500}
SHORT_ENGINE = {"events_retention_s": 300, "events_maxlen": 500}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def aof_mb(data: Path) -> float:
    return sum(p.stat().st_size for p in data.rglob("*.aof*") if p.is_file()) / 2**20


def unit_sizes(client, keys: Keys) -> dict[str, float]:
    """Bytes per stored object, medians of what the run left in Redis."""
    import statistics

    def med(values):
        return statistics.median(values) if values else 0.0

    frames, windows, events, records, dones = [], [], [], [], []
    for key in client.scan_iter(match=f"{keys.prefix}*", count=1000):
        k = key.decode()
        if ":frame:" in k and len(frames) < 200:
            frames.append(client.memory_usage(k))
        elif ":done:" in k and len(dones) < 200:
            dones.append(client.memory_usage(k))
        elif ":evt:" in k and len(records) < 200:
            records.append(client.memory_usage(k))
    for s in keys.all_shards():
        n = client.xlen(keys.windows(s))
        if n:
            windows.append(client.memory_usage(keys.windows(s), samples=0) / n)
        n = client.xlen(keys.events(s))
        if n:
            events.append(client.memory_usage(keys.events(s), samples=0) / n)
    return {"frame": med(frames), "window_entry": med(windows), "event_entry": med(events), "event_record": med(records),
            "done_marker": med(dones)}


def per_camera_at_defaults(units: dict[str, float], events_per_camera_s: float) -> dict[str, float]:
    """Steady-state bytes per camera with the default settings (2 fps, 8 s / 2 s windows, frames 60 s, windows
    10,000 per shard, events 7 days but at most 5,000 per shard (8 shards), done markers for done_ttl_s)."""
    w, e = WindowSettings(), EngineSettings()
    windows_per_s = 1 / w.stride_seconds
    frames = w.frame_ttl_seconds * w.sample_fps * units["frame"]
    # a shard's window stream fills up to its cap; with C cameras per shard each holds cap / C: the worst case is
    # one camera per shard, and the bound for the deployment is shards x cap entries
    windows_cap = w.windows_maxlen * units["window_entry"]
    dones = done_ttl_s(e) * windows_per_s * units["done_marker"]
    events_by_age = events_per_camera_s * e.events_retention_s * (units["event_entry"] + units["event_record"])
    events_cap = e.events_maxlen * (units["event_entry"] + units["event_record"])
    return {"frames": frames, "done_markers": dones, "window_stream_cap_per_shard": windows_cap,
            "events_by_age": events_by_age, "events_cap_per_shard": events_cap}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--queries", type=int, default=4)
    ap.add_argument("--sample-s", type=float, default=30.0)
    ap.add_argument("--warmup-minutes", type=float, default=None, help="default: events retention + 1 min")
    ap.add_argument("--out", default=None, help="write the samples as JSON here")
    args = ap.parse_args()
    warmup_s = (args.warmup_minutes * 60) if args.warmup_minutes is not None else SHORT_ENGINE["events_retention_s"] + 60

    tmp = Path(tempfile.mkdtemp(prefix="svl-soak-"))
    server = EmbeddedRedis.start(tmp / "redis", maxmemory="1gb", prefer_system=True)
    client = connect(server.url)
    keys = Keys()
    reg = QueryRegistry(client, keys)
    for k in range(args.queries):
        reg.add(validate_query({"id": f"q{k}", "text": QUERIES[k % len(QUERIES)], "cooldown_s": 2.0}))
    cfg = tmp / "soak.yaml"
    cfg.write_text(yaml.safe_dump({
        "redis": {"url": server.url},
        "windows": SHORT,
        "cameras": [{"id": f"cam{i}", "url": "synthetic://demo?fps=10" if i == 0 else f"synthetic://random?seed={i}&fps=10"}
                    for i in range(args.cameras)],
        "engine": {**SHORT_ENGINE, "threads": 1},
    }))
    env = {**os.environ, "REDIS_URL": "", "REDIS_CLUSTER": ""}
    logs = {role: open(tmp / f"{role}.log", "w") for role in ("ingest", "engine")}
    procs = {role: subprocess.Popen([sys.executable, "-m", "engine.app.cli", role, "--config", str(cfg)], stdout=logs[role],
                                    stderr=subprocess.STDOUT, env=env) for role in ("ingest", "engine")}
    samples = []
    started = time.monotonic()
    try:
        while time.monotonic() - started < args.minutes * 60:
            time.sleep(args.sample_s)
            for role, p in procs.items():
                if p.poll() is not None:
                    raise SystemExit(f"{role} exited with {p.returncode}; see {tmp / (role + '.log')}")
            info = client.info("memory")
            events = sum(client.xlen(keys.events(s)) for s in keys.all_shards())
            samples.append({"t": round(time.monotonic() - started), "ingest_rss_mb": rss_mb(procs["ingest"].pid),
                            "engine_rss_mb": rss_mb(procs["engine"].pid), "redis_rss_mb": rss_mb(server.process.pid),
                            "used_memory_mb": info["used_memory"] / 2**20, "keys": client.dbsize(), "events": events,
                            "aof_mb": aof_mb(tmp / "redis")})
            print(json.dumps(samples[-1]), flush=True)
        units = unit_sizes(client, keys)
        windows = sum(int(client.hget(keys.health(f"cam{i}"), "windows") or 0) for i in range(args.cameras))
        produced_events = max(s["events"] for s in samples)
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        server.stop()
    if args.out:
        Path(args.out).write_text(json.dumps({"samples": samples, "units": units}, indent=1))

    steady = [s for s in samples if s["t"] >= warmup_s]
    base = [s for s in samples if s["t"] < warmup_s][-1:] or samples[:1]
    print(f"\nsoak: {args.cameras} cameras x {args.queries} queries, {args.minutes:.0f} min, {windows} windows, "
          f"samples every {args.sample_s:.0f} s, warm-up {warmup_s / 60:.0f} min (retention: frames "
          f"{SHORT['frame_ttl_seconds']} s, events {SHORT_ENGINE['events_retention_s']} s / {SHORT_ENGINE['events_maxlen']} per shard)")
    print("| measure | end of warm-up | max after warm-up | growth | within 10% |")
    print("| --- | --- | --- | --- | --- |")
    ok = True
    for k in ("ingest_rss_mb", "engine_rss_mb", "redis_rss_mb", "used_memory_mb", "keys", "aof_mb"):
        if not steady:
            break
        b, m = base[0][k], max(s[k] for s in steady)
        growth = (m - b) / b if b else 0.0
        within = growth <= 0.10
        ok &= within or k == "aof_mb"  # the AOF is rewritten in steps (auto-aof-rewrite): reported, not judged
        print(f"| {k} | {b:.1f} | {m:.1f} | {growth * 100:+.1f}% | {'yes' if within else 'NO'} |")
    print("\nunit sizes (bytes): " + ", ".join(f"{k} {v:.0f}" for k, v in units.items()))
    rate = produced_events / max(1.0, min(args.minutes * 60, SHORT_ENGINE["events_retention_s"])) / args.cameras
    est = per_camera_at_defaults(units, rate)
    print(f"steady state per camera at the default retention (events at this run's rate, {rate * 3600:.0f}/h per camera): "
          + ", ".join(f"{k} {v / 2**20:.2f} MiB" for k, v in est.items()))
    print("result: " + ("bounded" if ok else "GROWING"))


if __name__ == "__main__":
    main()
