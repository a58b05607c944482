from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.model.boxes import (clip_xyxy, cxcywh_to_xyxy, giou_xyxy, iou_xyxy, xywh_to_xyxy, xyxy_norm_to_px,
                          xyxy_px_to_norm, xyxy_to_cxcywh)


@pytest.mark.parametrize("xyxy", [[0, 0, 0, 0], [0.1, 0.2, 0.5, 0.9], [10, 20, 30, 60]])
def test_xyxy_cxcywh_round_trip(xyxy):
    b = np.asarray(xyxy, dtype=np.float64)
    assert np.allclose(cxcywh_to_xyxy(xyxy_to_cxcywh(b)), b)
    t = torch.tensor(xyxy, dtype=torch.float64)
    assert torch.allclose(cxcywh_to_xyxy(xyxy_to_cxcywh(t)), t)


def test_norm_px_round_trip_and_values():
    px = xyxy_norm_to_px(np.array([0.5, 0.25, 1.0, 1.0]), (640, 480))
    assert px.tolist() == [320, 120, 640, 480]
    assert np.allclose(xyxy_px_to_norm(px, (640, 480)), [0.5, 0.25, 1.0, 1.0])


def test_xywh_to_xyxy():
    assert xywh_to_xyxy(np.array([10.0, 20.0, 5.0, 6.0])).tolist() == [10, 20, 15, 26]


@pytest.mark.parametrize(
    "a, b, iou, giou",
    [
        ([0, 0, 0, 0], [0, 0, 0, 0], 0.0, None),  # empty boxes
        ([0, 0, 2, 2], [0, 0, 2, 2], 1.0, 1.0),  # identical
        ([0, 0, 2, 2], [1, 1, 3, 3], 1 / 7, 1 / 7 - 2 / 9),  # overlapping
        ([0, 0, 1, 1], [2, 0, 3, 1], 0.0, -1 / 3),  # disjoint: hull 3, union 2
        ([0, 0, 4, 4], [1, 1, 2, 2], 1 / 16, 1 / 16),  # nested
    ],
)
def test_iou_and_giou_table(a, b, iou, giou):
    assert float(iou_xyxy(np.array(a, float), np.array(b, float))) == pytest.approx(iou)
    if giou is not None:
        assert float(giou_xyxy(np.array(a, float), np.array(b, float))) == pytest.approx(giou)
        assert float(giou_xyxy(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))) == pytest.approx(giou)


def test_clip_copies_its_input():
    b = np.array([-5.0, -5.0, 700.0, 500.0])
    out = clip_xyxy(b, (640, 480))
    assert out.tolist() == [0, 0, 640, 480] and b[0] == -5.0
