"""The headline: N real-time H.264 cameras x Q standing queries through the real ingest and engine, as `up` runs
them (separate processes, `up`'s thread budgets), for a while; then what the machine sustains.

    .venv/bin/python bench/headline.py [--cameras 8] [--queries 4] [--seconds 600] [--resolution 720p|1080p]
                                       [--content demo|noisy|real] [--bframes 0]
    .venv/bin/python bench/headline.py --sweep 6,8,10,12 --seconds 120 [--queries 16] [--resolution 1080p]

The content (bench/clips.py) is rendered to an H.264 file once, 25 fps: `demo`, the demo scene (flat colours,
light noise, ~1.9 Mbit/s at 720p, every frame an I-frame: easy to decode); `noisy`, its episodes over a textured
background with fresh sensor noise, and `real`, real street footage tiled to the frame, both encoded like a camera
(8 Mbit/s CBR at 720p, 12 at 1080p, GOP 2 s, no B-frames unless --bframes). Every camera plays it as a looping
real-time `file://` source (a live camera: frames more than 1 s late are dropped and counted, windows may be skipped
by the engine's admission control and are counted). Windows 8 s / stride 2 s / 2 fps, frames 64 px PNG, the shipped
tiny model, an embedded Redis.

Printed first: the content (resolution, Mbit/s, GOP, B-frames, x264 settings, read back from the file) and its
decode-only rate on one thread (bench/decode.py, before the cameras start), as cores per camera: the physical
limit to read the result against. Then, over the steady state (after --warmup seconds): windows produced vs processed
per second, windows skipped by admission control, backlog (produced - handled) at the start and end of the steady
state, capture-to-event latency p50 / p95 (from the engine's latency histogram; capture of a window's last frame ->
its events committed) and the largest single value, frames decoded vs dropped (by reason, as the camera health
counts them), CPU seconds per role. The bound: p95 <= stride + 1 s, backlog not growing (end - start <= 2 windows
per camera), drops <= 1%, skipped <= 1%.

Lever switches (for measuring them side by side): --topology threads (ingest and engine as threads of one process,
which shares one GIL and lets the thread pools oversubscribe the cores), --engine-threads, --backend, --batch.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.clips import CONTENTS, clip, describe  # noqa: E402
from bench.decode import decode_limit, limit_line  # noqa: E402
from engine.serving.latency import diff, quantile  # noqa: E402
from engine.contracts.queries import QueryRegistry, validate_query  # noqa: E402
from engine.app.service import engine_role, ingest_role, up_engine_threads  # noqa: E402
from engine.contracts.settings import EngineSettings, ServiceConfig  # noqa: E402
from engine.app.supervisor import Supervisor  # noqa: E402
from stream.config import CameraSettings, IngestSettings, RedisSettings, WindowSettings  # noqa: E402
from stream.keys import Keys  # noqa: E402
from stream.redis_server import EmbeddedRedis, connect  # noqa: E402

QUERIES = ["the red circle moving right", "the yellow triangle moving down", "the blue square", "the green triangle moving up",
           "the white circle moving left", "the small red circle", "the large blue square moving up", "the white square",
           "the large yellow triangle", "the small white circle", "the red square", "the blue circle moving left",
           "the green circle", "the yellow square standing still", "the white triangle moving right", "the small blue square"]
WINDOWS = WindowSettings(sample_fps=2, window_seconds=8, stride_seconds=2, input_size=64, image_format="png")


def quiet(line: str) -> None:
    """The engine role's event echo: the bench prints a table, not events."""


def combined_role(control, cfg: ServiceConfig, url: str, cameras) -> None:
    """Ingest and the engine as threads of one process (for --topology threads: the layout `up` does not use)."""
    from engine.app.service import build_engine, load_engine_model
    from stream.ingest import IngestService

    if control.threads:
        cfg = cfg.model_copy(update={"engine": cfg.engine.model_copy(update={"threads": control.threads})})
    loaded = load_engine_model(cfg)
    client = connect(url)
    ingest = IngestService(client, cfg.redis.keys(), cameras, cfg.windows, cfg.ingest, stop=control.stop)
    t = threading.Thread(target=ingest.run, kwargs={"install_signals": False}, daemon=True)
    t.start()
    build_engine(cfg, client, cfg.redis.keys(), control.stop, on_event=quiet, loaded=loaded).run()
    t.join(15)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its threads."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError):
        return float("nan")


DROP_PREFIX = "frames_dropped_"  # the health's per-reason drop counters, whichever reasons it has


def sample(client, keys: Keys, cameras: list[str]) -> dict:
    produced = decoded = dropped = 0
    reasons: dict[str, int] = {}
    for cam in cameras:
        h = {k.decode(): v.decode() for k, v in client.hgetall(keys.health(cam)).items()}
        produced += int(h.get("windows", 0))
        decoded += int(h.get("frames_decoded", 0))
        dropped += int(h.get("frames_dropped", 0))
        for k, v in h.items():
            if k.startswith(DROP_PREFIX):
                reasons[k.removeprefix(DROP_PREFIX)] = reasons.get(k.removeprefix(DROP_PREFIX), 0) + int(v)
    beats = [json.loads(client.get(k)) for k in client.scan_iter(match=keys.heartbeat("engine", "*")) if client.get(k)]
    b = beats[0] if beats else {}
    handled = sum(int(b.get(k, 0)) for k in ("processed", "frames_gone", "superseded", "stale"))
    return {"t": time.monotonic(), "produced": produced, "decoded": decoded, "dropped": dropped, "reasons": reasons,
            "processed": int(b.get("processed", 0)),
            "skipped_admission": int(b.get("superseded", 0)) + int(b.get("stale", 0)), "skipped_missing": int(b.get("frames_gone", 0)),
            "handled": handled, "backlog": produced - handled, "buckets": b.get("latency_buckets"),
            "max_s": float(b.get("latency_max_30s", 0.0)), "batches": int(b.get("batches", 0))}


def run(args, clip_path: Path, cameras: int, queries: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-headline-"))
    server = EmbeddedRedis.start(tmp / "redis", appendonly=False)
    roles = Supervisor()
    try:
        client = connect(server.url)
        engine = EngineSettings(backend=args.backend, batch_windows=args.batch, threads=0)
        cfg = ServiceConfig(data_dir=str(Path(args.data_dir)), redis=RedisSettings(url=server.url), windows=WINDOWS,
                            ingest=IngestSettings(decoder_threads=args.decoder_threads), engine=engine)
        keys = cfg.redis.keys()
        cams = [CameraSettings(id=f"cam{k}", url=f"file://{clip_path}", loop=True, realtime=True) for k in range(cameras)]
        reg = QueryRegistry(client, keys)
        for k in range(queries):
            reg.add(validate_query({"id": f"q{k}", "text": QUERIES[k % len(QUERIES)], "cooldown_s": 2.0}))
        engine_threads = args.engine_threads or up_engine_threads(cfg)
        if args.topology == "processes":
            roles.start("engine", engine_role, (cfg, server.url, quiet), threads=engine_threads)
            time.sleep(args.engine_start_s)  # the model loaded before the cameras start, as `up` does
            roles.start("ingest", ingest_role, (cfg, server.url, cams))
        else:
            roles.start("combined", combined_role, (cfg, server.url, cams), threads=engine_threads)
        names = [c.id for c in cams]
        samples = []
        steady_at = time.monotonic() + args.warmup
        end_at = steady_at + args.seconds
        cpu0 = None
        while time.monotonic() < end_at:
            time.sleep(5.0)
            if not all(roles.alive(n) for n in roles.roles):
                raise RuntimeError("a role died")
            s = sample(client, keys, names)
            if s["t"] >= steady_at:
                if cpu0 is None:
                    cpu0 = (time.monotonic(), {n: cpu_seconds(r.process.pid) for n, r in roles.roles.items()})
                samples.append(s)
        cpu1 = (time.monotonic(), {n: cpu_seconds(r.process.pid) for n, r in roles.roles.items()})
    finally:
        roles.close()
        server.stop()
    a, z = samples[0], samples[-1]
    dt = z["t"] - a["t"]
    lat = diff(z["buckets"], a["buckets"]) if a["buckets"] and z["buckets"] else []
    produced = z["produced"] - a["produced"]
    decoded = z["decoded"] - a["decoded"]
    out = {
        "cameras": cameras, "queries": queries, "resolution": args.resolution, "seconds": dt,
        "produced_per_s": produced / dt, "processed_per_s": (z["processed"] - a["processed"]) / dt,
        "skipped": z["skipped_admission"] - a["skipped_admission"] + z["skipped_missing"] - a["skipped_missing"],
        "produced": produced, "backlog_start": a["backlog"], "backlog_end": z["backlog"],
        "p50": quantile(0.5, lat) if lat else math.nan, "p95": quantile(0.95, lat) if lat else math.nan,
        "max": max(s["max_s"] for s in samples[6:]) if len(samples) > 6 else math.nan,  # 30 s back: steady state only
        "decoded": decoded, "dropped": z["dropped"] - a["dropped"],
        "dropped_by_reason": {k: v - a["reasons"].get(k, 0) for k, v in sorted(z["reasons"].items())},
        "windows_per_batch": (z["processed"] - a["processed"]) / max(1, z["batches"] - a["batches"]),
        "cpu": {n: (cpu1[1][n] - cpu0[1][n]) / (cpu1[0] - cpu0[0]) for n in cpu1[1]},
    }
    stride = WINDOWS.stride_seconds
    out["holds"] = bool(out["p95"] <= stride + 1 and out["backlog_end"] - out["backlog_start"] <= 2 * cameras
                        and out["dropped"] <= 0.01 * max(1, decoded + out["dropped"]) and out["skipped"] <= 0.01 * max(1, produced))
    return out


def report(r: dict) -> None:
    total = r["decoded"] + r["dropped"]
    print(f"{r['cameras']} x {r['resolution']}25 cameras ({r['content']}) x {r['queries']} queries, "
          f"steady state {r['seconds']:.0f} s")
    print(f"  {limit_line(r['decode_only_fps'], r['cameras'])}")
    print(f"  windows produced {r['produced_per_s']:.2f}/s, processed {r['processed_per_s']:.2f}/s "
          f"({r['windows_per_batch']:.1f} per batch), skipped {r['skipped']} of {r['produced']}")
    print(f"  backlog (windows produced - handled) at start {r['backlog_start']}, at end {r['backlog_end']}")
    print(f"  capture-to-event latency p50 {r['p50']:.2f} s, p95 {r['p95']:.2f} s, max {r['max']:.2f} s "
          f"(bound: p95 <= {WINDOWS.stride_seconds + 1:.0f} s)")
    reasons = ", ".join(f"{k} {v}" for k, v in r["dropped_by_reason"].items())
    print(f"  frames decoded {r['decoded']}, dropped {r['dropped']} ({100 * r['dropped'] / max(1, total):.2f}%"
          + (f"; {reasons})" if reasons else ")"))
    print("  CPU (cores): " + ", ".join(f"{n} {v:.2f}" for n, v in r["cpu"].items()))
    print(f"  bound holds: {'yes' if r['holds'] else 'NO'}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--queries", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=600.0, help="steady state measured, after --warmup")
    ap.add_argument("--warmup", type=float, default=30.0)
    ap.add_argument("--resolution", default="720p", choices=["480p", "720p", "1080p"])
    ap.add_argument("--content", default="demo", choices=CONTENTS, help="what the cameras show (bench/clips.py)")
    ap.add_argument("--bframes", type=int, default=0, help="B-frames of the noisy and real clips (0: none, as most cameras)")
    ap.add_argument("--sweep", default=None, help="camera counts, e.g. 6,8,10,12: the most that hold the bound")
    ap.add_argument("--topology", default="processes", choices=["processes", "threads"])
    ap.add_argument("--engine-threads", type=int, default=0, help="0: as `up` chooses")
    ap.add_argument("--decoder-threads", type=int, default=0, help="per camera; 0: as `up` chooses")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--batch", type=int, default=8, help="engine.batch_windows")
    ap.add_argument("--engine-start-s", type=float, default=8.0)
    ap.add_argument("--data-dir", default=str(Path(tempfile.gettempdir()) / "spacevllm-bench"), help="ONNX export cache")
    ap.add_argument("--json", default=None, help="append each result as a JSON line to this file")
    args = ap.parse_args()
    counts = [int(x) for x in args.sweep.split(",")] if args.sweep else [args.cameras]
    path = clip(args.content, args.resolution, bframes=args.bframes)
    info = describe(path)
    limit = decode_limit(path)  # before any camera starts: the content's limit on a quiet machine
    print(f"content {args.content}: {info.summary()}")
    print(limit_line(limit, max(counts)))
    results = []
    for n in counts:
        r = run(args, path, n, args.queries)
        r.update(content=args.content, clip=info.summary(), mbps=info.mbps, decode_only_fps=limit,
                 decode_cores_per_camera=25 / limit)
        report(r)
        results.append(r)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps({**r, "args": vars(args)}) + "\n")
        sys.stdout.flush()
    if args.sweep:
        ok = [r["cameras"] for r in results if r["holds"]]
        print(f"sweep ({args.resolution}, {args.content}, {args.queries} queries, {args.seconds:.0f} s each): "
              + ", ".join(f"{r['cameras']}: p95 {r['p95']:.2f} s, backlog {r['backlog_start']}->{r['backlog_end']}, "
                          f"skipped {r['skipped']}, drops {r['dropped']} {'ok' if r['holds'] else 'NO'}" for r in results))
        print(f"most cameras at the bound: {max(ok) if ok else 'none of those tried'}")


if __name__ == "__main__":
    main()
