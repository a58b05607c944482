"""PyAV decode-only throughput (the limit) vs the full ingest path, side by side in one run; cameras per core;
threads vs processes for several cameras. The clip is `--content` at `--resolution` 25 fps (bench/clips.py: `demo`,
the flat-colour demo scene; `noisy` and `real`, camera-like content at a camera's bitrate).

    .venv/bin/python bench/ingest.py [--seconds 20] [--repeats 3] [--resolution 720p] [--content demo|noisy|real]

Limit = decode only, nothing converted, decoded as the ingest decodes (bench/decode.py). Full path = decode,
timestamp, sample at 2 fps, convert + resize the kept frames to 64 px (one scaler call), PNG-encode, store in Redis
(embedded); with previews (on by default) also a 640 px JPEG of each kept frame (scaled from the decoder's YUV too);
both are reported. Rates are frames of video per second (a skipped B-frame counts).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stream.config import CameraSettings, WindowSettings  # noqa: E402
from stream.ingest import IngestService  # noqa: E402
from stream.keys import Keys  # noqa: E402
from stream.redis_server import EmbeddedRedis, connect  # noqa: E402
from bench.clips import CONTENTS, clip, describe  # noqa: E402
from bench.decode import decode_only  # noqa: E402


def full_path(path: Path, url: str, prefix: str, frames: int, cameras: int = 1, preview_size: int = 640) -> float:
    """Frames of video per second through the ingest, each camera playing the clip (`frames` long) once."""
    client = connect(url)
    cams = [CameraSettings(id=f"c{k}", url=f"file://{path}", realtime=False) for k in range(cameras)]
    windows = WindowSettings(sample_fps=2, window_seconds=8, stride_seconds=2, input_size=64, preview_size=preview_size)
    svc = IngestService(client, Keys(prefix), cams, windows)
    t0 = time.perf_counter()
    svc.run(install_signals=False)
    dt = time.perf_counter() - t0
    if not all(int(client.hget(Keys(prefix).health(c.id), "frames_decoded") or 0) for c in cams):
        raise RuntimeError(f"a camera decoded nothing from {path}")
    return frames * cameras / dt


def _proc(path, url, prefix, frames, q):
    q.put(full_path(Path(path), url, prefix, frames))


def processes(path: Path, url: str, prefix: str, frames: int, cameras: int) -> float:
    """Aggregate frames/s of `cameras` ingest processes, one camera each."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    ps = [ctx.Process(target=_proc, args=(str(path), url, f"{prefix}{k}:", frames, q)) for k in range(cameras)]
    for p in ps:
        p.start()
    per = [q.get() for _ in ps]
    for p in ps:
        p.join()
    return sum(per)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--resolution", default="720p")
    ap.add_argument("--content", default="demo", choices=CONTENTS)
    ap.add_argument("--bframes", type=int, default=0, help="B-frames of the noisy and real clips (0: none, as most cameras)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    path = clip(args.content, args.resolution, seconds=args.seconds, bframes=args.bframes)
    info = describe(path)
    server = EmbeddedRedis.start(tmp / "redis", appendonly=False)
    try:
        raw, rgb, full, bare, raw1 = [], [], [], [], []
        for r in range(args.repeats):  # interleaved, so all see the same machine load
            raw.append(decode_only(path, 0))
            rgb.append(decode_only(path, 0, rgb=True))
            full.append(full_path(path, server.url, f"b{r}:", info.frames))
            bare.append(full_path(path, server.url, f"n{r}:", info.frames, preview_size=0))
            raw1.append(decode_only(path, 1))
        med = statistics.median
        print(f"{args.resolution}25 H.264, content {args.content}: {info.summary()}; {info.frames} frames, "
              f"median of {args.repeats} interleaved runs")
        print(f"{'path':<44} | {'frames/s':>9} | {'ratio':>6}")
        print(f"{'PyAV decode only (the limit)':<44} | {med(raw):>9.1f} | {1.0:>6.2f}")
        print(f"{'decode + RGB of every frame (old path)':<44} | {med(rgb):>9.1f} | {med(rgb) / med(raw):>6.2f}")
        print(f"{'full ingest path, with 640 px previews':<44} | {med(full):>9.1f} | {med(full) / med(raw):>6.2f}")
        print(f"{'full ingest path, previews off':<44} | {med(bare):>9.1f} | {med(bare) / med(raw):>6.2f}")
        print(f"{'decode only, 1 decoder thread':<44} | {med(raw1):>9.1f} |")
        print(f"decode-only cores per {args.resolution}25 camera (1 decoder thread): {25 / med(raw1):.3f}")
        print(f"real-time {args.resolution}25 cameras per core (1 decoder thread, full path ~ decode): "
              f"{med(raw1) * med(full) / med(raw) / 25:.1f}")
        th = full_path(path, server.url, "t:", info.frames, cameras=2)
        pr = processes(path, server.url, "p", info.frames, 2)
        print(f"2 cameras, aggregate frames/s: threads {th:.1f}, processes {pr:.1f} (ratio threads/processes {th / pr:.2f})")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
