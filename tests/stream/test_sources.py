"""PyAV sources decode less: only the frames the sampler keeps are converted (one scaler call), and non-reference
frames are not decoded at all. Real H.264 written by PyAV/libx264."""
from __future__ import annotations

import av
import numpy as np

from stream.imagecodec import resize
from stream.scenes import random_scene, render_frame
from stream.sources import PyAVSource, SourceEnded


def _h264(path, seconds: float = 2.0, fps: int = 25, size=(320, 240), bframes: int = 0):
    w, h = size
    scene = random_scene(np.random.default_rng(0), seconds, (w, h), n_objects=2)
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.codec_context.max_b_frames = bframes
        st.options = {"preset": "veryfast", "g": str(fps), "x264-params": "b-pyramid=none"}  # B-frames no frame refers to
        for k in range(int(seconds * fps)):
            if bframes:  # a bar sliding over a flat background: content x264 codes with B-frames
                img = np.full((h, w, 3), 100, np.uint8)
                img[:, (k * 4) % (w - 20):(k * 4) % (w - 20) + 20] = 255
            else:
                img = render_frame(scene, k / fps)
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    return path


def test_frames_when_decoded_are_not_converted_until_resized(tmp_path):
    # given a 320x240 H.264 file
    src = PyAVSource(f"file://{_h264(tmp_path / 'a.mp4')}", realtime=False)
    try:
        raw = next(iter(src.frames()))
        # then a frame arrives in the decoder's own format, with its size
        assert raw.image is None and raw.frame.format.name == "yuv420p" and raw.size_wh == (320, 240)
        # and resizing it straight from YUV gives what converting the whole frame to RGB and then resizing gave
        direct = raw.resized(64)
        via_rgb = resize(raw.rgb(), 64)
        assert direct.shape == (64, 64, 3) and direct.dtype == np.uint8
        assert np.abs(direct.astype(int) - via_rgb.astype(int)).mean() < 3.0
    finally:
        src.close()


def test_frames_when_the_stream_has_b_frames_skips_decoding_them(tmp_path):
    # given 2 s at 25 fps without B-frames, and 2 s with two B-frames (not references) after every P-frame
    plain = PyAVSource(f"file://{_h264(tmp_path / 'p.mp4')}", realtime=False)
    with_b = PyAVSource(f"file://{_h264(tmp_path / 'b.mp4', bframes=2)}", realtime=False)

    def times(src):
        out = []
        try:
            for raw in src.frames():
                out.append(raw.pts_s)
        except Exception:  # SourceEnded
            pass
        finally:
            src.close()
        return out

    # when both are decoded
    p, b = times(plain), times(with_b)
    # then every frame of the first is decoded, and the non-reference B-frames of the second are not
    assert len(p) == 50
    assert 15 <= len(b) <= 35
    # and the decoded frames still span the clip, never more than 3 frame periods apart (2 fps sampling keeps working)
    assert max(np.diff(sorted(b))) <= 3 / 25 + 1e-6 and sorted(b)[-1] >= 1.8


def test_frames_when_decoder_threads_is_set_uses_that_many(tmp_path):
    src = PyAVSource(f"file://{_h264(tmp_path / 't.mp4')}", realtime=False, decoder_threads=1)
    try:
        assert src.container.streams.video[0].codec_context.thread_count == 1
        assert next(iter(src.frames())).size_wh == (320, 240)
    finally:
        src.close()


def test_resize_when_a_pil_filter_is_named_matches_pil_and_area_stays_ffmpegs():
    from PIL import Image

    image = (np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8)
    expected = np.asarray(Image.fromarray(image).resize((48, 48), Image.Resampling.BICUBIC))
    assert np.array_equal(resize(image, 48, "bicubic"), expected)
    assert resize(image, 48).shape == (48, 48, 3) and not np.array_equal(resize(image, 48), expected)


# ---- key frames only (a camera behind real time) ------------------------------------------------
def _frame_numbers(src: PyAVSource, fps: int, switch=lambda n, pts: None) -> list[int]:
    """Decode to the end; the frame numbers decoded. `switch(n, pts)` runs after each frame (n frames so far)."""
    got = []
    try:
        for raw in src.frames():
            got.append(round(raw.pts_s * fps))
            switch(len(got), raw.pts_s)
    except SourceEnded:
        pass
    return got


def test_frames_when_keyframes_only_decodes_only_key_frames_and_counts_every_other_frame(tmp_path):
    from tests.media import write_h264

    # given 4 s at 25 fps with a key frame every second (frames 0, 25, 50, 75)
    clip = write_h264(tmp_path / "k.mp4", seconds=4, fps=25, size=(160, 120), gop=25)
    src = PyAVSource(f"file://{clip}", realtime=False)
    src.keyframes_only = True
    # when decoded with key frames only
    got = _frame_numbers(src, 25)
    # then only the key frames were decoded, and the 96 others were counted, each once
    assert got == [0, 25, 50, 75]
    assert src.take_skipped() == 96 and src.take_skipped() == 0
    src.close()


def test_frames_when_keyframes_only_is_switched_on_and_off_resumes_at_the_next_key_frame_counting_exactly(tmp_path):
    from tests.media import write_h264

    # given 4 s at 25 fps with a key frame every second
    clip = write_h264(tmp_path / "k.mp4", seconds=4, fps=25, size=(160, 120), gop=25)
    src = PyAVSource(f"file://{clip}", realtime=False)

    def switch(n: int, pts: float) -> None:  # behind after 10 frames; caught up at the next (key) frame decoded
        src.keyframes_only = n == 10

    # when it falls behind after frame 9 and catches up at the next frame decoded
    got = _frame_numbers(src, 25, switch)
    # then frames 10-24 were not decoded (and counted), decoding resumed at key frame 25 with every frame after it
    assert got == list(range(10)) + list(range(25, 100))
    assert src.take_skipped() == 15
    src.close()


def test_frames_when_a_stream_has_no_key_frame_to_skip_to_decodes_every_frame_again(tmp_path, caplog):
    from stream.sources import MAX_SKIP_S
    from tests.media import write_h264

    # given 12 s at 25 fps whose only key frame is the first (intra refresh cameras send no others)
    clip = write_h264(tmp_path / "one.mp4", seconds=12, fps=25, size=(160, 120), gop=10_000)
    src = PyAVSource(f"file://{clip}", realtime=False)

    def switch(n: int, pts: float) -> None:  # behind from the first frame on, for good
        src.keyframes_only = True

    # when decoded with key frames only after the first frame
    got = _frame_numbers(src, 25, switch)
    # then it skipped MAX_SKIP_S worth of frames looking for a key frame, then decoded every frame after them,
    # said so once, and never skips on this stream again
    skipped = int(MAX_SKIP_S * 25)
    assert src.take_skipped() == skipped
    assert got == [0] + list(range(skipped + 1, 300))
    assert caplog.text.count("no key frame in") == 1 and not src.has_keyframes
    src.close()
