"""Training: the threshold choice, batches with contrastive pairs, fine-tuning from a saved model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.model.checkpoint import load_model, save_model
from engine.training.train import TrainSettings, batch_samples, best_threshold, train


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
    # when it is fine-tuned for one step at learning rate 0 (a fresh optimizer: nothing may move), with other loss weights
    import dataclasses

    requested = dataclasses.replace(tiny_model.config, loss=dataclasses.replace(tiny_model.config.loss, box_motion=2.0, time_tokens=1.0))
    train(requested, tmp_path / "ft", settings, init_from=tmp_path / "base")
    # then the result has the base model's weights and a calibrated threshold
    tuned = load_model(tmp_path / "ft")
    base = tiny_model.state_dict()
    for name, value in tuned.state_dict().items():
        assert torch.equal(value, base[name]), name
    assert 0.0 <= tuned.config.default_threshold <= 1.0
    # and the requested loss weights, which its config records
    assert tuned.config.loss.box_motion == 2.0 and tuned.config.loss.time_tokens == 1.0


def test_a_synthetic_global_batch_cut_across_ranks_and_micro_steps_is_the_whole_batch():
    from engine.training.data.steps import Shard

    # given a global batch of 8 with contrastive pairs (pairs may straddle a cut)
    settings = TrainSettings(frames=4, pair_rate=0.5, task_mix=(1.0, 0.0, 0.0))
    whole = [s.caption for s in batch_samples(settings, 5, 8)]
    # when 2 ranks x 2 micro-steps (or 3 ranks, uneven) each draw their part
    for world, accum in ((2, 2), (3, 1)):
        parts = [s.caption for r in range(world) for m in range(accum)
                 for s in batch_samples(settings, 5, 8, shard=Shard(r, world, accum), micro=m)]
        # then the parts in order are the whole batch
        assert parts == whole, (world, accum)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_training_with_autocast_accumulation_and_checkpointing_runs_and_logs_every_step(tiny_config, tmp_path, precision):
    import json

    # given the tiny model, 2 steps of a batch of 4 in 2 micro-steps, activations recomputed in backward
    settings = TrainSettings(steps=2, batch_size=4, rec_batch_size=4, frames=4, warmup=1, grad_accum=2, precision=precision,
                             grad_checkpointing=True, workers=0, eval_samples=2, calibration_samples=4)
    # when trained on the CPU (fp16: with the gradient scaler)
    train(tiny_config, tmp_path / "run", settings)
    # then every step logged finite losses and the model loads
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in log] == [1, 2] and all(np.isfinite(x["total"]) for x in log)
    assert load_model(tmp_path / "run").config.name == tiny_config.name
