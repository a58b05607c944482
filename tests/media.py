"""Writing real H.264 files for tests and benchmarks."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from stream.scenes import render_frame, random_scene


def write_h264(path: Path, seconds: float, fps: int, size: tuple[int, int], seed: int = 0, crf: int = 23,
               gop: int | None = None, noise: bool = False) -> Path:
    """`gop`: frames from one key frame to the next (None: x264's default, 250); `noise`: per-frame sensor noise,
    so no two frames are alike (a frame found at a timestamp is that timestamp's frame)."""
    w, h = size
    scene = random_scene(np.random.default_rng(seed), seconds, (w, h), n_objects=2)
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        if gop is not None:  # a camera's stream: a key frame every `gop` frames, no scene-cut key frames between
            st.options = {"crf": str(crf), "preset": "ultrafast", "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        else:
            st.options = {"crf": str(crf), "preset": "ultrafast"}
        for k in range(int(seconds * fps)):
            rng = np.random.default_rng([seed, k]) if noise else None
            frame = av.VideoFrame.from_ndarray(render_frame(scene, k / fps, rng), format="rgb24")
            for pkt in st.encode(frame):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    return path


# ---- a decoder slower than real time, whatever the machine ------------------------------------------
def burn_cpu(seconds: float) -> None:
    """Use `seconds` of this thread's CPU time (hashing, which releases the GIL: other threads run meanwhile)."""
    import hashlib
    import time

    block = bytes(1 << 16)
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        hashlib.sha256(block).digest()


def slow_decoding(cpu_s: float):
    """A stand-in for `stream.sources.open_source` (patch `stream.camera.open_source`) whose PyAV sources cost `cpu_s`
    more CPU per frame decoded: real decoding of real H.264, on a machine made slower by a known amount. A frame
    period shorter than `cpu_s` is then behind real time by design, on any machine (wall time >= CPU time), and
    only frames decoded cost it, as on a machine that is short of CPU."""
    from stream.sources import PyAVSource, open_source

    class SlowPyAVSource(PyAVSource):
        def decode(self, packet):
            frames = super().decode(packet)
            burn_cpu(cpu_s * len(frames))
            return frames

    def open_slow(url: str, *args):
        return open_source(url, *args) if url.startswith("synthetic://") else SlowPyAVSource(url, *args)

    return open_slow
