"""Writing real H.264 files for tests and benchmarks."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from stream.scenes import render_frame, random_scene


def write_h264(path: Path, seconds: float, fps: int, size: tuple[int, int], seed: int = 0, crf: int = 23) -> Path:
    w, h = size
    scene = random_scene(np.random.default_rng(seed), seconds, (w, h), n_objects=2)
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.options = {"crf": str(crf), "preset": "ultrafast"}
        for k in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(render_frame(scene, k / fps), format="rgb24")
            for pkt in st.encode(frame):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    return path
