"""Query-Guided Space Decoder: a frame's STQ state -> one box, conditioned on the question.

(a) the frame's visual tokens cross-attend to the question's hidden states (text-enhanced
visual tokens); (b) the frame's STQ cross-attends to those; (c) an MLP outputs
(cx, cy, w, h) in [0, 1]. With the video before the question, the STQs never see the
question, so all query conditioning happens here; two additions make it learn fast:
a per-token target heatmap over the text-enhanced visual tokens (its soft-argmax is the
reference centre the MLP refines, DETR-style; it adds a direct bilinear match between the
pooled question and each token) and a per-frame presence logit (from the STQ, the
heatmap's glimpse and the best match). `grid` is the frame-token grid the decoder reads:
the LLM's pooled grid, or the encoder's full grid (`decoder.full_grid`) for finer boxes.
No data-dependent Python control flow: the module exports to ONNX with dynamic frames
and question length.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.model.projector import token_centres


@dataclass(frozen=True)
class SpaceDecoderOutput:
    boxes_cxcywh: torch.Tensor  # (B, F, 4) normalised to [0, 1]
    presence_logits: torch.Tensor  # (B, F)
    heatmap_logits: torch.Tensor  # (B, F, P)


class CrossAttention(nn.Module):
    """Multi-head cross-attention with an additive key mask (explicit matmuls export cleanly)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        assert width % heads == 0, "decoder width must be divisible by heads"
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, key_bias: torch.Tensor | None = None) -> torch.Tensor:
        b, n, w = x.shape
        m = ctx.shape[1]
        h = self.heads
        q = self.q(x).reshape(b, n, h, w // h).transpose(1, 2)  # (B, h, n, w/h)
        k, v = self.kv(ctx).reshape(b, m, 2, h, w // h).permute(2, 0, 3, 1, 4)  # 2 x (B, h, m, w/h)
        att = (q @ k.transpose(-1, -2)) * (w // h) ** -0.5  # (B, h, n, m)
        if key_bias is not None:
            att = att + key_bias[:, None, None, :]
        att = att.softmax(dim=-1)
        return self.out((att @ v).transpose(1, 2).reshape(b, n, w))


class FeedForward(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class DecoderLayer(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm_v = nn.LayerNorm(width)
        self.vis_to_text = CrossAttention(width, heads)  # (a)
        self.ff_v = FeedForward(width)
        self.norm_s = nn.LayerNorm(width)
        self.stq_to_vis = CrossAttention(width, heads)  # (b)
        self.ff_s = FeedForward(width)

    def forward(self, stq, vis, text, text_bias, frames: int):
        bf, p, w = vis.shape  # (B*F, P, W)
        b = bf // frames
        # (a) every frame's visual tokens read the question: (B, F*P, W) against (B, L, W)
        v = vis.reshape(b, frames * p, w)
        v = v + self.vis_to_text(self.norm_v(v), text, text_bias)
        vis = self.ff_v(v).reshape(bf, p, w)
        # (b) each STQ reads its own frame's text-enhanced tokens: (B*F, 1, W) against (B*F, P, W)
        stq = stq + self.stq_to_vis(self.norm_s(stq), vis)
        return self.ff_s(stq), vis


class SpaceDecoder(nn.Module):
    def __init__(self, hidden: int, width: int, num_layers: int, heads: int, grid: int) -> None:
        super().__init__()
        p = grid * grid
        self.in_stq = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, width))
        self.in_vis = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, width))
        self.in_text = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, width))
        self.vis_pos = nn.Parameter(torch.randn(p, width) * 0.02)
        self.film = nn.Linear(width, 2 * width)  # pooled question -> scale, shift of visual tokens
        self.layers = nn.ModuleList(DecoderLayer(width, heads) for _ in range(num_layers))
        self.heat = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 1))
        # direct query-to-token match: the question's "what" against each token (a bilinear score is the
        # quickest thing to learn for binding colour and shape words to pixels)
        self.match_q = nn.Linear(width, width)
        self.match_k = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width))
        self.presence = nn.Sequential(nn.LayerNorm(2 * width), nn.Linear(2 * width, 1))
        self.presence_match = nn.Parameter(torch.ones(()))  # weight of the best token match in presence
        self.box = nn.Sequential(nn.LayerNorm(2 * width), nn.Linear(2 * width, width), nn.GELU(), nn.Linear(width, 4))
        self.register_buffer("centres", token_centres(grid), persistent=False)  # (P, 2)

    def forward(
        self,
        stq_states: torch.Tensor,  # (B, F, D) last-layer hidden states of the frames' STQs
        visual_tokens: torch.Tensor,  # (B, F, P, D) the frames' projected visual tokens
        question_states: torch.Tensor,  # (B, L, D) last-layer hidden states of the question tokens
        question_mask: torch.Tensor,  # (B, L) 1 for real tokens, 0 for padding
    ) -> SpaceDecoderOutput:
        b, f, p, _ = visual_tokens.shape
        text = self.in_text(question_states)  # (B, L, W)
        mask = question_mask.to(text.dtype)
        text_bias = (1.0 - mask) * -1e4  # (B, L)
        pooled = (text * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)  # (B, W)
        scale, shift = self.film(pooled).chunk(2, dim=-1)  # 2 x (B, W)
        vis = self.in_vis(visual_tokens) + self.vis_pos  # (B, F, P, W)
        vis = vis * (1 + scale[:, None, None, :]) + shift[:, None, None, :]
        vis = vis.reshape(b * f, p, -1)  # (B*F, P, W)
        stq = (self.in_stq(stq_states) + pooled[:, None, :]).reshape(b * f, 1, -1)  # (B*F, 1, W)
        for layer in self.layers:
            stq, vis = layer(stq, vis, text, text_bias, f)
        w = vis.shape[-1]
        q = self.match_q(pooled)[:, None, :].expand(-1, f, -1).reshape(b * f, w, 1)  # (B*F, W, 1)
        match = (self.match_k(vis) @ q).reshape(b, f, p) * w**-0.5  # (B, F, P)
        heat = self.heat(vis).reshape(b, f, p) + match  # (B, F, P)
        ref = heat.softmax(-1) @ self.centres  # (B, F, 2) soft-argmax of the heatmap
        glimpse = (heat.softmax(-1).reshape(b * f, 1, p) @ vis).reshape(b, f, -1)  # (B, F, W)
        stq = stq.reshape(b, f, -1)
        both = torch.cat([stq, glimpse], dim=-1)  # (B, F, 2W)
        delta = self.box(both)  # (B, F, 4)
        ref = ref.clamp(1e-4, 1 - 1e-4)
        centre = torch.sigmoid(torch.log(ref / (1 - ref)) + delta[..., :2])
        size = torch.sigmoid(delta[..., 2:])
        return SpaceDecoderOutput(
            boxes_cxcywh=torch.cat([centre, size], dim=-1),
            presence_logits=self.presence(both).squeeze(-1) + self.presence_match * match.amax(-1),
            heatmap_logits=heat,
        )


def build_space_decoder(hidden: int, cfg, grid: int) -> SpaceDecoder:
    """`grid`: side of the frame-token grid the decoder reads (`SpaceVLLMConfig.frame_grid`)."""
    return SpaceDecoder(hidden, cfg.width, cfg.num_layers, cfg.num_heads, grid)
