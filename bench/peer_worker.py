"""Runs inside the peer's own venv (bench/peer.py starts it): Roboflow Inference's `VideoSource` reading a clip as
fast as it can, prints one JSON line. Imports nothing of ours (that venv has none of our packages).

    /tmp/peer-venv/bin/python bench/peer_worker.py CLIP [--repeats 1]

A file source gets VideoSource's file defaults: BufferFillingStrategy.WAIT and BufferConsumptionStrategy.LAZY (every
frame decoded and delivered, nothing dropped, no pacing). Two rows: every frame delivered (grab + retrieve, a BGR
ndarray per frame, what an InferencePipeline consumer gets), and `desired_fps=2` (every frame grabbed, i.e.
decoded, one in 12.5 retrieved: the closest to our ingest, which decodes every frame and converts the 2 fps it keeps).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from importlib.metadata import version

import cv2

try:
    from inference.core.interfaces.camera.video_source import VideoSource
    PACKAGE = "inference"
except ImportError:  # only streamvision installed (`bench/peer.py --setup --package streamvision`): the same class
    from streamvision.camera.video_source import VideoSource
    PACKAGE = "streamvision"


def read_all(path: str, desired_fps: float | None) -> dict:
    source = VideoSource.init(video_reference=path, desired_fps=desired_fps)
    wall, cpu = time.perf_counter(), time.process_time()  # process CPU: every thread (VideoSource decodes in one)
    source.start()
    delivered = 0
    for _ in source:
        delivered += 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    source.terminate(wait_on_frames_consumption=False)
    return {"wall_s": wall, "cpu_s": cpu, "delivered": delivered}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("clip")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    out = {"package": f"{PACKAGE} {version(PACKAGE)}", "opencv": cv2.__version__, "cpus": os.cpu_count(),
           "rows": {}}
    for name, fps in (("every frame (BGR)", None), ("desired_fps=2", 2.0)):
        runs = [read_all(args.clip, fps) for _ in range(args.repeats)]
        out["rows"][name] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print("PEER-RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
