"""The demo scene rendered to an H.264 file once per (resolution, seconds, fps), for the benchmarks.

The demo camera's three scripted episodes (10 s each, `stream.sources.demo_scene`) with its per-frame
sensor noise, encoded like a camera would send it (libx264, no B-frames, a keyframe every 2 s). Cached
under $TMPDIR/spacevllm-clips, so a sweep renders each clip once.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import av
import numpy as np

from stream.scenes import render_frame
from stream.sources import DEMO_EPISODE_S, demo_scene

RESOLUTIONS = {"720p": (1280, 720), "1080p": (1920, 1080), "480p": (854, 480)}


def demo_clip(resolution: str = "720p", seconds: float = 3 * DEMO_EPISODE_S, fps: int = 25, crf: int = 23,
              cache_dir: Path | None = None) -> Path:
    w, h = RESOLUTIONS[resolution]
    cache = Path(cache_dir or Path(tempfile.gettempdir()) / "spacevllm-clips")
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"demo-gop2s-{resolution}-{fps}fps-{seconds:g}s-crf{crf}.mp4"  # (earlier clips of this name were all key frames)
    if path.is_file():
        return path
    tmp = path.with_suffix(f".{os.getpid()}.part.mp4")
    with av.open(str(tmp), "w") as out:
        st = out.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        # a camera-like stream: no B-frames, a key frame every 2 s and none between (scene cuts off); "veryfast"
        # keeps rendering a 30 s clip to about a minute. The GOP goes to x264 itself: PyAV's `codec_context.gop_size`
        # made every frame a key frame here (PyAV 18).
        st.codec_context.max_b_frames = 0
        st.options = {"crf": str(crf), "preset": "veryfast",
                      "x264-params": f"keyint={2 * fps}:min-keyint={2 * fps}:scenecut=0"}
        scenes = {}
        for k in range(int(seconds * fps)):
            t = k / fps
            ep = int(t // DEMO_EPISODE_S)
            scene = scenes.setdefault(ep, demo_scene(ep, w, h))
            frame = av.VideoFrame.from_ndarray(render_frame(scene, t - ep * DEMO_EPISODE_S, np.random.default_rng(k)),
                                               format="rgb24")
            for pkt in st.encode(frame):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    tmp.replace(path)
    return path
