"""Decode-only throughput of a clip with PyAV: the physical limit of that content, decoded as the ingest decodes it
(`stream.sources.PyAVSource`: non-reference frames skipped, slice threads), with nothing converted.

Rates are frames of video per second: every frame of the stream counts, a skipped B-frame too, so a camera's
cost is fps / rate cores whatever its frame types.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import av


def decode_only(path: Path, threads: int = 1, rgb: bool = False, skip_nonref: bool = True,
                max_frames: int | None = None) -> float:
    """Frames of video per second. `threads` 0: FFmpeg's default (what `ingest.decoder_threads: 0` gets); `rgb`:
    also convert every decoded frame to full-size RGB (what a path that converts every frame pays)."""
    t0 = time.perf_counter()
    n = 0
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        if threads:
            s.thread_type, s.thread_count = "SLICE", threads
        if skip_nonref:
            s.codec_context.skip_frame = "NONREF"
        for pkt in c.demux(s):
            for f in s.decode(pkt):
                if rgb:
                    f.to_ndarray(format="rgb24")
            if pkt.size:
                n += 1
                if max_frames and n >= max_frames:
                    break
    return n / (time.perf_counter() - t0)


def decode_limit(path: Path, repeats: int = 3) -> float:
    """Median decode-only frames/s on one thread: what one core decodes of this content."""
    return statistics.median(decode_only(path, 1) for _ in range(repeats))


def limit_line(fps_limit: float, cameras: int, fps: float = 25.0) -> str:
    per_camera = fps / fps_limit
    return (f"decode only (PyAV, 1 thread, non-reference frames skipped): {fps_limit:.0f} frames/s = "
            f"{per_camera:.3f} cores per {fps:g} fps camera; x {cameras} cameras = {per_camera * cameras:.2f} cores")
