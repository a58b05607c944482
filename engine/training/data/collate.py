"""Samples -> padded tensors for `SpaceVLLM.forward` and the criterion."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.model.config import PromptOrder
from engine.model.interleave import answer_ids, question_ids, video_prefix_ids
from engine.model.preprocess import frames_to_pixels
from engine.training.data.synthetic import Sample


@dataclass(frozen=True)
class Batch:
    pixels: torch.Tensor  # (B, F, 3, S, S) float in [0, 1]
    input_ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L)
    labels: torch.Tensor  # (B, L): answer tokens, -100 elsewhere
    question_index: torch.Tensor  # (B, Lq)
    question_mask: torch.Tensor  # (B, Lq)
    boxes_cxcywh: torch.Tensor  # (B, F, 4)
    box_mask: torch.Tensor  # (B, F) bool
    presence: torch.Tensor  # (B, F) float


def collate(samples: list[Sample], vocab, tok, tokens_per_frame: int, order: PromptOrder = PromptOrder.VIDEO_FIRST) -> Batch:
    frames = {s.frames.shape[0] for s in samples}
    assert len(frames) == 1, f"a batch needs one frame count, got {sorted(frames)}"
    seqs, labels, q_pos = [], [], []
    for s in samples:
        video = video_prefix_ids(vocab, tok, list(s.timestamps_s), tokens_per_frame)
        q = question_ids(vocab, tok, s.task, s.caption)
        a = answer_ids(vocab, tok, s.span_s)
        if order is PromptOrder.VIDEO_FIRST:
            seq = video + q + a
            pos = list(range(len(video), len(video) + len(q)))
        else:
            seq = q[:-1] + video + q[-1:] + a
            pos = list(range(len(q) - 1)) + [len(q) - 1 + len(video)]
        seqs.append(seq)
        labels.append([-100] * (len(seq) - len(a)) + a)
        q_pos.append(pos)
    n, length, lq = len(samples), max(map(len, seqs)), max(map(len, q_pos))
    ids = torch.full((n, length), vocab.pad)
    attn = torch.zeros(n, length, dtype=torch.long)
    lab = torch.full((n, length), -100)
    qi = torch.zeros(n, lq, dtype=torch.long)
    qm = torch.zeros(n, lq, dtype=torch.long)
    for i, (seq, lb, pos) in enumerate(zip(seqs, labels, q_pos)):
        ids[i, : len(seq)] = torch.tensor(seq)
        attn[i, : len(seq)] = 1
        lab[i, : len(seq)] = torch.tensor(lb)
        qi[i, : len(pos)] = torch.tensor(pos)
        qm[i, : len(pos)] = 1
    pixels = frames_to_pixels(np.stack([s.frames for s in samples]))  # (B, F, 3, S, S): samples hold model-sized frames
    boxes = torch.from_numpy(np.stack([s.boxes_cxcywh for s in samples]))
    box_mask = torch.from_numpy(np.stack([s.present if s.task != "vtg" else np.zeros_like(s.present) for s in samples]))
    presence = torch.from_numpy(np.stack([s.in_span & (s.present | (s.task == "vtg")) for s in samples])).float()
    return Batch(pixels, ids, attn, lab, qi, qm, boxes, box_mask, presence)
