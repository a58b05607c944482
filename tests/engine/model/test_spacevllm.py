"""SpaceVLLM on tiny configs: shapes, STQ splicing, prefix sharing, gradients, overfitting."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from engine.data.collate import collate
from engine.data.synthetic import Sample
from engine.model.config import PromptOrder, ScoreMode
from engine.model.interleave import splice
from engine.model.losses import SpaceVLLMCriterion
from engine.model.spacevllm import build_spacevllm, frames_in_span


def _fake_sample(frames: int, size: int, seed: int, task: str = "stvg", negative: bool = False) -> Sample:
    rng = np.random.default_rng(seed)
    ts = tuple(0.5 * k for k in range(frames))
    boxes = np.tile(np.array([[0.4, 0.5, 0.2, 0.3]], dtype=np.float32), (frames, 1))
    present = np.array([2 <= k <= 5 for k in range(frames)]) & (not negative)
    return Sample(task, rng.integers(0, 255, (frames, size, size, 3), dtype=np.uint8), ts,
                  "the red circle moving left", None if negative else (1.0, 2.5), boxes, present, present.copy())


def test_shapes_through_every_module_when_given_a_batch(tiny_model, tiny_config):
    # given a batch of two 6-frame clips
    b = collate([_fake_sample(6, 32, 0), _fake_sample(6, 32, 1, negative=True)], tiny_model.vocab,
                tiny_model.tokenizer, tiny_config.tokens_per_frame)
    # when the vision path and the full model run
    patches = tiny_model.vision_tower(b.pixels.flatten(0, 1))
    tokens = tiny_model.encode_frames(b.pixels.flatten(0, 1))
    llm_tokens = tiny_model.llm_tokens(tokens.reshape(2, 6, 64, 32))
    out = tiny_model(b.pixels, b.input_ids, b.attention_mask, b.question_index, b.question_mask)
    # then every shape is as documented
    assert patches.shape == (12, 64, 32)  # (B*F, grid*grid, C)
    assert tokens.shape == (12, 64, 32)  # (B*F, G, D): the full grid, for the cache and the space decoder
    assert llm_tokens.shape == (2, 6, 16, 32)  # (B, F, P, D) after 2x2 pooling, for the LLM
    assert out.logits.shape == (*b.input_ids.shape, tiny_model.language_model.config.vocab_size)
    assert out.decoder.boxes_cxcywh.shape == (2, 6, 4)
    assert out.decoder.presence_logits.shape == (2, 6)
    assert out.decoder.heatmap_logits.shape == (2, 6, 64)
    assert out.answer_presence_logits.shape == (2, 6)
    assert ((out.decoder.boxes_cxcywh >= 0) & (out.decoder.boxes_cxcywh <= 1)).all()


def test_splice_when_counts_differ_raises_naming_both():
    # given three placeholders but two features
    ids = torch.tensor([[5, 7, 7, 5, 7]])
    emb = torch.zeros(1, 5, 4)
    # when / then
    with pytest.raises(ValueError, match="3 placeholder tokens but 2 features"):
        splice(emb, ids, 7, torch.ones(2, 4), "spatio-temporal queries")


def test_splice_places_features_in_order():
    ids = torch.tensor([[5, 7, 5, 7]])
    out = splice(torch.zeros(1, 4, 2), ids, 7, torch.tensor([[1.0, 1.0], [2.0, 2.0]]), "x")
    assert out[0, 1].tolist() == [1.0, 1.0] and out[0, 3].tolist() == [2.0, 2.0] and out[0, 0].abs().sum() == 0


def test_stq_count_error_when_a_prompt_misses_a_query(tiny_model):
    # given a video prompt whose last <st> was dropped
    ids = torch.tensor([tiny_model.prefix_ids([0.0, 0.5])[:-1]])
    vis = torch.zeros(1, 2, 16, 32)
    with pytest.raises(ValueError, match="spatio-temporal queries: the prompt has 1 placeholder tokens but 2 features"):
        tiny_model._embed(ids, vis, 2)


def test_ground_with_shared_prefix_equals_grounding_each_question_from_scratch(tiny_model):
    # given one 8-frame window and questions of different lengths
    torch.manual_seed(1)
    px = torch.rand(8, 3, 32, 32)
    ts = [0.5 * k for k in range(8)]
    questions = ["the red circle", "the small blue square moving left", "the white triangle standing still"]
    # when grounded together against one prefix and separately from scratch
    shared = tiny_model.ground(tiny_model.encode_window(px, ts), questions)
    for q, g in zip(questions, shared):
        ref = tiny_model.ground_from_scratch(px, ts, q)
        # then scores, spans and boxes agree
        assert abs(g.score - ref.score) <= 1e-4
        assert g.span_s == ref.span_s
        assert torch.allclose(g.all_boxes_cxcywh, ref.all_boxes_cxcywh, atol=1e-4)


def test_ground_when_no_questions_returns_empty(tiny_model):
    pre = tiny_model.encode_window(torch.rand(2, 3, 32, 32), [0.0, 0.5])
    assert tiny_model.ground(pre, []) == []


def test_question_first_order_grounds_from_scratch_and_refuses_a_shared_prefix(tiny_config):
    from engine.model.tokenizer import train_tokenizer

    cfg = dataclasses.replace(tiny_config, prompt_order=PromptOrder.QUESTION_FIRST)
    model = build_spacevllm(cfg, train_tokenizer(cfg.max_time_s)).eval()
    px, ts = torch.rand(4, 3, 32, 32), [0.0, 0.5, 1.0, 1.5]
    g = model.ground_from_scratch(px, ts, "the red circle")
    assert 0.0 <= g.score <= 1.0 and g.all_boxes_cxcywh.shape == (4, 4)
    with pytest.raises(ValueError, match="video_first"):
        model.ground(model.encode_window(px, ts), ["the red circle"])


@pytest.mark.parametrize(
    "timestamps, span, expected",
    [
        ((), (0.0, 1.0), ()),
        ((0.0, 0.5, 1.0, 1.5), (0.5, 1.0), (1, 2)),
        ((0.0, 0.5, 1.0, 1.5), (0.8, 0.9), (2,)),  # between frames: the nearest one
        ((0.0, 0.5, 1.0, 1.5), (0.0, 9.9), (0, 1, 2, 3)),
    ],
)
def test_frames_in_span(timestamps, span, expected):
    assert frames_in_span(timestamps, *span) == expected


def _criterion(model, loss_cfg=None):
    return SpaceVLLMCriterion(loss_cfg or model.config.loss, model.vocab.time_ids,
                              model.language_model.config.vocab_size, model.config.frame_grid)


def test_gradients_reach_stq_embeddings_and_the_decoder(tiny_model, tiny_config):
    # given a positive STVG batch
    tiny_model.train()
    b = collate([_fake_sample(4, 32, 0)], tiny_model.vocab, tiny_model.tokenizer, tiny_config.tokens_per_frame)
    # when the loss (with the answer-state probe) is back-propagated
    out = tiny_model(b.pixels, b.input_ids, b.attention_mask, b.question_index, b.question_mask)
    crit = _criterion(tiny_model, dataclasses.replace(tiny_config.loss, answer_presence=1.0, first_answer_token=2.0))
    crit(out.logits, b.labels, out.decoder, b.boxes_cxcywh, b.box_mask, b.presence, out.answer_presence_logits).total.backward()
    # then the STQ rows used and every decoder parameter get a gradient
    assert tiny_model.stq.grad is not None and tiny_model.stq.grad[:4].abs().sum() > 0
    assert tiny_model.stq.grad[4:].abs().sum() == 0  # frames beyond the clip take no query
    for name, p in tiny_model.space_decoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert tiny_model.vision_tower.pos.grad.abs().sum() > 0
    assert tiny_model.answer_probe_q.weight.grad.abs().sum() > 0 and tiny_model.answer_probe_k.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", list(ScoreMode))
def test_the_match_score_follows_the_configured_mode(tiny_config, mode):
    from engine.model.tokenizer import train_tokenizer

    # given a model configured with a score mode
    torch.manual_seed(0)
    model = build_spacevllm(dataclasses.replace(tiny_config, score=mode), train_tokenizer(tiny_config.max_time_s)).eval()
    px, ts = torch.rand(4, 3, 32, 32), [0.0, 0.5, 1.0, 1.5]
    # when it grounds a question
    g = model.ground(model.encode_window(px, ts), ["the red circle"])[0]
    # then the score is 1 - P(none), or its geometric mean with the best frame presence
    expected = g.answer_score if mode is ScoreMode.ANSWER else (g.answer_score * float(g.presence.max())) ** 0.5
    assert g.score == pytest.approx(expected, abs=1e-6) and 0.0 <= g.score <= 1.0


def test_a_fixed_small_batch_is_overfit(tiny_model, tiny_config):
    # given a fixed batch of two clips
    torch.manual_seed(0)
    tiny_model.train()
    b = collate([_fake_sample(4, 32, 0), _fake_sample(4, 32, 1, negative=True)], tiny_model.vocab,
                tiny_model.tokenizer, tiny_config.tokens_per_frame)
    # (one-hot time targets and no heatmap term: soft targets have a non-zero entropy floor)
    crit = _criterion(tiny_model, dataclasses.replace(tiny_config.loss, time_sigma_s=0.01, heatmap=0.0))
    opt = torch.optim.AdamW(tiny_model.parameters(), lr=3e-3)
    losses = []
    # when trained on it for a bounded number of steps
    for _ in range(150):
        out = tiny_model(b.pixels, b.input_ids, b.attention_mask, b.question_index, b.question_mask)
        loss = crit(out.logits, b.labels, out.decoder, b.boxes_cxcywh, b.box_mask, b.presence).total
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # then the loss falls by at least 90%
    assert losses[-1] <= 0.1 * losses[0], (losses[0], losses[-1])
