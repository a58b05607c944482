"""Readers on small fixture files written in each format; eval end to end on generated clips."""
from __future__ import annotations

import json

import pytest

from engine.training.data.formats import FormatError, read_charades, read_hcstvg, read_refcoco, read_vidstg


def test_read_hcstvg_positive_and_negative(tmp_path):
    anno = tmp_path / "a.json"
    anno.write_text(json.dumps({
        "v1": {"caption": "the red circle", "width": 320, "height": 240, "fps": 10, "img_num": 80, "st_frame": 3,
               "ed_frame": 4, "bbox": [[10, 20, 30, 40], [12, 20, 30, 40]], "st_time": 0.2, "ed_time": 0.3},
        "v2": {"caption": "the blue square", "width": 320, "height": 240, "fps": 10, "img_num": 80, "negative": True},
    }))
    a, b = read_hcstvg(anno, tmp_path)
    assert a.gt_span == (3, 4) and a.gt_boxes == {3: (10, 20, 40, 60), 4: (12, 20, 42, 60)} and a.media == tmp_path / "v1.mp4"
    assert b.gt_span is None and b.caption == "the blue square"


def test_read_hcstvg_when_boxes_and_span_disagree(tmp_path):
    anno = tmp_path / "a.json"
    anno.write_text(json.dumps({"v1": {"caption": "x", "width": 1, "height": 1, "fps": 1, "img_num": 5,
                                       "st_frame": 1, "ed_frame": 3, "bbox": [[0, 0, 1, 1]]}}))
    with pytest.raises(FormatError, match="1 boxes for frames 1..3"):
        read_hcstvg(anno, tmp_path)


def test_read_vidstg(tmp_path):
    anno = tmp_path / "v.json"
    anno.write_text(json.dumps([{
        "vid": "abc", "frame_count": 10, "fps": 5, "width": 640, "height": 480,
        "temporal_gt": {"begin_fid": 2, "end_fid": 3},
        "captions": [{"description": "the dog runs", "target_id": 1}],
        "trajectories": {"1": [None, None, {"fid": 2, "bbox": [1, 2, 3, 4]}, {"fid": 3, "bbox": [2, 2, 4, 4]}, None]},
    }]))
    (it,) = read_vidstg(anno, tmp_path)
    assert it.gt_span == (3, 4) and it.gt_boxes == {3: (1, 2, 3, 4), 4: (2, 2, 4, 4)} and it.caption == "the dog runs"


def test_read_charades(tmp_path):
    anno = tmp_path / "c.txt"
    anno.write_text("3MSZA 24.3 30.4##person turn a light on.\n\nAO8RW 0.0 6.9##a person is putting a book on a shelf.\n")
    a, b = read_charades(anno, tmp_path)
    assert a.gt_span_s == (24.3, 30.4) and a.caption == "person turn a light on." and b.task == "vtg"
    anno.write_text("broken line\n")
    with pytest.raises(FormatError, match="c.txt:1"):
        read_charades(anno, tmp_path)


def test_read_refcoco(tmp_path):
    anno = tmp_path / "r.json"
    anno.write_text(json.dumps([{"image_id": 7, "file_name": "img7.png", "width": 100, "height": 80, "bbox": [10, 10, 20, 30],
                                 "sentences": [{"sent": "left dog"}, {"sent": "the small dog"}]}]))
    a, b = read_refcoco(anno, tmp_path)
    assert a.gt_boxes == {1: (10.0, 10.0, 30.0, 40.0)} and b.caption == "the small dog" and a.task == "rec"


def test_eval_end_to_end_on_three_generated_clips(tmp_path, tiny_model):
    from engine.training.data.formats import write_hcstvg_clips
    from engine.training.evaluate import evaluate
    from engine.model.checkpoint import save_model

    # given 3 generated HC-STVG clips and a model
    anno = write_hcstvg_clips(tmp_path / "set", 3, seed=5, seconds=2.0, negative_rate=0.3)
    model_dir = save_model(tiny_model, tmp_path / "m")
    # when evaluated
    result = evaluate("hcstvg", anno, tmp_path / "set" / "videos", model_dir, tmp_path / "out", threshold=0.0)
    # then metrics and predictions are written in the documented forms
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for key in ("m_tIoU", "m_vIoU", "vIoU@0.3", "vIoU@0.5", "no_match_accuracy", "match_precision", "match_recall", "n_videos"):
        assert key in metrics
    assert metrics["n_videos"] == 3 and result["baseline"]["m_tIoU"] > 0
    preds = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert len(preds) == 3  # threshold 0: every clip predicted
    for p in preds.values():
        assert 1 <= p["st_frame"] <= p["ed_frame"]
        assert sorted(int(f) for f in p["bbox"]) == list(range(p["st_frame"], p["ed_frame"] + 1))  # densified
        assert all(len(b) == 4 for b in p["bbox"].values())


def _box_iou(a, b) -> float:
    """IoU of two xyxy boxes, written out here (an evaluator independent of engine.model.boxes)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def test_metrics_json_agrees_with_an_evaluator_run_on_predictions_json(tmp_path):
    from engine.training.data.formats import read_hcstvg, write_hcstvg_clips
    from engine.training.evaluate import evaluate
    from engine.contracts.settings import DEFAULT_MODEL_DIR

    # given the shipped model's predictions written for 6 clips (threshold 0: every clip answered)
    anno = write_hcstvg_clips(tmp_path / "set", 6, seed=8, seconds=4.0, negative_rate=0.0)
    evaluate("hcstvg", anno, tmp_path / "set" / "videos", DEFAULT_MODEL_DIR, tmp_path / "out", threshold=0.0)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    preds = json.loads((tmp_path / "out" / "predictions.json").read_text())
    # when an evaluator reads only predictions.json and the annotations (HC-STVG's definition of vIoU)
    v_ious = []
    for item in read_hcstvg(anno, tmp_path / "set" / "videos"):
        p = preds[item.vid]
        union = max(p["ed_frame"], item.gt_span[1]) - min(p["st_frame"], item.gt_span[0]) + 1
        both = range(max(p["st_frame"], item.gt_span[0]), min(p["ed_frame"], item.gt_span[1]) + 1)
        v_ious.append(sum(_box_iou(p["bbox"][str(f)], item.gt_boxes[f]) for f in both if f in item.gt_boxes) / union)
    # then it finds exactly the m_vIoU of metrics.json
    assert abs(sum(v_ious) / len(v_ious) - metrics["m_vIoU"]) < 1e-9
    assert metrics["m_vIoU"] > 0


def test_a_style_shifted_set_has_the_same_scenes_and_captions_and_other_pixels(tmp_path):
    import av
    import numpy as np

    from engine.training.data.formats import write_hcstvg_clips

    plain = write_hcstvg_clips(tmp_path / "plain", 2, seed=4, seconds=1.0)
    shifted = write_hcstvg_clips(tmp_path / "shift", 2, seed=4, seconds=1.0, style_shift=True)
    assert plain.read_text() == shifted.read_text()

    def first_frame(p):
        with av.open(str(p)) as c:
            return next(c.decode(video=0)).to_ndarray(format="rgb24").astype(np.float32)

    vid = next(iter(json.loads(plain.read_text())))
    a, b = first_frame(tmp_path / "plain" / "videos" / f"{vid}.mp4"), first_frame(tmp_path / "shift" / "videos" / f"{vid}.mp4")
    assert a.shape == b.shape and np.abs(a - b).mean() > 5  # visibly another camera
