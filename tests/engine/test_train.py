"""Training: the threshold choice, batches with contrastive pairs, fine-tuning from a saved model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.model.checkpoint import load_model, save_model
from engine.train import TrainSettings, batch_samples, best_threshold, train


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


def test_a_batch_with_pairs_puts_each_positive_next_to_its_near_miss():
    # given half of each batch in contrastive pairs
    settings = TrainSettings(frames=4, pair_rate=0.5, task_mix=(1.0, 0.0, 0.0))
    # when a batch of 8 is drawn
    batch = batch_samples(settings, 3, 8)
    # then it holds 8 samples, the first 2 pairs (positive, negative) on the same pixels
    assert len(batch) == 8
    for pos, neg in (batch[0:2], batch[2:4]):
        assert pos.span_s is not None and neg.span_s is None and pos.caption != neg.caption
        assert np.array_equal(pos.frames, neg.frames)
    # and it is deterministic per (seed, batch index)
    assert [s.caption for s in batch] == [s.caption for s in batch_samples(settings, 3, 8)]


def test_fine_tuning_starts_from_the_given_model(tiny_model, tmp_path):
    # given a saved model whose weights no fresh build reproduces
    with torch.no_grad():
        for p in tiny_model.parameters():
            p.add_(0.01)
    save_model(tiny_model, tmp_path / "base")
    settings = TrainSettings(steps=1, lr=0.0, batch_size=2, rec_batch_size=2, frames=4, pair_rate=1.0,
                             eval_samples=2, calibration_samples=4)
    # when it is fine-tuned for one step at learning rate 0 (a fresh optimizer: nothing may move)
    train(tiny_model.config, tmp_path / "ft", settings, init_from=tmp_path / "base")
    # then the result has the base model's weights and a calibrated threshold
    tuned = load_model(tmp_path / "ft")
    base = tiny_model.state_dict()
    for name, value in tuned.state_dict().items():
        assert torch.equal(value, base[name]), name
    assert 0.0 <= tuned.config.default_threshold <= 1.0
