"""Event media cost: snapshot and clip creation time per event, clip size per second (real Redis, real H.264).

    .venv/bin/python bench/media.py [--events 10] [--span 8] [--size 640]

An event of `--span` seconds with 2 s padding either side, previews at 2 fps of a 720p synthetic scene at `--size`
(the ingest default, 640 px longest side, quality 80), a box on every frame of the span.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.contracts.events import Box, EndReason, EventType, GroundingEvent  # noqa: E402
from engine.media.worker import MediaWorker  # noqa: E402
from engine.media.store import MediaStore  # noqa: E402
from engine.contracts.settings import MediaSettings  # noqa: E402
from stream.keys import Keys  # noqa: E402
from stream.preview import preview_jpeg  # noqa: E402
from stream.redis_server import EmbeddedRedis, connect  # noqa: E402
from stream.scenes import random_scene, render_frame  # noqa: E402
from stream.store import WindowStore  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=10)
    ap.add_argument("--span", type=float, default=8.0)
    ap.add_argument("--size", type=int, default=640)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-media-"))
    server = EmbeddedRedis.start(tmp / "redis", appendonly=False)
    try:
        client, keys = connect(server.url), Keys()
        t0 = 1_700_000_000.0
        scene = random_scene(np.random.default_rng(0), args.span + 4, (1280, 720), n_objects=2)
        store = WindowStore(client, keys, frame_ttl_s=3600)
        n = int((args.span + 4) * 2) + 1
        for k in range(n):
            store.put_preview("cam", int((t0 + k * 0.5) * 1000), preview_jpeg(render_frame(scene, k * 0.5), args.size))
        settings = MediaSettings(pre_s=2.0, post_s=2.0)
        worker = MediaWorker(client, keys, settings, MediaStore(tmp / "media"), threading.Event(), now=lambda: t0 + 3600)
        start, end = t0 + 2, t0 + 2 + args.span
        boxes = tuple(Box(start + k * 0.5, (400.0, 200.0, 700.0, 500.0)) for k in range(int(args.span * 2) + 1))
        snaps, clips, sizes, durations = [], [], [], []
        for i in range(args.events):
            eid = f"ev{i}"
            new = GroundingEvent(EventType.NEW, eid, "q", "cam", "the red circle moving right", 0.9, start, end, boxes,
                                 (1280, 720), "w", "bench")
            t = time.perf_counter()
            worker.handle(new)
            snaps.append(time.perf_counter() - t)
            worker.handle(GroundingEvent(**{**new.__dict__, "type": EventType.END, "reason": EndReason.ENDED}))
            t = time.perf_counter()
            worker.make_due_clips()
            clips.append(time.perf_counter() - t)
            st = worker.store.status(eid)["clip"]
            sizes.append(st["bytes"])
            durations.append(st["duration_s"])
        med = statistics.median
        print(f"{args.events} events, span {args.span:.0f} s + 2 s padding each side, previews {args.size} px at 2 fps")
        print(f"snapshot creation per event (median): {med(snaps) * 1000:.1f} ms")
        print(f"clip creation per event (median): {med(clips) * 1000:.1f} ms for {med(durations):.1f} s of video")
        print(f"clip size: {med(sizes) / 1024:.1f} KiB, {med(sizes) / med(durations) / 1024:.1f} KiB per second of video")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
