"""`spacevllm train-match`: collects the frozen model's evidence, fits the head, writes a model that scores with it."""
from __future__ import annotations

import json

import torch
from click.testing import CliRunner

from engine.app.cli import main
from engine.training.match_training import KINDS, TRAIN_STREAM, row_weights
from engine.model.checkpoint import load_model
from engine.model.config import ScoreMode


def test_train_match_writes_a_model_that_scores_with_its_head(tiny_model_dir, tmp_path):
    # given a (random-weight) model directory
    out = tmp_path / "match"
    # when the head is trained on a few clips
    r = CliRunner().invoke(main, ["train-match", "--model", str(tiny_model_dir), "--out", str(out), "--clips", "3",
                                  "--selection-clips", "2", "--epochs", "2", "--threads", "1"])
    # then it reports the chosen epoch and threshold, and the written model scores with the head at that threshold
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "match_training.json").read_text())
    assert summary["train_rows"] >= 3 * 3 and summary["selection_rows"] >= 2 * 3
    model = load_model(out / "model")
    assert model.config.score is ScoreMode.MATCH_HEAD
    assert model.config.default_threshold == round(summary["threshold"], 4)
    # and the evidence was kept in shards, so a second run resumes instead of collecting again
    shards = sorted(p.name for p in (out / "evidence").iterdir())
    assert shards == ["selection-0000.safetensors", "train-0000.safetensors"]
    # and the training and selection clips come from their own seed stream (not the evaluation sets': 7919, 104729)
    assert TRAIN_STREAM not in (7919, 104729)


def test_row_weights_balance_matches_against_non_matches_and_each_kind_of_negative():
    # given 6 positives, 3 plain negatives and 1 direction swap
    rows = {"label": torch.tensor([1] * 6 + [0] * 4),
            "kind": torch.tensor([0] * 6 + [KINDS.index("plain")] * 3 + [KINDS.index("direction")])}
    # when weighted with and without kind balance
    w, flat = row_weights(rows, True), row_weights(rows, False)
    # then positives and negatives weigh half each, and the lone direction swap as much as the 3 plain ones together
    assert torch.isclose(w[:6].sum(), w[6:].sum()) and torch.isclose(w.mean(), torch.tensor(1.0))
    assert torch.isclose(w[9], w[6:9].sum())
    assert torch.allclose(flat[6:], flat[6].expand(4))
