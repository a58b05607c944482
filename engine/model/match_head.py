"""The match decision: does the caption name what the model found?

The LLM's first answer token says `none` or a span, but on its own it barely reads colour, shape and
direction words (a caption and its near miss score alike). The match head decides from the evidence the
model has already computed for the answer's span, read against each caption word:

- appearance: the frame tokens under the space decoder's box, averaged over the span frames (weighted by
  the decoder's per-frame presence), their contrast with the frame's mean token, and the span's mean
  spatio-temporal query state (what the LLM made of those frames);
- colour: the frames' mean colour under the box (from the pixels the encoder read, pooled to a 16 x 16 grid),
  the frame's mean colour, their difference, and the box's chromaticity (r, g, b over their sum: steadier under
  lighting than the values): what colour words refer to, which the 64-px tiny encoder's tokens hold only weakly;
- trajectory: the box's velocity over the span (a presence-weighted least-squares fit of its centre against
  time), its displacement, speed, size and the span's length: what "moving left" or "small" refer to; and the
  velocity of the largest set of span frames whose boxes lie on one straight constant-speed path, with that set's
  share (the decoder's box jumps to another object on some frames: a fit over all of them then points nowhere);
- scores: the answer's 1 - P(`none`), the decoder's best and mean presence in the span.

Each word of the question asks its own question of the appearance, the colour and the trajectory: its queries are
a linear map of its embedding in the LLM's table plus a row of the head's own word table (the tiny LLM's
embeddings of "left" and "right" are too alike for a linear map to tell them apart); a soft minimum over the words requires all of them to agree (a near miss changes one word),
and the scores add their say. The head is small and trained on frozen model outputs
(`engine.training.match_training`); it runs only when `config.score` is `match_head`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

TRAJECTORY_FEATURES = 15
SCORE_FEATURES = 5
COLOUR_FEATURES = 12
COLOUR_GRID = 16  # cells per side of the colour grid a prefix keeps per frame
WORD_BUCKETS = 4096  # the head's own word table: token id modulo this (exact for the tiny vocabulary)
_EPS = 1e-6


@dataclass(frozen=True)
class MatchEvidence:
    """What N groundings found, as the match head reads it (one row per question)."""

    appearance: torch.Tensor  # (N, 3D): mean token under the box, its contrast with the frame's mean token, mean STQ state
    colour: torch.Tensor  # (N, COLOUR_FEATURES)
    trajectory: torch.Tensor  # (N, TRAJECTORY_FEATURES)
    scores: torch.Tensor  # (N, SCORE_FEATURES)
    word_ids: torch.Tensor  # (N, Lq) question token ids
    word_mask: torch.Tensor  # (N, Lq)

    def row(self, i: int) -> dict[str, torch.Tensor]:
        """Row i as a dict of host tensors (unpadded words), for saving as safetensors."""
        m = self.word_mask[i].bool()
        return {"appearance": self.appearance[i].cpu(), "colour": self.colour[i].cpu(), "trajectory": self.trajectory[i].cpu(),
                "scores": self.scores[i].cpu(), "word_ids": self.word_ids[i][m].cpu()}


def colour_grid(pixels: torch.Tensor, grid: int = COLOUR_GRID) -> torch.Tensor:
    """(N, 3, H, W) pixels in [0, 1] -> (N, grid*grid, 3) mean colour per cell (row-major), float32."""
    pooled = torch.nn.functional.adaptive_avg_pool2d(pixels.float(), grid)  # (N, 3, grid, grid)
    return pooled.flatten(2).transpose(1, 2).contiguous()


def box_masks(boxes_cxcywh: torch.Tensor, grid: int, sharpness: float = 8.0) -> torch.Tensor:
    """(..., 4) normalised boxes -> (..., grid*grid) soft masks over the token grid, each summing to 1.

    A cell counts by how far its centre lies inside the box (a sigmoid edge a quarter cell wide); a box smaller
    than a cell counts as one cell wide, so it still weighs the cells nearest its centre."""
    c = (torch.arange(grid, dtype=boxes_cxcywh.dtype, device=boxes_cxcywh.device) + 0.5) / grid
    cx, cy, w, h = boxes_cxcywh.unbind(-1)
    k = sharpness * grid
    half_w = (w[..., None] / 2).clamp_min(0.5 / grid)
    half_h = (h[..., None] / 2).clamp_min(0.5 / grid)
    mx = torch.sigmoid((half_w - (c - cx[..., None]).abs()) * k)  # (..., grid)
    my = torch.sigmoid((half_h - (c - cy[..., None]).abs()) * k)
    m = (my[..., :, None] * mx[..., None, :]).flatten(-2)  # (..., grid*grid), row-major like the token grid
    return m / m.sum(-1, keepdim=True).clamp_min(_EPS)


def trajectory_features(boxes_cxcywh: torch.Tensor, weights: torch.Tensor, times_s: torch.Tensor,
                        window_s: torch.Tensor) -> torch.Tensor:
    """Per row, the box's motion over the weighted frames. boxes (N, F, 4), weights (N, F) summing to 1 over
    the span frames (0 elsewhere), times (N, F) seconds, window_s (N,) the window's length.

    Features: velocity x, y (image widths/heights per second; image y grows downwards), speed, displacement
    x, y over the span, mean width, height, log area, span length (s), span share of the window, the
    fraction of the window's frames the span holds, and the consensus path's velocity x, y, speed and the share of
    the weight on it (`consensus_velocity`)."""
    cx, cy, w, h = boxes_cxcywh.unbind(-1)
    tm = (weights * times_s).sum(1, keepdim=True)
    dt = times_s - tm
    var = (weights * dt * dt).sum(1).clamp_min(1e-3)
    vx = (weights * dt * (cx - (weights * cx).sum(1, keepdim=True))).sum(1) / var
    vy = (weights * dt * (cy - (weights * cy).sum(1, keepdim=True))).sum(1) / var
    span = weights > 0
    t_first = torch.where(span, times_s, torch.full_like(times_s, float("inf"))).amin(1)
    t_last = torch.where(span, times_s, torch.full_like(times_s, float("-inf"))).amax(1)
    duration = torch.where(span.any(1), t_last - t_first, torch.zeros_like(t_first))
    mw, mh = (weights * w).sum(1), (weights * h).sum(1)
    frames_share = span.float().mean(1)
    cvx, cvy, share = consensus_velocity(boxes_cxcywh, weights, times_s)
    return torch.stack([vx, vy, torch.sqrt(vx * vx + vy * vy), vx * duration, vy * duration, mw, mh,
                        torch.log(mw * mh + 1e-4), duration, duration / window_s.clamp_min(1e-3), frames_share,
                        cvx, cvy, torch.sqrt(cvx * cvx + cvy * cvy), share], dim=1)


def consensus_velocity(boxes_cxcywh: torch.Tensor, weights: torch.Tensor, times_s: torch.Tensor,
                       tolerance: float = 0.03) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row, the velocity (vx, vy) of the straight constant-speed path through the box centres that the most
    weight agrees with (centres within `tolerance` of it), and that weight's share. Candidates: the path through
    every pair of weighted frames; the winner is refitted by least squares on its inliers. boxes (N, F, 4), weights
    (N, F) (0 off the span), times (N, F)."""
    c = boxes_cxcywh[..., :2]  # (N, F, 2)
    n, f = weights.shape
    i, j = torch.triu_indices(f, f, offset=1, device=c.device)  # candidate pairs
    dt = (times_s[:, j] - times_s[:, i]).clamp_min(1e-3)  # (N, P)
    v = (c[:, j] - c[:, i]) / dt[..., None]  # (N, P, 2)
    pred = c[:, i, None] + v[:, :, None] * (times_s[:, None, :] - times_s[:, i, None])[..., None]  # (N, P, F, 2)
    inlier = ((pred - c[:, None]).abs().amax(-1) < tolerance) & (weights[:, None] > 0)  # (N, P, F)
    valid = (weights[:, i] > 0) & (weights[:, j] > 0)  # (N, P)
    support = (inlier.float() * weights[:, None]).sum(-1).masked_fill(~valid, -1.0)  # (N, P)
    best = support.argmax(1)
    w = inlier[torch.arange(n, device=c.device), best].float() * weights  # (N, F) inliers of the best path
    w = torch.where(valid.any(1, keepdim=True), w, weights)  # fewer than 2 frames: all of them
    share = w.sum(1) / weights.sum(1).clamp_min(_EPS)
    w = w / w.sum(1, keepdim=True).clamp_min(_EPS)
    tm = (w * times_s).sum(1, keepdim=True)
    var = (w * (times_s - tm) ** 2).sum(1).clamp_min(1e-3)
    vx = (w * (times_s - tm) * (c[..., 0] - (w * c[..., 0]).sum(1, keepdim=True))).sum(1) / var
    vy = (w * (times_s - tm) * (c[..., 1] - (w * c[..., 1]).sum(1, keepdim=True))).sum(1) / var
    return vx, vy, share


def _logit(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-4, 1 - 1e-4)
    return torch.log(p) - torch.log1p(-p)


def gather_evidence(frame_tokens: torch.Tensor, stq_states: torch.Tensor, colours: torch.Tensor, row_window: list[int], frames: list[tuple[int, ...]],
                    boxes_cxcywh: torch.Tensor, presence: torch.Tensor, timestamps_s, answer_score: torch.Tensor,
                    word_ids: torch.Tensor, word_mask: torch.Tensor) -> MatchEvidence:
    """The evidence of N groundings. frame_tokens (W, F, G, D) on a square grid, stq_states (W, F, D), colours
    (W, F, C, 3) (`colour_grid`); row i reads window
    row_window[i]; frames[i] its span's frame indices; boxes (N, F, 4) and presence (N, F) as decoded (zeros off
    the span); timestamps_s: W tuples; answer_score (N,). Float32 on the frame tokens' device."""
    n, f = presence.shape
    grid = int(round(frame_tokens.shape[2] ** 0.5))
    dev = frame_tokens.device  # computed where the model runs, in float32
    boxes_cxcywh, presence = boxes_cxcywh.to(dev, torch.float32), presence.to(dev, torch.float32)
    answer_score = answer_score.to(dev, torch.float32)
    span = torch.zeros(n, f, dtype=torch.bool)
    for i, idx in enumerate(frames):
        span[i, list(idx)] = True
    span = span.to(dev)
    raw = (presence + 0.02) * span  # every span frame counts a little, present ones most
    weights = raw / raw.sum(1, keepdim=True).clamp_min(_EPS)
    rows = torch.as_tensor(row_window, device=frame_tokens.device)
    tokens = frame_tokens[rows].float()  # (N, F, G, D)
    masks = box_masks(boxes_cxcywh, grid)  # (N, F, G)
    under_box = torch.einsum("nfg,nfgd->nfd", masks, tokens)
    frame_mean = tokens.mean(2)
    obj = torch.einsum("nf,nfd->nd", weights, under_box)
    bg = torch.einsum("nf,nfd->nd", weights, frame_mean)
    stq = torch.einsum("nf,nfd->nd", weights, stq_states[rows].float())
    cells = colours[rows.to(colours.device)].to(dev, torch.float32)  # (N, F, C, 3)
    colour_masks = box_masks(boxes_cxcywh, int(round(cells.shape[2] ** 0.5)))  # (N, F, C)
    rgb = torch.einsum("nf,nfc,nfck->nk", weights, colour_masks, cells)
    rgb_frame = torch.einsum("nf,nfck->nk", weights, cells) / cells.shape[2]
    colour = torch.cat([rgb, rgb_frame, rgb - rgb_frame, rgb / rgb.sum(1, keepdim=True).clamp_min(1e-3)], dim=1)
    times = torch.tensor([timestamps_s[w] for w in row_window], dtype=torch.float32, device=dev)
    step = (times[:, -1] - times[:, 0]) / max(f - 1, 1)
    trajectory = trajectory_features(boxes_cxcywh, weights, times, times[:, -1] - times[:, 0] + step)
    in_span = presence.masked_fill(~span, 0.0)
    scores = torch.stack([
        _logit(answer_score.to(presence.dtype)),
        _logit(in_span.amax(1)),
        (weights * presence).sum(1),
        ((presence > 0.5) & span).float().sum(1) / span.float().sum(1).clamp_min(1.0),
        span.float().sum(1) / f,
    ], dim=1)
    return MatchEvidence(torch.cat([obj, obj - bg, stq], dim=1), colour, trajectory, scores, word_ids.to(dev), word_mask.to(dev))


class MatchHead(nn.Module):
    """Evidence + caption words -> match logit (see the module docstring)."""

    def __init__(self, hidden: int, width: int = 32) -> None:
        super().__init__()
        self.width = width
        self.own_words = nn.Embedding(WORD_BUCKETS, 3 * width + 1)
        nn.init.zeros_(self.own_words.weight)
        self.appearance = nn.Sequential(nn.LayerNorm(3 * hidden), nn.Linear(3 * hidden, 64), nn.GELU(), nn.Linear(64, width))
        self.colour = nn.Sequential(nn.Linear(COLOUR_FEATURES, 32), nn.GELU(), nn.Linear(32, width))
        self.trajectory = nn.Sequential(nn.Linear(TRAJECTORY_FEATURES, 32), nn.GELU(), nn.Linear(32, width))
        self.scores = nn.Sequential(nn.Linear(SCORE_FEATURES, 16), nn.GELU(), nn.Linear(16, 1))
        self.words = nn.Linear(hidden, 3 * width + 1)  # per word: a query of the appearance, colour, trajectory; a bias
        self.log_temperature = nn.Parameter(torch.zeros(()))
        # feature standardisation, fitted on the training evidence (identity until then)
        self.register_buffer("colour_mean", torch.zeros(COLOUR_FEATURES))
        self.register_buffer("colour_std", torch.ones(COLOUR_FEATURES))
        self.register_buffer("trajectory_mean", torch.zeros(TRAJECTORY_FEATURES))
        self.register_buffer("trajectory_std", torch.ones(TRAJECTORY_FEATURES))
        self.register_buffer("scores_mean", torch.zeros(SCORE_FEATURES))
        self.register_buffer("scores_std", torch.ones(SCORE_FEATURES))

    def fit_standardisation(self, colour: torch.Tensor, trajectory: torch.Tensor, scores: torch.Tensor) -> None:
        with torch.no_grad():
            self.colour_mean.copy_(colour.mean(0))
            self.colour_std.copy_(colour.std(0).clamp_min(1e-3))
            self.trajectory_mean.copy_(trajectory.mean(0))
            self.trajectory_std.copy_(trajectory.std(0).clamp_min(1e-3))
            self.scores_mean.copy_(scores.mean(0))
            self.scores_std.copy_(scores.std(0).clamp_min(1e-3))

    def forward(self, appearance: torch.Tensor, colour: torch.Tensor, trajectory: torch.Tensor, scores: torch.Tensor,
                word_embeddings: torch.Tensor, word_ids: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        """(N, 3D), (N, COLOUR_FEATURES), (N, T), (N, S), (N, L, D), (N, L) ids, (N, L) -> (N,) logits."""
        za = self.appearance(appearance)  # (N, K)
        zc = self.colour((colour - self.colour_mean) / self.colour_std)
        zt = self.trajectory((trajectory - self.trajectory_mean) / self.trajectory_std)
        q = self.words(word_embeddings) + self.own_words(word_ids % WORD_BUCKETS)  # (N, L, 3K+1)
        k = self.width
        agree = ((q[..., :k] * za[:, None]).sum(-1) + (q[..., k : 2 * k] * zc[:, None]).sum(-1)
                 + (q[..., 2 * k : 3 * k] * zt[:, None]).sum(-1) + q[..., -1])  # (N, L)
        agree = agree * k ** -0.5
        tau = self.log_temperature.exp()
        agree = agree.masked_fill(word_mask == 0, 1e4)  # padding never the minimum (finite: no inf * 0 in the gradient)
        soft_min = -tau * torch.logsumexp(-agree / tau, dim=1)  # every word must agree
        return soft_min + self.scores((scores - self.scores_mean) / self.scores_std).squeeze(-1)
