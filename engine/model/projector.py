"""Projector (2-layer MLP with GELU) and 2x2 bilinear pooling of the patch grid (LLaVA-Video)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Projector(nn.Module):
    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, hidden)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


def pool_grid(tokens: torch.Tensor, grid: int, pooled: int) -> torch.Tensor:
    """Bilinear pooling of a square token grid: (N, grid*grid, D) -> (N, pooled*pooled, D).

    Row-major token order is kept, so token k of the result sits at row k // pooled, column k % pooled.
    """
    n, t, d = tokens.shape
    assert t == grid * grid, f"expected {grid * grid} tokens, got {t}"
    x = tokens.transpose(1, 2).reshape(n, d, grid, grid)  # (N, D, g, g)
    x = F.interpolate(x, size=(pooled, pooled), mode="bilinear", align_corners=False)
    return x.flatten(2).transpose(1, 2)  # (N, p*p, D)


def token_centres(pooled: int) -> torch.Tensor:
    """Normalised (cx, cy) of each pooled token's cell, row-major: (pooled*pooled, 2)."""
    c = (torch.arange(pooled, dtype=torch.float32) + 0.5) / pooled
    cy, cx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([cx.flatten(), cy.flatten()], dim=-1)
