from __future__ import annotations

import pytest

from engine.training.metrics import match_summary, rec_accuracy, stvg_summary, t_iou, v_iou, vtg_summary


@pytest.mark.parametrize(
    "pred, gt, expected",
    [
        (None, (0, 9), 0.0),  # no prediction
        ((0, 9), None, 0.0),
        ((0, 4), (10, 19), 0.0),  # disjoint
        ((0, 9), (0, 9), 1.0),  # identical
        ((2, 5), (0, 9), 4 / 10),  # nested: frames counted inclusively
        ((0, 9), (5, 14), 5 / 15),  # overlapping
        ((3, 3), (3, 3), 1.0),  # one frame each
    ],
)
def test_t_iou_table(pred, gt, expected):
    assert t_iou(pred, gt) == pytest.approx(expected)


BOX = [0, 0, 10, 10]
HALF = [0, 0, 10, 5]


@pytest.mark.parametrize(
    "pred, gt, pred_boxes, gt_boxes, expected",
    [
        (None, (0, 3), {}, {f: BOX for f in range(4)}, 0.0),
        ((0, 3), (0, 3), {f: BOX for f in range(4)}, {f: BOX for f in range(4)}, 1.0),  # identical
        ((0, 3), (0, 3), {f: HALF for f in range(4)}, {f: BOX for f in range(4)}, 0.5),
        ((0, 3), (0, 3), {0: BOX, 1: BOX}, {f: BOX for f in range(4)}, 0.5),  # missing boxes score 0
        ((0, 1), (0, 3), {f: BOX for f in range(2)}, {f: BOX for f in range(4)}, 2 / 4),  # nested
        ((5, 6), (0, 3), {f: BOX for f in (5, 6)}, {f: BOX for f in range(4)}, 0.0),  # disjoint
    ],
)
def test_v_iou_table(pred, gt, pred_boxes, gt_boxes, expected):
    assert v_iou(pred, gt, pred_boxes, gt_boxes) == pytest.approx(expected)


def test_summaries_from_empty_and_thresholds_strict():
    assert stvg_summary([], [])["m_vIoU"] == 0.0
    s = stvg_summary([1.0, 0.5], [0.5, 0.3])
    assert s["vIoU@0.5"] == 0.0 and s["vIoU@0.3"] == 0.5 and s["m_tIoU"] == 0.75  # strictly greater than R
    v = vtg_summary([0.3, 0.5, 0.7, 0.1])
    assert (v["R1@0.3"], v["R1@0.5"], v["R1@0.7"]) == (0.75, 0.5, 0.25)
    assert rec_accuracy([0.5, 0.49]) == 0.5 and rec_accuracy([]) == 0.0


def test_match_summary():
    m = match_summary([True, False, True, False], [True, True, False, False])
    assert m == {"no_match_accuracy": 0.5, "match_precision": 0.5, "match_recall": 0.5}
