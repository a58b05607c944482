"""bench/clips.py's camera-like content is real H.264 at its stated resolution, a camera's GOP and bitrate; 2 s clips
keep it to a few seconds."""
from __future__ import annotations

import av
import pytest

from bench.clips import CAMERA_MBPS, clip, describe, noisy_clip, real_clip
from bench.decode import decode_only

FLOOR_MBPS = 6.0  # a real 720p25 camera's main stream; the demo clip sends 1.9


@pytest.mark.parametrize("make", [noisy_clip, real_clip])
def test_clip_when_camera_like_is_h264_720p_above_the_bitrate_floor(make, tmp_path):
    path = make("720p", seconds=2, cache=tmp_path)
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
    info = describe(path)
    assert (info.width, info.height, info.fps, info.frames) == (1280, 720, 25, 50)
    assert FLOOR_MBPS <= info.mbps <= 1.5 * CAMERA_MBPS["720p"]
    assert info.gop == 50 and info.b_frames == 0
    assert "bframes=0" in info.encoder and "keyint=50" in info.encoder and "vbv_maxrate=8000" in info.encoder
    written = path.stat().st_mtime_ns
    assert make("720p", seconds=2, cache=tmp_path) == path and path.stat().st_mtime_ns == written  # cached, not redone


def test_clip_when_bframes_asked_has_b_frames_and_decodes(tmp_path):
    path = clip("noisy", "480p", seconds=2, bframes=2, cache=tmp_path)
    info = describe(path)
    assert (info.width, info.height) == (854, 480) and info.b_frames > 0.3 and "bframes=2" in info.encoder
    assert info.mbps >= 0.75 * CAMERA_MBPS["480p"]
    assert decode_only(path, 1) > 0


def test_clip_when_demo_is_asked_for_b_frames_refuses(tmp_path):
    with pytest.raises(ValueError, match="B-frames"):
        clip("demo", bframes=2, cache=tmp_path)
