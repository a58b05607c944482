"""Batched grounding across windows equals grounding one window at a time (real Redis frames, the shipped model)."""
from __future__ import annotations

import pytest
import torch

from engine.serving.grounder import MissingFrames, WindowGrounder
from engine.model.checkpoint import load_model
from engine.contracts.queries import StandingQuery
from engine.serving.runtime import TorchBackend
from engine.contracts.settings import DEFAULT_MODEL_DIR
from stream.config import CameraSettings, WindowSettings
from stream.ingest import IngestService
from stream.keys import Keys
from stream.store import WindowStore
from stream.types import Window

WINDOWS = WindowSettings(sample_fps=2, window_seconds=8, stride_seconds=2, input_size=64, frame_ttl_seconds=600)
QUERIES = [StandingQuery("red", "the red circle moving right", threshold=0.0),
           StandingQuery("yellow", "the yellow triangle moving down", threshold=0.0),
           StandingQuery("blue", "the blue square", threshold=0.0),
           StandingQuery("green", "the green triangle moving up", threshold=0.0)]


@pytest.fixture(scope="module")
def shipped():
    return load_model(DEFAULT_MODEL_DIR)


def _windows(client, keys: Keys) -> list[Window]:
    """Overlapping windows of three cameras; the third camera's have gaps (fewer frames: a batch of its own)."""
    cams = [CameraSettings(id=f"cam{k}", url=f"synthetic://demo?fps=10&realtime=0&seconds=14&epoch={2000 + 7 * k}")
            for k in range(2)] + [CameraSettings(id="gappy", url="synthetic://random?seed=3&fps=10&realtime=0&seconds=12&epoch=3000")]
    IngestService(client, keys, cams, WINDOWS).run(install_signals=False)
    windows = [Window.from_fields(f) for s in keys.all_shards() for _, f in client.xrange(keys.windows(s))]
    return [Window(w.camera_id, w.start_ms, w.end_ms, w.frames_ms[::3], w.frame_wh, w.input_size) if w.camera_id == "gappy" else w
            for w in windows]


def _assert_close(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.window_id == y.window_id
        assert (x.span is None) == (y.span is None)
        if x.span is not None:
            assert max(abs(p - q) for p, q in zip(x.span, y.span)) < 1e-4
        assert abs(x.score - y.score) < 1e-4
        assert [bx.ts for bx in x.boxes] == [by.ts for by in y.boxes]
        for bx, by in zip(x.boxes, y.boxes):  # pixels of a 320 x 240 camera: 1e-4 of the frame
            assert max(abs(p - q) for p, q in zip(bx.xyxy, by.xyxy)) < 1e-4 * 320


def test_ground_many_when_windows_of_several_cameras_are_batched_equals_one_at_a_time(redis_client, shipped):
    # given windows of three cameras (overlapping windows of one camera, and windows with fewer frames) in Redis
    keys = Keys("batch:")
    windows = _windows(redis_client, keys)
    assert len({w.camera_id for w in windows}) == 3 and len({len(w.frames_ms) for w in windows}) > 1
    store = WindowStore(redis_client, keys)
    items = [(w, store.load_frames(w), QUERIES[: 1 + k % 4]) for k, w in enumerate(windows)]
    # when they are grounded one window at a time, and all together as one batch
    single = WindowGrounder(shipped, TorchBackend(shipped), keys)
    one_by_one = [single.ground(w, frames, qs) for w, frames, qs in items]
    batched = WindowGrounder(shipped, TorchBackend(shipped), keys)
    together = batched.ground_many(items)
    # then every window's observations agree within 1e-4 (scores, spans, boxes)
    for got, want in zip(together, one_by_one):
        _assert_close(got, want)
    # and the batch encoded each distinct frame once
    assert batched.stats.frames_encoded == len({(w.camera_id, t) for w in windows for t in w.frames_ms})


def test_ground_many_when_one_window_lost_its_frames_fails_that_window_only(redis_client, shipped):
    keys = Keys("batchgone:")
    windows = _windows(redis_client, keys)[:3]
    store = WindowStore(redis_client, keys)
    items = [(w, store.load_frames(w), QUERIES[:2]) for w in windows]
    # given the second window's last frame expired
    items[1] = (items[1][0], items[1][1][:-1] + [None], items[1][2])
    # when the three are grounded as one batch
    out = WindowGrounder(shipped, TorchBackend(shipped), keys).ground_many(items)
    # then the second is MissingFrames and the others are grounded as they would be alone
    assert isinstance(out[1], MissingFrames)
    alone = WindowGrounder(shipped, TorchBackend(shipped), keys)
    _assert_close(out[0], alone.ground(*items[0]))
    _assert_close(out[2], alone.ground(*items[2]))


def test_ground_batch_when_questions_are_padded_equals_ground_per_window(tiny_model):
    # given two windows' frame tokens (random weights, random pixels) and question lists of different lengths
    torch.manual_seed(1)
    s = tiny_model.config.vision.image_size
    f = 6
    vis = torch.stack([tiny_model.encode_frames(torch.rand(f, 3, s, s)) for _ in range(2)])
    ts = [[0.5 * k for k in range(f)], [0.25 + 0.5 * k for k in range(f)]]
    questions = [["the red circle moving right", "the blue square"], ["the small white triangle standing still"]]
    # when grounded as one batch and one window at a time
    batch = tiny_model.ground_batch(tiny_model.encode_window_batch(ts, vis), questions)
    each = [tiny_model.ground(tiny_model.encode_window(None, ts[k], visual_tokens=vis[k]), questions[k]) for k in range(2)]
    # then the answers agree within 1e-4
    for bw, ew in zip(batch, each):
        for b, e in zip(bw, ew):
            assert b.span_s == e.span_s and b.frame_indices == e.frame_indices
            assert abs(b.score - e.score) < 1e-4 and abs(b.answer_score - e.answer_score) < 1e-4
            assert torch.allclose(b.all_boxes_cxcywh, e.all_boxes_cxcywh, atol=1e-4)


def test_ground_many_when_a_query_cannot_reach_its_threshold_skips_its_decoder_and_changes_no_match(redis_client):
    # given the shipped weights scoring with answer_and_presence (whose bound lets a query skip the decoder; the match
    # head has no such bound: see the next test), the demo windows and queries at its threshold (some match, most not)
    import dataclasses

    from engine.model.config import ScoreMode

    shipped = load_model(DEFAULT_MODEL_DIR)
    shipped.config = dataclasses.replace(shipped.config, score=ScoreMode.ANSWER_AND_PRESENCE, default_threshold=0.5)
    keys = Keys("hopeless:")
    windows = [w for w in _windows(redis_client, keys) if w.camera_id != "gappy"]
    store = WindowStore(redis_client, keys)
    queries = [StandingQuery(q.id, q.text) for q in QUERIES]
    items = [(w, store.load_frames(w), queries) for w in windows]
    calls = {"pairs": 0}

    class Counting(TorchBackend):
        def decode(self, stq, vis, question, mask):
            calls["pairs"] += stq.shape[0]
            return super().decode(stq, vis, question, mask)

    # when grounded with every query decoded, and with the hopeless ones skipped
    full = WindowGrounder(shipped, Counting(shipped), keys, skip_hopeless=False).ground_many(items)
    decoded_all, calls["pairs"] = calls["pairs"], 0
    lean = WindowGrounder(shipped, Counting(shipped), keys).ground_many(items)
    # then fewer (question, frame) pairs went through the decoder
    assert calls["pairs"] < decoded_all
    # and exactly the same queries matched, with the same spans, scores and boxes
    matched = 0
    for fw, lw in zip(full, lean):
        for f, l in zip(fw, lw):
            assert (f.span, f.boxes) == (l.span, l.boxes)
            if f.span is not None:
                matched += 1
                assert f.score == l.score
            else:
                assert l.score < shipped.config.default_threshold
    assert 0 < matched < sum(len(w) for w in full)


def test_ground_many_with_the_match_head_decodes_every_query_whatever_its_threshold(redis_client, shipped):
    # given the shipped model (it scores with the match head: no upper bound before the decoder has run)
    from engine.model.config import ScoreMode

    assert shipped.config.score is ScoreMode.MATCH_HEAD
    keys = Keys("head:")
    windows = [w for w in _windows(redis_client, keys) if w.camera_id != "gappy"][:4]
    store = WindowStore(redis_client, keys)
    items = [(w, store.load_frames(w), [StandingQuery(q.id, q.text, threshold=0.99) for q in QUERIES]) for w in windows]
    # when grounded with the hopeless skip on and off
    full = WindowGrounder(shipped, TorchBackend(shipped), keys, skip_hopeless=False).ground_many(items)
    lean = WindowGrounder(shipped, TorchBackend(shipped), keys).ground_many(items)
    # then the scores are the same (no query was skipped)
    assert [[o.score for o in w] for w in full] == [[o.score for o in w] for w in lean]


# ---- placement: device and dtype (engine.device, engine.dtype) ----------------------------------------------------
# bfloat16 keeps 8 bits of mantissa: through the tiny model's encoder, 4 LLM layers and the space decoder, scores
# and boxes move by about a hundredth (measured: score max 0.015, mean 0.004; box coordinates max 0.015, mean 0.002
# of the frame side). Stated tolerance: every score within 0.05 (mean 0.015); boxes of frames both place in their
# span within 0.05 of the frame side (mean 0.01); matched or not the same for at least 90% of (window, query) pairs.
BF16_SCORE_ATOL, BF16_SCORE_MEAN = 0.05, 0.015
BF16_BOX_ATOL, BF16_BOX_MEAN = 0.05, 0.01


def _placed(placement_name: tuple[str, str]):
    from engine.model.placement import resolve_placement

    return load_model(DEFAULT_MODEL_DIR, placement=resolve_placement(*placement_name))


def _compare_placements(a: list, b: list, wh=(320, 240)) -> dict:
    scores, boxes, agree, n = [], [], 0, 0
    for obs_a, obs_b in zip(a, b):
        for x, y in zip(obs_a, obs_b):
            n += 1
            scores.append(abs(x.score - y.score))
            agree += (x.score >= 0.5) == (y.score >= 0.5)
            bx = {box.ts: box.xyxy for box in x.boxes}
            for box in y.boxes:
                if box.ts in bx:
                    boxes += [abs(p - q) / wh[k % 2] for k, (p, q) in enumerate(zip(bx[box.ts], box.xyxy))]
    return {"score_max": max(scores), "score_mean": sum(scores) / len(scores), "box_max": max(boxes, default=0.0),
            "box_mean": sum(boxes) / max(len(boxes), 1), "agree": agree / n, "boxes": len(boxes)}


def test_ground_many_when_the_model_runs_in_bfloat16_on_the_cpu_matches_float32_within_tolerance(redis_client):
    # given windows in Redis and the shipped model in float32 and in bfloat16 (engine.device cpu, engine.dtype bfloat16)
    keys = Keys("bf16:")
    windows = _windows(redis_client, keys)
    store = WindowStore(redis_client, keys)
    items = [(w, store.load_frames(w), QUERIES) for w in windows[:6]]
    f32, bf16 = _placed(("cpu", "float32")), _placed(("cpu", "bfloat16"))
    assert next(bf16.parameters()).dtype == torch.bfloat16
    # when both ground the same windows (a bfloat16 grounder builds bfloat16 pixels and caches bfloat16 tokens)
    g16 = WindowGrounder(bf16, TorchBackend(bf16), keys)
    a = WindowGrounder(f32, TorchBackend(f32), keys).ground_many(items)
    b = g16.ground_many(items)
    assert all(t.dtype == torch.bfloat16 for t in g16.cache._items.values())
    # then scores and boxes agree within the stated tolerance, and scores and boxes are Python floats
    d = _compare_placements(a, b)
    print("bfloat16 vs float32:", d)
    assert all(isinstance(o.score, float) and all(isinstance(v, float) for bx in o.boxes for v in bx.xyxy) for obs in b for o in obs)
    assert d["score_max"] < BF16_SCORE_ATOL and d["score_mean"] < BF16_SCORE_MEAN, d
    assert d["boxes"] > 0 and d["box_max"] < BF16_BOX_ATOL and d["box_mean"] < BF16_BOX_MEAN, d
    assert d["agree"] >= 0.9, d


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_ground_many_when_the_model_runs_on_cuda_matches_the_cpu(redis_client, dtype):
    # given the shipped model on the CPU (float32) and on CUDA (float32: kernels differ only in rounding; bfloat16)
    keys = Keys("cuda:")
    windows = _windows(redis_client, keys)
    store = WindowStore(redis_client, keys)
    items = [(w, store.load_frames(w), QUERIES) for w in windows[:6]]
    cpu, gpu = _placed(("cpu", "float32")), _placed(("cuda", dtype))
    # when both ground the same windows
    grounder = WindowGrounder(gpu, TorchBackend(gpu), keys)
    a = WindowGrounder(cpu, TorchBackend(cpu), keys).ground_many(items)
    b = grounder.ground_many(items)
    # then the feature cache lives on the GPU, results are Python floats, and they agree with the CPU's
    assert all(t.is_cuda for t in grounder.cache._items.values())
    d = _compare_placements(a, b)
    print(f"cuda {dtype} vs cpu float32:", d)
    tol = (1e-3, 1e-3) if dtype == "float32" else (BF16_SCORE_ATOL, BF16_BOX_ATOL)
    assert d["score_max"] < tol[0] and d["box_max"] < tol[1], d
