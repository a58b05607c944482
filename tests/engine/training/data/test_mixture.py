"""The mixture of real datasets: loading and checking, samples drawn as the engine samples windows, negatives,
sharding by global step, decoding in DataLoader workers, and one-line errors for bad records."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine.training.data.mixture import RecordError, draw_sample, load_mixture, step_source
from engine.training.data.sample_sets import write_format_samples, write_mixture
from engine.training.data.steps import BadRecord, Collator, Shard, step_loader
from engine.model.tokenizer import PromptVocab, train_tokenizer

FRAMES, SIZE, MAX_TIME_S = 4, 32, 20.0


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """Three rendered clips written as HC-STVG, VidSTG, Charades-STA and RefCOCO."""
    return write_format_samples(tmp_path_factory.mktemp("sets"), n=3, seed=1, seconds=2.0)


def _mixture(tmp_path, sets, **kwargs):
    return load_mixture(write_mixture(tmp_path / "mix.yaml", sets, **kwargs))


def _draw(mixture, fmt, index, seed=0):
    k = [s.format for s in mixture.sources].index(fmt)
    return draw_sample(mixture, k, seed, index, FRAMES, SIZE, MAX_TIME_S)


def test_load_mixture_reads_every_format_with_its_task_and_weight(tmp_path, sets):
    mixture = _mixture(tmp_path, sets, weights={"hcstvg": 3.0})
    assert [(s.format, s.task, len(s.items)) for s in mixture.sources] == [
        ("hcstvg", "stvg", 3), ("vidstg", "stvg", 3), ("charades", "vtg", 3), ("refcoco", "rec", 3)]
    assert mixture.weights.tolist() == [0.5, 1 / 6, 1 / 6, 1 / 6]


def test_a_stvg_sample_has_uniform_frames_timestamps_and_boxes_inside_the_span(tmp_path, sets):
    # given an HC-STVG record
    mixture = _mixture(tmp_path, sets, negative_rate=0.0)
    # when a sample is drawn
    s = _draw(mixture, "hcstvg", 0)
    item = next(it for it in mixture.sources[0].items if it.caption == s.caption)
    # then it has FRAMES model-sized frames, uniformly spaced over the clip (it fits the time range)
    assert s.task == "stvg" and s.frames.shape == (FRAMES, SIZE, SIZE, 3) and s.frames.dtype == np.uint8
    idx = [int(k * item.n_frames / FRAMES) for k in range(FRAMES)]
    assert s.timestamps_s == pytest.approx([i / item.fps for i in idx])
    # and the answer span is the annotation's, boxes only on frames inside it
    assert s.span_s == (round((item.gt_span[0] - 1) / item.fps, 1), round((item.gt_span[1] - 1) / item.fps, 1))
    for k, i in enumerate(idx):
        inside = item.gt_span[0] <= i + 1 <= item.gt_span[1]
        assert s.in_span[k] == inside and s.present[k] == (inside and i + 1 in item.gt_boxes)
        if s.present[k]:
            x1, y1, x2, y2 = item.gt_boxes[i + 1]
            assert s.boxes_cxcywh[k] == pytest.approx([(x1 + x2) / 2 / item.width, (y1 + y2) / 2 / item.height,
                                                       (x2 - x1) / item.width, (y2 - y1) / item.height], abs=1e-6)
    # and the draw is deterministic per (seed, global index)
    again = _draw(mixture, "hcstvg", 0)
    assert again.caption == s.caption and np.array_equal(again.frames, s.frames)


def test_vtg_and_rec_samples(tmp_path, sets):
    mixture = _mixture(tmp_path, sets, negative_rate=0.0)
    vtg = _draw(mixture, "charades", 1)
    assert vtg.task == "vtg" and vtg.span_s is not None and not vtg.present.any() and vtg.in_span.any()
    rec = _draw(mixture, "refcoco", 2)
    assert rec.task == "rec" and rec.frames.shape == (1, SIZE, SIZE, 3) and rec.span_s == (0.0, 0.0) and rec.present.all()


def test_a_long_clip_is_cut_to_a_window_that_holds_the_target_start(tmp_path, sets):
    # given a model whose time range (1 s) is shorter than the 2 s clips
    mixture = _mixture(tmp_path, sets, negative_rate=0.0)
    k = [s.format for s in mixture.sources].index("hcstvg")
    for index in range(6):
        s = draw_sample(mixture, k, 0, index, FRAMES, SIZE, max_time_s=1.0)
        # then timestamps stay inside the range and the span starts inside the window
        assert max(s.timestamps_s) < 1.0 and s.span_s is not None and s.span_s[0] <= max(s.timestamps_s)


def test_negatives_take_another_records_caption_and_answer_none(tmp_path, sets):
    mixture = _mixture(tmp_path, sets, negative_rate=0.99)
    captions = {it.caption for it in mixture.sources[0].items}
    negatives = [_draw(mixture, "hcstvg", i) for i in range(4)]
    assert all(s.span_s is None and not s.present.any() and not s.in_span.any() for s in negatives)
    assert all(s.caption in captions for s in negatives)


def test_a_global_batch_is_the_same_cut_across_any_world_size(tmp_path, sets):
    # given one step's global batch of 4 drawn whole, by 2 ranks, and by 2 ranks x 2 micro-steps
    from engine.training.data.mixture import MixtureSteps

    mixture = _mixture(tmp_path, sets)
    tok = train_tokenizer(MAX_TIME_S)
    collator = Collator(PromptVocab.from_tokenizer(tok, MAX_TIME_S), tok, 16)

    def captions(shard):
        ds = MixtureSteps(mixture, 0, 4, FRAMES, SIZE, MAX_TIME_S, collator, shard, steps=3)
        return [s.caption for m in range(shard.grad_accum) for s in ds.samples(2, m)]

    whole = captions(Shard())
    # then the parts, in rank then micro-step order, are the whole batch
    assert captions(Shard(0, 2)) + captions(Shard(1, 2)) == whole
    assert captions(Shard(0, 2, 2)) + captions(Shard(1, 2, 2)) == whole
    assert step_source(mixture, 0, 2) == step_source(mixture, 0, 2)


def test_batches_built_in_worker_processes_equal_those_built_in_process(tmp_path, sets):
    from engine.training.data.mixture import MixtureSteps

    mixture = _mixture(tmp_path, sets)
    tok = train_tokenizer(MAX_TIME_S)
    collator = Collator(PromptVocab.from_tokenizer(tok, MAX_TIME_S), tok, 16)
    ds = MixtureSteps(mixture, 0, 2, FRAMES, SIZE, MAX_TIME_S, collator, Shard(), steps=3)
    inline = list(step_loader(ds, 1, 3, workers=0))
    workers = list(step_loader(ds, 1, 3, workers=2))
    assert len(inline) == len(workers) == 2
    for a, b in zip(inline, workers):
        assert a[0].pixels.equal(b[0].pixels) and a[0].input_ids.equal(b[0].input_ids)


def test_load_mixture_when_a_video_is_missing_names_the_file_record_and_field(tmp_path, sets):
    anno = json.loads(sets["hcstvg"][0].read_text())
    vid = next(iter(anno))
    (tmp_path / "anno.json").write_text(json.dumps({vid: anno[vid]}))
    (tmp_path / "empty").mkdir()
    path = write_mixture(tmp_path / "mix.yaml", {"hcstvg": (tmp_path / "anno.json", tmp_path / "empty")})
    with pytest.raises(RecordError) as err:
        load_mixture(path)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "anno.json") in msg and f"record '{vid}'" in msg and "field 'media'" in msg


@pytest.mark.parametrize("text, field", [
    ("sources: []\n", "sources"),
    ("sources:\n  - {format: hcstvg, anno: a.json, media: v, wieght: 1}\n", "sources.0.wieght"),
    ("sources:\n  - {format: kinetics, anno: a.json, media: v}\n", "sources.0.format"),
])
def test_load_mixture_when_the_yaml_is_wrong_names_the_field(tmp_path, text, field):
    (tmp_path / "mix.yaml").write_text(text)
    with pytest.raises(RecordError, match=f"mix.yaml: field '{field}'"):
        load_mixture(tmp_path / "mix.yaml")


def test_load_mixture_when_a_box_is_inverted_names_the_bbox_field(tmp_path, sets):
    anno = json.loads(sets["refcoco"][0].read_text())
    anno[0]["bbox"] = [10, 10, -5, 4]
    (tmp_path / "r.json").write_text(json.dumps(anno))
    path = write_mixture(tmp_path / "mix.yaml", {"refcoco": (tmp_path / "r.json", sets["refcoco"][1])})
    with pytest.raises(RecordError, match=r"r.json: record '.*': field 'bbox'"):
        load_mixture(path)


def test_a_video_that_breaks_after_loading_comes_back_from_a_worker_as_one_line(tmp_path, sets):
    import shutil

    from engine.training.data.mixture import MixtureSteps

    # given a mixture of one HC-STVG clip whose video is overwritten with garbage after the mixture loaded
    anno = json.loads(sets["hcstvg"][0].read_text())
    vid = next(iter(anno))
    (tmp_path / "videos").mkdir()
    shutil.copy(sets["hcstvg"][1] / f"{vid}.mp4", tmp_path / "videos" / f"{vid}.mp4")
    (tmp_path / "anno.json").write_text(json.dumps({vid: anno[vid]}))
    mixture = load_mixture(write_mixture(tmp_path / "mix.yaml", {"hcstvg": (tmp_path / "anno.json", tmp_path / "videos")}))
    (tmp_path / "videos" / f"{vid}.mp4").write_bytes(b"not a video")
    tok = train_tokenizer(MAX_TIME_S)
    ds = MixtureSteps(mixture, 0, 1, FRAMES, SIZE, MAX_TIME_S, Collator(PromptVocab.from_tokenizer(tok, MAX_TIME_S), tok, 16),
                      Shard(), steps=1)
    # when a worker process builds the step
    (item,) = list(step_loader(ds, 0, 1, workers=1))
    # then it hands back the record's one-line error, naming the video and the record
    assert isinstance(item, BadRecord) and "\n" not in item.message
    assert f"{vid}.mp4" in item.message and f"record '{vid}'" in item.message


def test_cli_train_when_a_record_is_bad_prints_one_line_and_no_traceback(tmp_path, tiny_config):
    from click.testing import CliRunner

    from engine.app.cli import main
    from engine.model.config import save_config

    (tmp_path / "anno.txt").write_text("vid1 0.0 1.0 the red circle\n")  # no '##'
    (tmp_path / "videos").mkdir()
    mix = write_mixture(tmp_path / "mix.yaml", {"charades": (tmp_path / "anno.txt", tmp_path / "videos")})
    save_config(tiny_config, tmp_path / "model.json")
    result = CliRunner().invoke(main, ["train", "--config", str(tmp_path / "model.json"), "--mixture", str(mix),
                                       "--out", str(tmp_path / "out"), "--steps", "1", "--workers", "0"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"Error: {tmp_path / 'anno.txt'}:1: expected '<vid> <start> <end>##<query>', got 'vid1 0.0 1.0 the red circle'"]
