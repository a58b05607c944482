"""Our ingest next to a peer's: Roboflow Inference's `VideoSource` (PyPI `inference`) reading the same clip as fast
as it can (a file, not paced), beside our decode-only limit and our full ingest path (as bench/ingest.py measures it).

Optional, not in CI: `inference` is large (about 7 GB with the CUDA torch wheels it pulls) and never goes into our
venv: it brings `onnxruntime`, which must not sit beside `onnxruntime-gpu`. `--setup` makes a venv of its own
(`VideoSource` itself lives in `streamvision`, which `inference` depends on: `--package streamvision` is the light
install of the same class).

    .venv/bin/python bench/peer.py --setup [--venv /tmp/peer-venv] [--package inference]
    .venv/bin/python bench/peer.py [--content real] [--resolution 720p] [--seconds 30] [--repeats 3]

Each row: frames of video per second of wall time, and per CPU-second of the process that did the work (all its
threads), because the two decoders thread differently: OpenCV opens FFmpeg with frame threads on every core, our
ingest uses slice threads, which a one-slice camera stream cannot use. A row fast by using more cores shows it in
the second column. Our full path's Redis server is another process, not counted.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.clips import CONTENTS, clip, describe  # noqa: E402
from bench.decode import decode_only  # noqa: E402
from bench.ingest import full_path  # noqa: E402
from stream.redis_server import EmbeddedRedis  # noqa: E402

WORKER = Path(__file__).resolve().parent / "peer_worker.py"
DEFAULT_VENV = Path(tempfile.gettempdir()) / "peer-venv"


def setup(venv: Path, package: str) -> None:
    if venv.resolve() == Path(sys.prefix).resolve():
        raise SystemExit(f"{venv} is this project's venv: the peer gets a venv of its own")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--progress-bar", "off", package], check=True)
    print(f"{package} installed in {venv}")


def timed(fn, frames: int) -> tuple[float, float]:
    """(frames/s as `fn` measures it, frames per CPU-second of this process while it ran)."""
    cpu = time.process_time()
    fps = fn()
    return fps, frames / (time.process_time() - cpu)


def ours(path: Path, frames: int, repeats: int) -> dict[str, tuple[float, float]]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-peer-"))
    server = EmbeddedRedis.start(tmp / "redis", appendonly=False)
    rows: dict[str, list[tuple[float, float]]] = {}
    try:
        for r in range(repeats):
            for name, fn in (
                ("ours: decode only, 1 thread (the limit)", lambda: decode_only(path, 1)),
                ("ours: decode only, FFmpeg's default threads", lambda: decode_only(path, 0)),
                ("ours: full ingest path, 640 px previews", lambda: full_path(path, server.url, f"f{r}:", frames)),
                ("ours: full ingest path, previews off", lambda: full_path(path, server.url, f"n{r}:", frames, preview_size=0)),
            ):
                rows.setdefault(name, []).append(timed(fn, frames))
    finally:
        server.stop()
    return {k: (statistics.median(v[0] for v in vs), statistics.median(v[1] for v in vs)) for k, vs in rows.items()}


def peer(venv: Path, path: Path, frames: int, repeats: int) -> tuple[dict, dict[str, tuple[float, float]]]:
    python = venv / "bin" / "python"
    if not python.is_file():
        raise SystemExit(f"no peer venv at {venv}: run bench/peer.py --setup first")
    done = subprocess.run([str(python), str(WORKER), str(path), "--repeats", str(repeats)], capture_output=True, text=True)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("PEER-RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"the peer failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1].removeprefix("PEER-RESULT "))
    rows = {f"peer: VideoSource, {name}": (frames / r["wall_s"], frames / r["cpu_s"]) for name, r in result["rows"].items()}
    for name, r in result["rows"].items():
        assert r["delivered"] > 0, f"the peer delivered no frame ({name})"
    return result, rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--setup", action="store_true", help="create the peer's venv and install --package into it")
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    ap.add_argument("--package", default="inference")
    ap.add_argument("--content", default="real", choices=CONTENTS)
    ap.add_argument("--resolution", default="720p")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--bframes", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None, help="append the result as a JSON line to this file")
    args = ap.parse_args()
    if args.setup:
        setup(args.venv, args.package)
        return
    path = clip(args.content, args.resolution, seconds=args.seconds, bframes=args.bframes)
    info = describe(path)
    rows = ours(path, info.frames, args.repeats)
    meta, peer_rows = peer(args.venv, path, info.frames, args.repeats)
    rows.update(peer_rows)
    limit = rows["ours: decode only, 1 thread (the limit)"][0]
    print(f"content {args.content}: {info.summary()}; {info.frames} frames, median of {args.repeats}")
    print(f"peer: {meta['package']}, OpenCV {meta['opencv']}, {meta['cpus']} CPUs")
    print(f"{'path':<52} | {'frames/s':>9} | {'per CPU-s':>9} | {'/ limit':>7}")
    for name, (fps, cpu_fps) in rows.items():
        print(f"{name:<52} | {fps:>9.1f} | {cpu_fps:>9.1f} | {fps / limit:>7.2f}")
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps({"content": args.content, "clip": info.summary(), "peer": meta, "rows": rows,
                                "args": {k: str(v) for k, v in vars(args).items()}}) + "\n")


if __name__ == "__main__":
    main()
