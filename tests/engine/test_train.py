"""Threshold calibration: the pure threshold choice."""
from __future__ import annotations

import numpy as np
import pytest

from engine.train import best_threshold


@pytest.mark.parametrize("scores, labels, min_recall, expected_t, expected_bacc", [
    # separable: the lowest threshold that rejects every non-match keeps every match
    ([0.9, 0.8, 0.7, 0.2, 0.1], [1, 1, 1, 0, 0], 0.9, 0.21, 1.0),
    # overlapping: recall >= 0.9 forces a low threshold that lets one non-match through
    ([0.9, 0.8, 0.3, 0.4, 0.1], [1, 1, 1, 0, 0], 0.9, 0.11, 0.75),
    # no threshold on the grid keeps the recall: the fallback
    ([0.01, 0.02], [1, 1], 0.9, 0.5, -1.0),
])
def test_best_threshold_keeps_recall_then_rejects_the_most_non_matches(scores, labels, min_recall, expected_t, expected_bacc):
    t, bacc = best_threshold(np.asarray(scores), np.asarray(labels, bool), min_recall)
    assert t == pytest.approx(expected_t) and bacc == pytest.approx(expected_bacc)
