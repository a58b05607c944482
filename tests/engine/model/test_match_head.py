"""The match head: its evidence (box masks, trajectories), its place in the model's score, its checkpoints, and
that fitting it teaches a word to read the evidence."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.training.match_training import MatchTrainSettings, fit, threshold_for_recall
from engine.model.checkpoint import CheckpointError, load_model, save_model
from engine.model.config import ScoreMode
from engine.model.match_head import (COLOUR_FEATURES, SCORE_FEATURES, TRAJECTORY_FEATURES, box_masks, colour_grid,
                                     consensus_velocity, trajectory_features)
from engine.model.spacevllm import build_spacevllm
from engine.model.tokenizer import train_tokenizer


def test_a_box_mask_sums_to_one_and_weighs_the_cells_under_the_box():
    # given a box covering the top-left quarter of an 8x8 grid, and one smaller than a cell
    boxes = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.7, 0.3, 0.01, 0.01]])
    # when masks are made
    m = box_masks(boxes, 8).reshape(2, 8, 8)
    # then each sums to 1, the quarter holds nearly all of the first, and the tiny box weighs its own cell most
    assert torch.allclose(m.sum((1, 2)), torch.ones(2), atol=1e-6)
    assert m[0, :4, :4].sum() > 0.9
    assert divmod(int(m[1].argmax()), 8) == (2, 5)


def test_trajectory_features_measure_velocity_displacement_and_span():
    # given a box moving left at 0.05 image widths per second over frames 2..9 of a 16-frame, 8 s window
    times = torch.arange(16, dtype=torch.float32)[None] * 0.5
    boxes = torch.zeros(1, 16, 4)
    boxes[0, :, 0] = 0.8 - 0.05 * times[0]
    boxes[0, :, 1] = 0.5
    boxes[0, :, 2:] = 0.2
    weights = torch.zeros(1, 16)
    weights[0, 2:10] = 1 / 8
    # when its features are computed
    f = trajectory_features(boxes, weights, times, torch.tensor([8.0]))[0]
    # then velocity, displacement, size and span come out
    assert f[0] == pytest.approx(-0.05, abs=1e-5) and f[1] == pytest.approx(0.0, abs=1e-6)
    assert f[3] == pytest.approx(-0.05 * 3.5, abs=1e-5)  # over the 3.5 s span
    assert f[5] == pytest.approx(0.2) and f[8] == pytest.approx(3.5) and f[9] == pytest.approx(3.5 / 8)
    assert f[10] == pytest.approx(0.5)
    # and the consensus path is the same one, holding all the weight
    assert f[11] == pytest.approx(-0.05, abs=1e-5) and f[12] == pytest.approx(0.0, abs=1e-6) and f[14] == pytest.approx(1.0)


def test_the_consensus_velocity_ignores_frames_where_the_box_jumped_to_another_object():
    # given boxes moving right at 0.04/s on 10 of 16 frames, and on 6 frames parked on a still object elsewhere
    times = torch.arange(16, dtype=torch.float32)[None] * 0.5
    boxes = torch.zeros(1, 16, 4)
    boxes[0, :, 0] = 0.2 + 0.04 * times[0]
    boxes[0, :, 1] = 0.3
    for k in (1, 4, 7, 9, 12, 15):
        boxes[0, k, :2] = torch.tensor([0.8, 0.9])
    weights = torch.full((1, 16), 1 / 16)
    # when the velocity is fitted over all frames, and by consensus
    f = trajectory_features(boxes, weights, times, torch.tensor([8.0]))[0]
    vx, vy, share = consensus_velocity(boxes, weights, times)
    # then the plain fit is pulled off (it points down and right), the consensus finds the path and its share
    assert f[1] > 0.01
    assert float(vx) == pytest.approx(0.04, abs=1e-4) and float(vy) == pytest.approx(0.0, abs=1e-4)
    assert float(share) == pytest.approx(10 / 16)


def test_the_colour_grid_holds_each_cells_mean_colour():
    # given a frame whose left half is red and right half blue
    px = torch.zeros(1, 3, 64, 64)
    px[0, 0, :, :32] = 1.0
    px[0, 2, :, 32:] = 1.0
    # when its colour grid is taken
    g = colour_grid(px).reshape(16, 16, 3)
    # then the left cells are red and the right ones blue
    assert torch.equal(g[:, :8], torch.tensor([1.0, 0, 0]).expand(16, 8, 3))
    assert torch.equal(g[:, 8:], torch.tensor([0, 0, 1.0]).expand(16, 8, 3))


def test_the_colour_evidence_reads_the_pixels_under_the_box(head_model):
    # given a window whose frames hold a red square at the top left on grey
    px = torch.full((4, 3, 32, 32), 0.5)
    px[:, :, 2:10, 2:10] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    prefix = head_model.encode_window(px, [0.0, 0.5, 1.0, 1.5])
    from engine.model.match_head import gather_evidence
    # when evidence is gathered for a box on the square and one elsewhere
    boxes = torch.tensor([[0.1875, 0.1875, 0.25, 0.25], [0.7, 0.7, 0.25, 0.25]])[:, None].expand(2, 4, 4)
    e = gather_evidence(prefix.visual_tokens[None], prefix.stq_states[None], prefix.colours[None], [0, 0], [(0, 1, 2, 3)] * 2,
                        boxes, torch.ones(2, 4), (prefix.timestamps_s,), torch.tensor([0.9, 0.9]),
                        torch.ones(2, 1, dtype=torch.long), torch.ones(2, 1, dtype=torch.long))
    # then the first box's colour is (nearly) red and the second's grey, against the same frame mean
    assert e.colour[0, 0] > 0.9 and e.colour[0, 1] < 0.1 and e.colour[1, :3].sub(0.5).abs().max() < 0.05
    assert torch.allclose(e.colour[0, 3:6], e.colour[1, 3:6])


@pytest.fixture
def head_model(tiny_config):
    torch.manual_seed(0)
    return build_spacevllm(dataclasses.replace(tiny_config, score=ScoreMode.MATCH_HEAD), train_tokenizer(tiny_config.max_time_s)).eval()


def test_the_score_is_the_heads_verdict_on_the_evidence_and_every_question_is_decoded(head_model):
    # given a model scoring with the match head
    px, ts = torch.rand(4, 3, 32, 32), [0.0, 0.5, 1.0, 1.5]
    prefix = head_model.encode_window(px, ts)
    # when it grounds two questions with floors no answer score could bound
    gs = head_model.ground(prefix, ["the red circle", "the blue square moving left"], min_scores=[0.99, 0.99], with_evidence=True)
    # then each score is the head's sigmoid on that row's evidence
    for g in gs:
        e = g.evidence
        with torch.no_grad():
            words = head_model.language_model.get_input_embeddings()(e["word_ids"][None]).float()
            logit = head_model.match_head(e["appearance"][None], e["colour"][None], e["trajectory"][None], e["scores"][None], words,
                                          e["word_ids"][None],
                                          torch.ones(1, len(e["word_ids"]), dtype=torch.long))
        assert g.score == pytest.approx(float(logit.sigmoid()), abs=1e-5)
        assert e["trajectory"].shape == (TRAJECTORY_FEATURES,) and e["scores"].shape == (SCORE_FEATURES,)
        assert e["colour"].shape == (COLOUR_FEATURES,)
        # and the space decoder ran on the span (no upper bound skips it)
        assert g.frame_indices and len(g.boxes_cxcywh) == len(g.frame_indices)
    # and the same questions batched alone score the same
    alone = head_model.ground(prefix, ["the blue square moving left"])[0]
    assert alone.score == pytest.approx(gs[1].score, abs=1e-5)


def test_a_checkpoint_without_the_head_loads_unless_its_config_scores_with_it(tiny_model, head_model, tmp_path):
    # given checkpoints saved without the match head's tensors
    plain = save_model(tiny_model, tmp_path / "plain")
    headed = save_model(head_model, tmp_path / "headed")
    for d in (plain, headed):
        state = {k: v for k, v in load_file(str(d / "model.safetensors")).items() if not k.startswith("match_head.")}
        save_file(state, str(d / "model.safetensors"))
    # when they are loaded
    # then the one that does not use the head loads and grounds as before
    again = load_model(plain)
    px, ts = torch.rand(4, 3, 32, 32), [0.0, 0.5, 1.0, 1.5]
    assert again.ground(again.encode_window(px, ts), ["the red circle"])[0].score == pytest.approx(
        tiny_model.ground(tiny_model.encode_window(px, ts), ["the red circle"])[0].score, abs=1e-6)
    # and the one configured to score with it is refused, naming the head
    with pytest.raises(CheckpointError, match="match_head"):
        load_model(headed)


def _rows(model, n: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Evidence rows where only the direction word and the box's horizontal velocity decide the label (the rest
    is the same in every row)."""
    tok = model.tokenizer
    left, right, the, circle = (tok.token_to_id(w) for w in ("left", "right", "the", "circle"))
    vx = torch.from_numpy(rng.choice([-0.08, 0.08], n)).float()
    word = torch.from_numpy(rng.choice([left, right], n))
    label = ((vx < 0) == (word == left)).long()
    trajectory = torch.from_numpy(rng.normal(0, 0.02, (n, TRAJECTORY_FEATURES))).float()
    trajectory[:, 0] += vx
    same = lambda d: torch.from_numpy(np.random.default_rng(1).normal(0, 1, d)).float().expand(n, -1)  # noqa: E731
    return {"appearance": same(3 * model.config.llm.hidden_size), "colour": same(COLOUR_FEATURES), "trajectory": trajectory,
            "scores": same(SCORE_FEATURES),
            "word_ids": torch.stack([torch.full((n,), the), torch.full((n,), circle), word], 1),
            "word_mask": torch.ones(n, 3, dtype=torch.long), "label": label,
            "kind": torch.where(label == 1, 0, 4)}


def test_fitting_teaches_a_direction_word_to_read_the_trajectory(head_model):
    # given evidence in which only "left"/"right" against the box's velocity tells a match
    rng = np.random.default_rng(0)
    train, selection = _rows(head_model, 1024, rng), _rows(head_model, 256, rng)
    # when the head is fitted
    best = fit(head_model, train, selection, MatchTrainSettings(epochs=25, lr=1e-2, batch=128))
    # then on the selection set it keeps the recall and rejects the wrong directions
    assert best["selection"]["recall"] >= 0.92
    assert best["selection"]["direction_rejected"] >= 0.95


def test_the_threshold_keeps_the_asked_recall():
    scores = np.linspace(0, 1, 101)
    labels = (scores > 0.3).astype(int)
    t = threshold_for_recall(scores, labels, 0.9)
    assert np.mean(scores[labels == 1] >= t) >= 0.9 and np.mean(scores[labels == 1] >= t + 0.011) < 0.9
