"""Where the 2 cores go at N real-time cameras x Q queries: each step of the path timed on its own (one thread,
medians), times how often it runs per second of video, as core-milliseconds per second (1000 = one core).

    .venv/bin/python bench/where_time_goes.py [--cameras 8] [--queries 4] [--resolution 720p] [--repeats 5]
                                              [--content demo|noisy|real]

Ingest steps run per decoded frame (25/s per camera; decoded as the ingest does, bench/decode.py) or per sampled
frame (2/s per camera); engine steps per window (one per stride per camera) on a window of 16 frames, 4 of them new
(8 s window, 2 s stride, 2 fps).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.clips import CONTENTS, clip, describe  # noqa: E402
from bench.decode import decode_only  # noqa: E402
from engine.serving.event_store import EventStore  # noqa: E402
from engine.serving.grounder import WindowGrounder  # noqa: E402
from engine.model.checkpoint import load_model  # noqa: E402
from engine.model.match_head import colour_grid  # noqa: E402
from engine.contracts.queries import StandingQuery  # noqa: E402
from engine.serving.runtime import build_backend  # noqa: E402
from engine.contracts.settings import DEFAULT_MODEL_DIR, EngineSettings  # noqa: E402
from stream.imagecodec import decode_image, encode_image, resize  # noqa: E402
from export.onnx_export import export_onnx  # noqa: E402
from stream.keys import Keys  # noqa: E402
from stream.redis_server import EmbeddedRedis, connect  # noqa: E402
from stream.store import WindowStore  # noqa: E402
from stream.types import Window  # noqa: E402

QUERIES = ["the red circle moving right", "the yellow triangle moving down", "the blue square", "the green triangle moving up",
           "the white circle moving left", "the small red circle", "the large blue square moving up", "the white square"]


def per_call(fn, repeats: int, inner: int = 1) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times)


def decoded_frames(path: Path, n: int, threads: int = 1) -> list:
    out = []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type, s.thread_count = "SLICE", threads
        for f in c.decode(s):
            out.append(f)
            if len(out) >= n:
                break
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--queries", type=int, default=4)
    ap.add_argument("--resolution", default="720p")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--content", default="demo", choices=CONTENTS)
    ap.add_argument("--bframes", type=int, default=0, help="B-frames of the noisy and real clips")
    args = ap.parse_args()
    torch.set_num_threads(1)
    fps, sample_fps, stride_s, size = 25, 2, 2.0, 64
    decoded_per_s = args.cameras * fps
    sampled_per_s = args.cameras * sample_fps
    windows_per_s = args.cameras / stride_s
    path = clip(args.content, args.resolution, bframes=args.bframes)
    rows: list[tuple[str, float, float]] = []  # (step, ms per call, calls per second)

    # ---- ingest ----
    dec = 1 / statistics.median(decode_only(path, 1, max_frames=250) for _ in range(args.repeats))
    rows.append(("H.264 decode (1 thread)", dec * 1000, decoded_per_s))
    frames = decoded_frames(path, 50)
    f0 = frames[10]
    rgb = f0.to_ndarray(format="rgb24")
    rows.append(("full-frame RGB conversion (every decoded frame: before)", per_call(lambda: f0.to_ndarray(format="rgb24"), args.repeats, 10) * 1000, decoded_per_s))
    rows.append(("resize RGB -> 64 px (sampled frames: before)", per_call(lambda: resize(rgb, size), args.repeats, 10) * 1000, sampled_per_s))
    rows.append(("YUV -> 64 px RGB in one scaler call (sampled: after)",
                 per_call(lambda: f0.reformat(width=size, height=size, format="rgb24", interpolation="AREA").to_ndarray(),
                          args.repeats, 10) * 1000, sampled_per_s))
    small = resize(rgb, size)
    png = encode_image(small, "png")
    rows.append(("PNG encode 64 px", per_call(lambda: encode_image(small, "png"), args.repeats, 20) * 1000, sampled_per_s))

    tmp = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    server = EmbeddedRedis.start(tmp / "redis", appendonly=False)
    try:
        client = connect(server.url)
        keys = Keys("prof:")
        store = WindowStore(client, keys)
        ts = [1_000_000 + 500 * k for k in range(16)]
        win = Window("cam0", ts[0], ts[0] + 8000, tuple(ts), (1280, 720), size)

        def store_frame():
            pipe = client.pipeline(transaction=False)
            store.put_frame("cam0", ts[0], png, pipeline=pipe)
            store.add_window(win, pipeline=pipe)
            pipe.execute()

        rows.append(("Redis: SET frame + XADD window (pipeline)", per_call(store_frame, args.repeats, 20) * 1000, sampled_per_s))
        for t in ts:
            store.put_frame("cam0", t, png)

        # ---- engine ----
        model = load_model(DEFAULT_MODEL_DIR)
        backend = build_backend(args.backend, model, export=export_onnx)
        grounder = WindowGrounder(model, backend, keys)
        rows.append(("Redis: MGET a window's 16 frames", per_call(lambda: store.load_frames(win), args.repeats, 20) * 1000, windows_per_s))
        rows.append(("engine: PNG decode of 4 new frames", per_call(lambda: [decode_image(png) for _ in range(4)], args.repeats, 20) * 1000,
                     windows_per_s))
        px = torch.rand(4, 3, size, size)
        rows.append(("vision encode, 4 new frames", per_call(lambda: backend.encode_frames(px), args.repeats, 5) * 1000, windows_per_s))
        px16 = torch.rand(16, 3, size, size)
        vis, colours = backend.encode_frames(px16), colour_grid(px16)  # what the grounder caches per frame
        rel = [0.5 * k for k in range(16)]
        t_prefix = per_call(lambda: model.encode_window(None, rel, visual_tokens=vis, colours=colours), args.repeats, 5)
        rows.append(("LLM prefix (16 frames, ~290 tokens)", t_prefix * 1000, windows_per_s))
        prefix = model.encode_window(None, rel, visual_tokens=vis, colours=colours)
        questions = [QUERIES[k % len(QUERIES)] for k in range(args.queries)]
        calls = {"n": 0, "t": 0.0}

        def counted_decoder(*a):
            t0 = time.perf_counter()
            out = backend.decode(*a)
            calls["t"] += time.perf_counter() - t0
            calls["n"] += 1
            return out

        t_ground = per_call(lambda: model.ground(prefix, questions, decoder=counted_decoder), args.repeats, 5)
        t_dec = calls["t"] / max(1, calls["n"]) * (calls["n"] / (args.repeats * 5 + 1))
        rows.append((f"question + 2 answer steps, {args.queries} queries", (t_ground - t_dec) * 1000, windows_per_s))
        rows.append((f"space decoder, {args.queries} queries' spans", t_dec * 1000, windows_per_s))
        qs = [StandingQuery(f"q{k}", questions[k]) for k in range(args.queries)]
        frames_b = store.load_frames(win)
        obs = grounder.ground(win, frames_b, qs)
        es = EventStore(client, keys, EngineSettings(), "tiny")
        n = {"k": 0}

        def commit():
            n["k"] += 1
            w = Window("cam0", ts[0] + n["k"] * 2000, ts[0] + 8000 + n["k"] * 2000, tuple(ts), (1280, 720), size)
            es.commit(w, "0-1", qs, obs)

        rows.append(("Redis: event commit (MULTI: states, events, done, XACK)", per_call(commit, args.repeats, 10) * 1000, windows_per_s))
        whole = per_call(lambda: WindowGrounder(model, backend, keys).ground(win, frames_b, qs), args.repeats, 3)
        t_steps = sum(r[1] for r in rows if r[0].startswith(("engine: PNG", "vision", "LLM", "question", "space"))) / 1000
    finally:
        server.stop()

    print(f"{args.cameras} x {args.resolution}{fps} cameras x {args.queries} queries; one thread per step, medians of {args.repeats}; "
          f"backend {args.backend}")
    print(f"content {args.content}: {describe(path).summary()}")
    print(f"{'step':<58} | {'ms/call':>8} | {'calls/s':>7} | {'core-ms/s':>9}")
    total_before = total_after = 0.0
    for name, ms, per_s in rows:
        load = ms * per_s
        print(f"{name:<58} | {ms:>8.3f} | {per_s:>7.1f} | {load:>9.1f}")
        if "after" not in name:
            total_before += load
        if "before" not in name:
            total_after += load
    print(f"{'sum, old ingest path (RGB every frame, resize)':<58} | {'':>8} | {'':>7} | {total_before:>9.1f}")
    print(f"{'sum, new ingest path (one scaler call per kept frame)':<58} | {'':>8} | {'':>7} | {total_after:>9.1f}")
    print(f"whole grounding step, fresh frame cache (16 frames encoded): {whole * 1000:.1f} ms; its parts above with 4 new frames: "
          f"{t_steps * 1000:.1f} ms")


if __name__ == "__main__":
    main()
