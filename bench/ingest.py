"""PyAV decode-only throughput (the limit) vs the full ingest path, side by side in one run; cameras per core;
threads vs processes for several cameras. The clip is `--content` at `--resolution` 25 fps (bench/clips.py: `demo`,
the flat-colour demo scene; `noisy` and `real`, camera-like content at a camera's bitrate).

    .venv/bin/python bench/ingest.py [--seconds 20] [--repeats 3] [--resolution 720p] [--content demo|noisy|real]
    .venv/bin/python bench/ingest.py --overload [--content noisy] [--clip PATH]   # a camera behind real time: key frames only

Limit = decode only, nothing converted, decoded as the ingest decodes (bench/decode.py). Full path = decode,
timestamp, sample at 2 fps, convert + resize the kept frames to 64 px (one scaler call), PNG-encode, store in Redis
(embedded); with previews (on by default) also a 640 px JPEG of each kept frame (scaled from the decoder's YUV too);
both are reported. Rates are frames of video per second (a skipped B-frame counts).
"""
from __future__ import annotations

import argparse

import av
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
from stream.sources import PyAVSource, SourceEnded  # noqa: E402
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


def decode_cost(path: Path, keyframes_only: bool) -> tuple[float, float, float]:
    """(frames decoded, decoding CPU seconds, video seconds) of the clip through the camera's source, one decoder
    thread (as with more cameras than cores), so this thread's CPU time is the decoding's: every frame, or key frames
    only (what a camera behind real time decodes, stream/overload.py)."""
    src = PyAVSource(f"file://{path}", realtime=False, decoder_threads=1)
    src.keyframes_only = keyframes_only
    frames, t0 = 0, time.thread_time()
    try:
        for _ in src.frames():
            frames += 1
    except SourceEnded:
        pass
    finally:
        src.close()
    cpu = time.thread_time() - t0
    with av.open(str(path)) as c:
        video_s = float(c.streams.video[0].frames / c.streams.video[0].average_rate)
    return frames, cpu, video_s


def overload(path: Path, repeats: int) -> None:
    full, key = [], []
    for _ in range(repeats):  # interleaved, so both see the same machine load
        full.append(decode_cost(path, False))
        key.append(decode_cost(path, True))
    med = statistics.median
    video_s = full[0][2]
    print(f"{path.name}: {video_s:.0f} s, {path.stat().st_size * 8 / video_s / 1e6:.1f} Mbit/s; 1 decoder thread, "
          f"median of {repeats} interleaved runs (decoding CPU time)")
    print(f"{'path':<36} | {'frames decoded / s of video':>27} | {'CPU ms / s of video':>19}")
    for name, runs in (("every frame (a camera keeping up)", full), ("key frames only (a camera behind)", key)):
        print(f"{name:<36} | {med(r[0] for r in runs) / video_s:>27.2f} | {med(r[1] for r in runs) / video_s * 1000:>19.1f}")
    print(f"key frames only / every frame: frames {med(r[0] for r in key) / med(r[0] for r in full):.3f}, "
          f"CPU {med(r[1] for r in key) / med(r[1] for r in full):.3f}")


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
    ap.add_argument("--overload", action="store_true", help="only: decoding cost, every frame vs key frames only")
    ap.add_argument("--clip", type=Path, help="with --overload: this clip instead of --content's")
    args = ap.parse_args()
    if args.overload:
        overload(args.clip or clip(args.content, args.resolution, seconds=args.seconds, bframes=args.bframes), args.repeats)
        return
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
