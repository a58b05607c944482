"""Engine benchmarks, each measured side by side in one run:

1. vision encodes per unique frame (window 8 s, stride 2 s): target <= 1.05
2. one window with 1, 4, 16 standing queries: shared prefix vs recomputing per query; target t(16)/t(1) <= 3
3. capture-to-event latency p50/p95 and windows/s with 4 real-time synthetic cameras x 4 queries
4. batching across windows: 8 windows of 8 cameras x 4 queries grounded one at a time vs as one batch
   (`WindowGrounder.ground_many`), torch and onnxruntime, frames already encoded (the steady state: 4 of 16 new)

    .venv/bin/python bench/engine.py [--model models/tiny] [--seconds 60] [--only 4]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.serving.grounder import WindowGrounder  # noqa: E402
from engine.model.checkpoint import load_model  # noqa: E402
from engine.contracts.queries import QueryRegistry, validate_query  # noqa: E402
from engine.serving.runtime import TorchBackend  # noqa: E402
from engine.contracts.settings import DEFAULT_MODEL_DIR, EngineSettings  # noqa: E402
from engine.serving.worker import EngineWorker  # noqa: E402
from stream.config import CameraSettings, WindowSettings  # noqa: E402
from stream.ingest import IngestService  # noqa: E402
from stream.keys import Keys  # noqa: E402
from stream.redis_server import EmbeddedRedis, connect  # noqa: E402
from stream.types import Window  # noqa: E402

QUERIES = ["the red circle moving right", "the yellow triangle moving down", "the blue square", "the green triangle moving up",
           "the white circle moving left", "the small red circle", "the large blue square moving up", "the white square"]
WINDOWS = WindowSettings(sample_fps=2, window_seconds=8, stride_seconds=2, input_size=64, frame_ttl_seconds=600)


def add_queries(client, keys, n, cameras=("*",)):
    reg = QueryRegistry(client, keys)
    for k in range(n):
        reg.add(validate_query({"id": f"q{k}", "text": QUERIES[k % len(QUERIES)], "cameras": list(cameras), "cooldown_s": 2.0}))


def encodes_per_frame(client, model) -> tuple[int, int, int]:
    keys = Keys("enc:")
    IngestService(client, keys, [CameraSettings(id="c", url="synthetic://demo?fps=10&realtime=0&seconds=60&epoch=1000")],
                  WINDOWS).run(install_signals=False)
    add_queries(client, keys, 4)
    grounder = WindowGrounder(model, TorchBackend(model), keys)
    EngineWorker(client, keys, grounder, EngineSettings(block_ms=100)).run(idle_exit_s=1.0)
    unique = {ts for s in keys.all_shards() for _, f in client.xrange(keys.windows(s)) for ts in Window.from_fields(f).frames_ms}
    return grounder.stats.frames_encoded, len(unique), grounder.stats.windows


def per_window(client, model, repeats: int) -> list[tuple[int, float, float]]:
    keys = Keys("pw:")
    IngestService(client, keys, [CameraSettings(id="c", url="synthetic://demo?fps=10&realtime=0&seconds=9&epoch=1000")],
                  WINDOWS).run(install_signals=False)
    _, fields = client.xrange(keys.windows_for("c"), count=1)[0]
    window = Window.from_fields(fields)
    frames = client.mget([keys.frame("c", t) for t in window.frames_ms])
    from engine.contracts.queries import StandingQuery

    rows = []
    for n in (1, 4, 16):
        queries = [StandingQuery(f"q{k}", QUERIES[k % len(QUERIES)]) for k in range(n)]

        def shared():
            WindowGrounder(model, TorchBackend(model), keys).ground(window, frames, queries)  # fresh cache: all frames encoded

        def naive():
            for q in queries:
                WindowGrounder(model, TorchBackend(model), keys).ground(window, frames, [q])

        ts, tn = [], []
        shared(), naive()
        for _ in range(repeats):  # interleaved
            t0 = time.perf_counter(); shared(); ts.append(time.perf_counter() - t0)
            t0 = time.perf_counter(); naive(); tn.append(time.perf_counter() - t0)
        rows.append((n, statistics.median(ts), statistics.median(tn)))
    return rows


def latency(url: str, model, seconds: float, cameras: int = 4, queries: int = 4):
    keys = Keys("lat:")
    client = connect(url)
    add_queries(client, keys, queries)
    stop = threading.Event()
    cams = [CameraSettings(id=f"cam{k}", url=f"synthetic://random?seed={k}&fps=10") for k in range(cameras)]
    ingest = IngestService(client, keys, cams, WINDOWS, stop=stop)
    grounder = WindowGrounder(model, TorchBackend(model), keys)
    worker = EngineWorker(client, keys, grounder, EngineSettings(block_ms=100), stop=stop)
    t = threading.Thread(target=ingest.run, kwargs={"install_signals": False}, daemon=True)
    t.start()
    threading.Timer(seconds, stop.set).start()
    t0 = time.perf_counter()
    worker.run()
    dt = time.perf_counter() - t0
    t.join(10)
    produced = sum(int(client.hget(keys.health(c.id), "windows") or 0) for c in cams)
    # capture of a window's last frame -> its events committed: the worker's own histogram (engine/serving/latency.py)
    st = worker.stats
    return st.latency.counts, st.processed / dt, produced / dt, st.superseded + st.stale


def batching(client, model, repeats: int) -> list[tuple[str, float, float]]:
    """(backend, ms per window one at a time, ms per window in a batch of 8), medians of interleaved repeats."""
    from engine.contracts.queries import StandingQuery
    from engine.serving.runtime import build_backend
    from export.onnx_export import export_onnx

    keys = Keys("bat:")
    cams = [CameraSettings(id=f"c{k}", url=f"synthetic://demo?fps=10&realtime=0&seconds=12&epoch={1000 + 3 * k}") for k in range(8)]
    IngestService(client, keys, cams, WINDOWS).run(install_signals=False)
    windows = []
    for c in cams:
        entries = client.xrange(keys.windows_for(c.id))
        windows += [Window.from_fields(f) for _, f in entries if Window.from_fields(f).camera_id == c.id][:1]
    frames = [client.mget([keys.frame(w.camera_id, t) for t in w.frames_ms]) for w in windows]
    queries = [StandingQuery(f"q{k}", QUERIES[k]) for k in range(4)]
    rows = []
    for name in ("torch", "onnxruntime"):
        backend = build_backend(name, model, export=export_onnx)
        g = WindowGrounder(model, backend, keys)
        g.ground_many([(w, f, queries) for w, f in zip(windows, frames)])  # frames cached: only grounding is timed
        one, many = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for w, f in zip(windows, frames):
                g.ground(w, f, queries)
            one.append((time.perf_counter() - t0) / len(windows))
            t0 = time.perf_counter()
            g.ground_many([(w, f, queries) for w, f in zip(windows, frames)])
            many.append((time.perf_counter() - t0) / len(windows))
        rows.append((name, statistics.median(one), statistics.median(many)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=DEFAULT_MODEL_DIR)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", type=int, default=None, help="run only this section (1-4)")
    args = ap.parse_args()
    model = load_model(args.model)
    server = EmbeddedRedis.start(Path(tempfile.mkdtemp()), appendonly=False)
    try:
        client = connect(server.url)
        if args.only in (None, 4):
            rows = batching(client, model, args.repeats)
            print(f"4. 8 windows (8 cameras) x 4 queries, frames cached, median of {args.repeats} interleaved, "
                  f"torch threads {torch.get_num_threads()}")
            print(f"   {'backend':<12} | {'one at a time (ms/window)':>25} | {'batch of 8 (ms/window)':>22} | {'speed-up':>8}")
            for name, one, many in rows:
                print(f"   {name:<12} | {one * 1000:>25.1f} | {many * 1000:>22.1f} | {one / many:>8.2f}")
            if args.only == 4:
                return
        enc, unique, n_windows = encodes_per_frame(client, model)
        print(f"1. vision encodes per unique frame (8 s windows, 2 s stride, {n_windows} windows): "
              f"{enc} encodes / {unique} unique frames = {enc / unique:.3f}  (target <= 1.05)")
        rows = per_window(client, model, args.repeats)
        print(f"2. one 16-frame window, median of {args.repeats} (interleaved), fresh frame cache each time")
        print(f"   {'queries':>7} | {'shared (ms)':>11} | {'per-query (ms)':>14} | {'per-query/shared':>16} | {'shared t(n)/t(1)':>16}")
        for n, sh, nv in rows:
            print(f"   {n:>7} | {sh * 1000:>11.1f} | {nv * 1000:>14.1f} | {nv / sh:>16.2f} | {sh / rows[0][1]:>16.2f}")
        from engine.serving.latency import quantile

        counts, wps_done, wps_made, skipped = latency(server.url, model, args.seconds)
        print(f"3. 4 real-time synthetic cameras x 4 queries, {args.seconds:.0f} s: windows produced {wps_made:.2f}/s, "
              f"processed {wps_done:.2f}/s, skipped (engine behind) {skipped}; capture-to-event latency "
              f"p50 {quantile(0.5, counts):.2f} s, p95 {quantile(0.95, counts):.2f} s "
              f"(target p95 <= stride + 1 = {WINDOWS.stride_seconds + 1:.0f} s)")
    finally:
        server.stop()


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
