"""Video sources through PyAV, plus `synthetic://` (a live camera rendering spec-v1 scenes).

A source yields `RawFrame`s: the decoded RGB image and its presentation time in seconds.
Errors are `SourceError`s with a readable message and whether retrying can help.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import av
import numpy as np

from stream.imagecodec import resize
from stream.preview import preview_wh
from stream.scenes import Scene, SceneObject, random_scene, render_frame
from stream.urls import redact_text, redact_url

log = logging.getLogger(__name__)


class SourceError(Exception):
    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class SourceEnded(Exception):
    """A finite source (a file without `loop`) reached its end."""


@dataclass(frozen=True)
class RawFrame:
    """A decoded frame, not yet converted: most frames are dropped by the sampler, so colour conversion and resizing
    happen only in `resized()`, for the frames that are kept (one scaler call from the decoder's format)."""

    image: np.ndarray | None  # (H, W, 3) uint8 RGB (synthetic sources), or None when `frame` holds it
    pts_s: float  # presentation time, seconds (may jump or wrap: the camera re-anchors)
    period_s: float  # nominal frame period
    frame: av.VideoFrame | None = None  # the decoder's frame (PyAV sources), in its own pixel format

    @property
    def size_wh(self) -> tuple[int, int]:
        if self.frame is not None:
            return self.frame.width, self.frame.height
        return self.image.shape[1], self.image.shape[0]

    def resized(self, size: int, resample: str = "area") -> np.ndarray:
        """size x size RGB uint8. Area-averaged (the tiny model's rule): from the decoder's YUV in one scaler call,
        no full-size RGB. Any other filter (a checkpoint's preprocessor_config.json) goes through the full-size RGB
        and PIL, exactly as transformers' image processors resize (`imagecodec.resize`)."""
        if resample == "area" and self.frame is not None:
            return self.frame.reformat(width=size, height=size, format="rgb24", interpolation="AREA").to_ndarray()
        return resize(self.rgb(), size, resample)

    def preview(self, longest_side: int) -> np.ndarray:
        """The preview image (longest side at most `longest_side`, even sides), RGB uint8: from the decoder's YUV in
        one scaler call (area), no full-size RGB; a synthetic frame is returned whole (`preview_jpeg` scales it)."""
        if self.frame is None:
            return self.image
        w, h = preview_wh((self.frame.width, self.frame.height), longest_side)
        return self.frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()

    def rgb(self) -> np.ndarray:
        """The full-size RGB image (converted on demand)."""
        return self.frame.to_ndarray(format="rgb24") if self.frame is not None else self.image


MAX_SKIP_S = 10.0  # key frames only, but none came for this long (in frames at the stream's rate): skipping stops

# FFmpeg demuxers a file camera may use (video containers, elementary streams, image sequences)
FILE_FORMATS = ("mov,mp4,matroska,webm,avi,flv,mpegts,h264,hevc,mjpeg,mpjpeg,image2,png_pipe,jpeg_pipe,mpeg,"
                "mpegvideo,m4v,rawvideo,ivf,yuv4mpegpipe,gif,webp_pipe,asf,ogg,nut,dv")


class PyAVSource:
    """rtsp(s)://, http(s):// (HLS, MJPEG), file:// and /dev/videoN through PyAV."""

    def __init__(self, url: str, transport: str = "tcp", open_timeout_s: float = 10.0, read_timeout_s: float = 5.0,
                 loop: bool = False, realtime: bool = True, decoder_threads: int = 0) -> None:
        self.url = url
        self.decoder_threads = decoder_threads
        self.loop = loop
        self.kind = _kind(url)
        self.realtime = realtime and self.kind == "file"
        options, fmt = {}, None
        target = url
        if self.kind == "rtsp":
            options = {"rtsp_transport": transport}
        elif self.kind == "file":
            target = urlparse(url).path if url.startswith("file://") else url
            if not Path(target).is_file():
                raise SourceError(f"file not found: {target}", retryable=False)
            # only video and image demuxers: FFmpeg would otherwise render a text file (tty, ansi) into frames,
            # and a file camera's preview would show its contents
            options = {"format_whitelist": FILE_FORMATS}
        elif self.kind == "v4l2":
            fmt = "v4l2"
        self._target, self._options, self._format = target, options, fmt
        self.live = self.kind in ("rtsp", "http", "v4l2") or self.realtime  # frames should arrive in real time
        self._timeouts = (open_timeout_s, read_timeout_s)
        # set by the camera when it falls behind real time (stream/overload.py): only key frames are decoded
        self.keyframes_only = False
        self.has_keyframes = True  # False once a skip found no key frame within MAX_SKIP_S: skipping stops for good
        self._skipped = 0  # frames not decoded since `take_skipped` was last called
        self._skip_run = 0  # packets skipped in a row
        self.container = self._open()

    def _open(self):
        try:
            container = av.open(self._target, format=self._format, options=self._options, timeout=self._timeouts)
        except av.error.InvalidDataError as exc:
            raise SourceError(f"not a playable video ({exc})", retryable=self.kind != "file") from exc
        except av.error.ArgumentError as exc:
            if self.kind == "file":  # the format whitelist refused it
                raise SourceError(f"{self._target} is not a video or image file (formats: {FILE_FORMATS})",
                                  retryable=False) from exc
            raise SourceError(redact_text(f"cannot open {self.url}: {exc}", self.url)) from exc
        except FileNotFoundError as exc:
            raise SourceError(f"not found: {self._target}", retryable=self.kind not in ("file", "v4l2")) from exc
        except (av.error.FFmpegError, OSError) as exc:
            raise SourceError(redact_text(f"cannot open {self.url}: {exc}", self.url)) from exc
        if not container.streams.video:
            container.close()
            raise SourceError(f"{redact_url(self.url)} has no video stream", retryable=self.kind != "file")
        # FFmpeg's default (slice) threading: frame threading measured 30% slower here (bench/ingest.py,
        # 2 cores, 720p25) and adds frames of latency to a live stream. `decoder_threads` (ingest.decoder_threads)
        # caps it: with many cameras per core, one thread per camera avoids threads waiting on each other.
        stream = container.streams.video[0]
        if self.decoder_threads:
            stream.thread_type, stream.thread_count = "SLICE", self.decoder_threads
        # non-reference frames (B-frames) are never needed to decode others; skipping them halves decoding on
        # streams that have them. The sampler keeps frames by timestamp, so it takes the next decoded one.
        stream.codec_context.skip_frame = "NONREF"
        return container

    def frames(self) -> Iterator[RawFrame]:
        offset = 0.0
        while True:
            stream = self.container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or 25)
            period = 1.0 / rate if rate > 0 else 0.04
            last = first = None
            started = time.monotonic()
            try:
                for packet in self.container.demux(stream):
                    if self._skip(packet, rate):
                        continue
                    for frame in self.decode(packet):
                        pts = float(frame.time) if frame.time is not None else (last + period if last is not None else 0.0)
                        last = pts
                        # a real-time file waits for each frame's time; behind it, it does not wait, and the camera
                        # sets `keyframes_only`, so the next frame decoded is the next key frame, not a burst of them
                        if self.realtime:
                            first = pts if first is None else first
                            delay = (pts - first) - (time.monotonic() - started)
                            if delay > 0:
                                time.sleep(delay)
                        yield RawFrame(None, pts + offset, period, frame)
            except av.error.InvalidDataError as exc:
                raise SourceError(f"corrupt stream: {exc}") from exc
            except (av.error.FFmpegError, OSError) as exc:
                raise SourceError(f"read failed: {exc}") from exc
            if self.kind != "file":
                raise SourceError("the stream ended (server closed it)")
            if not self.loop:
                raise SourceEnded(redact_url(self.url))
            offset += (last or 0.0) + period
            self.container.close()
            self.container = self._open()

    def decode(self, packet: av.Packet) -> list[av.VideoFrame]:
        """One packet through the decoder: its frames (none for a skipped non-reference frame, or while the decoder
        holds frames back to reorder them)."""
        return packet.decode()

    def _skip(self, packet: av.Packet, rate: float) -> bool:
        """Whether to leave this packet undecoded: while `keyframes_only`, every packet up to the next key frame
        (one packet is one frame), counted. Deciding here, not with the decoder's `skip_frame`, keeps the count exact
        (a packet not handed to the decoder is a frame not decoded, whatever frames the decoder holds back) and
        costs the decoder nothing at all. A stream that shows no key frame within MAX_SKIP_S (intra refresh: no
        key frames after the first) is never skipped again: skipping would stop the camera for good."""
        if not (self.keyframes_only and self.has_keyframes and packet.size) or packet.is_keyframe:
            self._skip_run = 0
            return False
        if self._skip_run >= MAX_SKIP_S * rate:
            self.has_keyframes = False
            log.warning("%s: no key frame in %d frames: decoding every frame even when behind (frames too late "
                        "are dropped instead)", redact_url(self.url), self._skip_run)
            return False
        self._skip_run += 1
        self._skipped += 1
        return True

    def take_skipped(self) -> int:
        """Frames not decoded (key frames only) since the last call."""
        n, self._skipped = self._skipped, 0
        return n

    def close(self) -> None:
        try:
            self.container.close()
        except Exception:  # closing a broken container must not mask the original error
            log.debug("error closing %s", redact_url(self.url), exc_info=True)


# the demo camera's script: (episode seconds, objects) cycled forever; queries in configs/ describe them
DEMO_EPISODE_S = 10.0


def demo_scene(episode: int, width: int, height: int) -> Scene:
    s = min(width, height)
    scripts = [
        [("circle", "red", "large", "right", (0.2, 0.5), 0.1, 1.0, 8.0), ("square", "blue", "small", "still", (0.75, 0.3), 0.0, 0.0, 10.0)],
        [("triangle", "yellow", "large", "down", (0.5, 0.25), 0.08, 2.0, 9.0), ("circle", "white", "small", "left", (0.8, 0.7), 0.1, 0.0, 6.0)],
        [("square", "blue", "large", "up", (0.3, 0.75), 0.08, 0.5, 7.5), ("circle", "red", "small", "still", (0.7, 0.5), 0.0, 3.0, 10.0)],
    ]
    objs = []
    for shape, colour, size, direction, (fx, fy), speed, t_in, t_out in scripts[episode % len(scripts)]:
        side = (0.26 if size == "large" else 0.13) * s
        objs.append(SceneObject(shape, colour, size, direction, side, (fx * width, fy * height), speed * s, t_in, t_out))
    return Scene(width, height, DEMO_EPISODE_S, tuple(objs), "gradient", 1234 + episode, (40, 60, 80), (90, 80, 60), 3.0)


class SyntheticSource:
    """`synthetic://demo` (scripted episodes) or `synthetic://random?seed=N`: a live camera of spec-v1 scenes.

    Query parameters: fps (10), w (320), h (240), episode (10 s, random only), realtime (1),
    epoch (capture clock start; default: wall clock at open), seed.
    """

    def __init__(self, url: str, realtime: bool = True) -> None:
        u = urlparse(url)
        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        self.mode = u.netloc or "demo"
        if self.mode not in ("demo", "random"):
            raise SourceError(f"unknown synthetic camera {self.mode!r} (demo or random)", retryable=False)
        try:
            self.fps = float(q.get("fps", 10))
            self.width, self.height = int(q.get("w", 320)) // 2 * 2, int(q.get("h", 240)) // 2 * 2
            self.episode_s = float(q.get("episode", DEMO_EPISODE_S))
            self.seed = int(q.get("seed", 0))
            self.realtime = realtime and q.get("realtime", "1") != "0"
            self.epoch = float(q["epoch"]) if "epoch" in q else None
            self.max_seconds = float(q["seconds"]) if "seconds" in q else None
        except ValueError as exc:
            raise SourceError(f"bad synthetic camera parameters in {redact_url(url)!r}: {exc}", retryable=False) from exc
        self.url = url
        self.live = self.realtime and self.epoch is None
        self._scenes: dict[int, Scene] = {}
        # every frame is rendered on its own (a key frame, in a decoder's terms): behind, there is nothing to skip to
        self.keyframes_only = False

    def scene(self, episode: int) -> Scene:
        if episode not in self._scenes:
            if self.mode == "demo":
                self._scenes = {episode: demo_scene(episode, self.width, self.height)}
            else:
                rng = np.random.default_rng([self.seed, episode])
                self._scenes = {episode: random_scene(rng, self.episode_s, (self.width, self.height))}
        return self._scenes[episode]

    def frames(self) -> Iterator[RawFrame]:
        period = 1.0 / self.fps
        start = time.monotonic()
        k = 0
        while self.max_seconds is None or k * period < self.max_seconds:
            t = k * period
            if self.realtime:
                delay = t - (time.monotonic() - start)
                if delay > 0:
                    time.sleep(delay)
            episode = int(t // self.episode_s)
            img = render_frame(self.scene(episode), t - episode * self.episode_s, np.random.default_rng(k))
            yield RawFrame(img, t, period)
            k += 1
        raise SourceEnded(redact_url(self.url))

    def take_skipped(self) -> int:
        return 0

    def truth(self, t: float) -> tuple[Scene, float]:
        """The scene and scene-time shown at stream time t (for tests and evaluation)."""
        episode = int(t // self.episode_s)
        return self.scene(episode), t - episode * self.episode_s

    def close(self) -> None:
        pass


def _kind(url: str) -> str:
    scheme = urlparse(url).scheme.lower()
    if scheme in ("rtsp", "rtsps"):
        return "rtsp"
    if scheme in ("http", "https"):
        return "http"
    if scheme == "file" or (scheme == "" and not url.startswith("/dev/video")):
        return "file"
    if url.startswith("/dev/video") or scheme == "v4l2":
        return "v4l2"
    if scheme == "synthetic":
        return "synthetic"
    raise SourceError(f"unsupported camera URL scheme {scheme!r} in {redact_url(url)!r} (rtsp, rtsps, http, https, file, /dev/videoN, synthetic)",
                      retryable=False)


def open_source(url: str, transport: str = "tcp", open_timeout_s: float = 10.0, read_timeout_s: float = 5.0,
                loop: bool = False, realtime: bool = True, decoder_threads: int = 0):
    if _kind(url) == "synthetic":
        return SyntheticSource(url, realtime=realtime)
    return PyAVSource(url, transport, open_timeout_s, read_timeout_s, loop, realtime, decoder_threads)
