"""Training criterion: LM cross-entropy on the answer (soft targets over neighbouring time
tokens), L1 + GIoU on frames inside the ground-truth span (teacher-forced), plus the
auxiliary per-frame presence and target-cell heatmap losses; optionally a box-motion term (the
box's change between consecutive span frames against the truth's: a box that jumps to another object for one
frame pays twice) and extra weight on the answer's time tokens."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from engine.model.boxes import cxcywh_to_xyxy, giou_xyxy
from engine.model.config import LossConfig
from engine.model.projector import token_centres


@dataclass(frozen=True)
class LossTerms:
    total: torch.Tensor
    lm: torch.Tensor
    l1: torch.Tensor
    giou: torch.Tensor
    presence: torch.Tensor
    heatmap: torch.Tensor
    answer_presence: torch.Tensor
    box_motion: torch.Tensor

    NAMES = ("total", "lm", "l1", "giou", "presence", "heatmap", "answer_presence", "box_motion")

    def as_tensor(self) -> torch.Tensor:
        """(len(NAMES),) the terms, detached, where they were computed (no host sync)."""
        return torch.stack([getattr(self, k).detach().float() for k in self.NAMES])


class SpaceVLLMCriterion(nn.Module):
    def __init__(self, cfg: LossConfig, time_ids: tuple[int, ...], vocab_size: int, grid: int) -> None:
        super().__init__()
        self.cfg = cfg
        # soft target rows for time tokens: row k is a Gaussian (sigma in 0.1 s steps) over time ids
        k = torch.arange(len(time_ids), dtype=torch.float32)
        sigma = max(cfg.time_sigma_s * 10, 1e-3)
        soft = torch.exp(-0.5 * ((k[:, None] - k[None]) / sigma) ** 2)
        soft = soft / soft.sum(-1, keepdim=True)  # (K, K)
        self.register_buffer("time_ids", torch.tensor(time_ids), persistent=False)
        self.register_buffer("soft_time", soft, persistent=False)
        lookup = torch.full((vocab_size,), -1, dtype=torch.long)
        lookup[torch.tensor(time_ids)] = torch.arange(len(time_ids))
        self.register_buffer("time_index", lookup, persistent=False)
        self.register_buffer("centres", token_centres(grid), persistent=False)

    def forward(self, logits, labels, decoder, gt_boxes_cxcywh, box_mask, presence_target, answer_presence_logits=None) -> LossTerms:
        """logits (B, L, V); labels (B, L) with -100 off the answer; decoder outputs for (B, F);
        gt_boxes_cxcywh (B, F, 4); box_mask (B, F) bool: frames inside the ground-truth span that carry
        a box (none for negatives and for VTG, which has spans only); presence_target (B, F) in {0, 1}:
        the frame lies inside the ground-truth span (all 0 for negatives); answer_presence_logits (B, F): the
        model's training probe on the answer position (`SpaceVLLMOutput.answer_presence_logits`)."""
        # LM: predict token t+1 from position t
        shift_logits = logits[:, :-1].flatten(0, 1)  # (B*(L-1), V)
        shift_labels = labels[:, 1:].flatten()
        keep = shift_labels != -100
        lp = shift_logits[keep].log_softmax(-1)
        tgt = shift_labels[keep]
        target = F.one_hot(tgt, lp.shape[-1]).to(lp.dtype)
        t_idx = self.time_index[tgt]
        is_time = t_idx >= 0
        if is_time.any():
            soft = torch.zeros_like(target[is_time])
            soft[:, self.time_ids] = self.soft_time[t_idx[is_time]]
            target[is_time] = soft
        per_token = -(target * lp).sum(-1)  # (K,)
        # the first answer token decides `none` or a match: optionally weigh it more
        rows = torch.nonzero(labels[:, 1:] != -100)[:, 0]  # (K,) sample of each answer token, in order
        first = torch.ones_like(rows, dtype=torch.bool)
        first[1:] = rows[1:] != rows[:-1]
        weight = 1.0 + self.cfg.first_answer_token * first.to(per_token.dtype) + self.cfg.time_tokens * is_time.to(per_token.dtype)
        lm = (weight * per_token).sum() / weight.sum()

        pred = decoder.boxes_cxcywh  # (B, F, 4)
        m = box_mask
        if m.any():
            p, g = pred[m], gt_boxes_cxcywh[m]  # (K, 4)
            l1 = (p - g).abs().sum(-1).mean()
            giou = (1 - giou_xyxy(cxcywh_to_xyxy(p), cxcywh_to_xyxy(g))).mean()
            # heatmap: soft target over the cells near the true centre
            d2 = ((self.centres[None] - g[:, None, :2]) ** 2).sum(-1)  # (K, P)
            cell = 1.0 / (2 * len(self.centres) ** 0.5)
            heat_t = torch.softmax(-d2 / (2 * cell**2), dim=-1)
            heat = -(heat_t * decoder.heatmap_logits[m].log_softmax(-1)).sum(-1).mean()
        else:
            zero = pred.sum() * 0
            l1 = giou = heat = zero
        pairs = m[:, 1:] & m[:, :-1]  # consecutive frames that both carry a box
        if self.cfg.box_motion and pairs.any():
            motion = ((pred[:, 1:] - pred[:, :-1]) - (gt_boxes_cxcywh[:, 1:] - gt_boxes_cxcywh[:, :-1]))[pairs]
            box_motion = motion.abs().sum(-1).mean()
        else:
            box_motion = pred.sum() * 0
        in_frame = presence_target.to(pred.dtype)
        presence = F.binary_cross_entropy_with_logits(decoder.presence_logits, in_frame)
        if answer_presence_logits is not None:
            answer_presence = F.binary_cross_entropy_with_logits(answer_presence_logits, in_frame)
        else:
            answer_presence = presence * 0
        c = self.cfg
        total = (c.lm * lm + c.l1 * l1 + c.giou * giou + c.presence * presence + c.heatmap * heat
                 + c.answer_presence * answer_presence + c.box_motion * box_motion)
        return LossTerms(total, lm, l1, giou, presence, heat, answer_presence, box_motion)
