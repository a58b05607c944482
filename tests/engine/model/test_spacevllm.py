"""SpaceVLLM on tiny configs: shapes, STQ splicing, prefix sharing, gradients, overfitting."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from engine.training.data.collate import collate
from engine.training.data.synthetic import Sample
from engine.model.config import PromptOrder, ScoreMode
from engine.model.interleave import splice
from engine.model.losses import SpaceVLLMCriterion
from engine.model.spacevllm import build_spacevllm, decode_in_spans, fill_between_keyframes, frame_stride_for_budget, frames_in_span, keyframes_of


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
    llm_tokens, decoder_tokens = tiny_model.split_tokens(tokens.reshape(2, 6, 64, 32))
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
    # and the question-word paths switched on (they start at zero)
    with torch.no_grad():
        for layer in (tiny_model.answer_words, tiny_model.decoder_words):
            layer.weight.normal_(0, 0.5)
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
    # and the zero-initialised question-word paths get one too (they can leave zero)
    assert tiny_model.answer_words.weight.grad.abs().sum() > 0 and tiny_model.decoder_words.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", [ScoreMode.ANSWER, ScoreMode.ANSWER_AND_PRESENCE])  # match_head: test_match_head.py
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


@pytest.mark.parametrize("frames, stride, expected", [
    ((), 2, ()),
    ((3,), 2, (3,)),
    ((0, 1, 2, 3, 4), 1, (0, 1, 2, 3, 4)),
    ((0, 1, 2, 3, 4), 2, (0, 2, 4)),
    ((2, 3, 4, 5), 2, (2, 4, 5)),  # the span's last frame is always decoded
])
def test_keyframes_of(frames, stride, expected):
    assert keyframes_of(frames, stride) == expected


def test_fill_between_keyframes_interpolates_in_time():
    # given boxes decoded on keyframes 0 and 3 of frames 0..3 (uneven timestamps)
    ts = (0.0, 1.0, 1.5, 2.0)
    boxes = torch.zeros(4, 4)
    boxes[0], boxes[3] = torch.tensor([0.2, 0.2, 0.1, 0.1]), torch.tensor([0.6, 0.4, 0.3, 0.1])
    presence = torch.tensor([0.2, 0.0, 0.0, 0.6])
    # when the frames in between are filled
    fill_between_keyframes(ts, (0, 3), (0, 1, 2, 3), boxes, presence)
    # then they lie on the line between the keyframes, at their time
    assert torch.allclose(boxes[1], torch.tensor([0.4, 0.3, 0.2, 0.1])) and torch.allclose(boxes[2], torch.tensor([0.5, 0.35, 0.25, 0.1]))
    assert presence[1].item() == pytest.approx(0.4) and presence[2].item() == pytest.approx(0.5)


@pytest.mark.parametrize("frames, budget, expected", [
    ([(0, 1, 2, 3)] * 4, 0, 1),  # no limit
    ([(0, 1, 2, 3)] * 4, 16, 1),  # fits
    ([tuple(range(16))] * 16, 96, 3),  # 256 pairs -> 144 at stride 2 -> 96 at stride 3
    ([(0, 1)] * 10, 5, 1),  # first and last frames are always kept
    ([], 8, 1),
])
def test_frame_stride_for_budget(frames, budget, expected):
    assert frame_stride_for_budget(frames, budget) == expected


def test_the_space_decoder_on_question_frame_pairs_equals_decoding_whole_windows(tiny_model):
    # given one window's STQ states and frame tokens and two questions' states (the second one padded)
    torch.manual_seed(0)
    f, d = 8, 32
    stq, tokens = torch.randn(f, d), torch.randn(f, 64, d)
    q, qmask = torch.randn(2, 5, d), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    dec = tiny_model.space_decoder
    with torch.no_grad():
        whole = dec(stq[None].expand(2, -1, -1), tokens[None].expand(2, -1, -1, -1), q, qmask)
        # when the decoder runs on (question, frame) pairs: every frame, then keyframes only
        boxes, presence = decode_in_spans(dec, stq, tokens, q, qmask, [tuple(range(f)), tuple(range(f))])
        keys = keyframes_of(tuple(range(f)), 3)
        kb, kp = decode_in_spans(dec, stq, tokens, q, qmask, [keys, (2, 5)])
    # then every frame matches the whole-window decoder (frames are independent in the decoder)
    assert torch.allclose(boxes, whole.boxes_cxcywh, atol=1e-5)
    assert torch.allclose(presence, whole.presence_logits.sigmoid(), atol=1e-5)
    # and keyframe-only decoding gives the same values there, zeros elsewhere
    assert torch.allclose(kb[0, list(keys)], boxes[0, list(keys)], atol=1e-5) and torch.allclose(kb[1, [2, 5]], boxes[1, [2, 5]], atol=1e-5)
    assert kb[0, [1, 2, 4, 5]].abs().sum() == 0 and kp[1, [0, 1, 3, 4, 6, 7]].abs().sum() == 0


def test_box_motion_charges_a_box_that_jumps_and_time_tokens_can_weigh_more(tiny_model, tiny_config):
    # given a 6-frame positive and the model's outputs
    b = collate([_fake_sample(6, 32, 0)], tiny_model.vocab, tiny_model.tokenizer, tiny_config.tokens_per_frame)
    with torch.no_grad():
        out = tiny_model(b.pixels, b.input_ids, b.attention_mask, b.question_index, b.question_mask)
    crit = _criterion(tiny_model, dataclasses.replace(tiny_config.loss, box_motion=1.0))
    steady = dataclasses.replace(out.decoder, boxes_cxcywh=b.boxes_cxcywh.clone())  # the truth: no motion error
    jumped = b.boxes_cxcywh.clone()
    jumped[0, 3, 0] += 0.3  # one span frame's box on another object
    jumping = dataclasses.replace(out.decoder, boxes_cxcywh=jumped)
    terms = [crit(out.logits, b.labels, d, b.boxes_cxcywh, b.box_mask, b.presence) for d in (steady, jumping)]
    # then the steady track costs nothing, the jump is paid on both of its frame pairs
    assert float(terms[0].box_motion) == 0.0
    pairs = int((b.box_mask[:, 1:] & b.box_mask[:, :-1]).sum())
    assert abs(float(terms[1].box_motion) - 2 * 0.3 / pairs) < 1e-5
    # and weighing time tokens changes the LM term (the answer has them), box motion off leaves it at zero
    heavier = _criterion(tiny_model, dataclasses.replace(tiny_config.loss, time_tokens=3.0))
    lm = heavier(out.logits, b.labels, out.decoder, b.boxes_cxcywh, b.box_mask, b.presence)
    assert float(lm.lm) != float(terms[0].lm) and float(lm.box_motion) == 0.0
