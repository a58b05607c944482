"""Train only the rows of our added prompt tokens in a base checkpoint's embedding and output matrices.

Our prompt tokens (`<img>`, `<st>`, time tokens, `none`/`from`/`to`) take rows
`[base_vocab, base_vocab + k)` of the LLM's input embedding and LM head; a LoRA or frozen-LLM run must
learn those rows and nothing else of the two big matrices. The wrappers hold the frozen matrix and a
trainable (k, D) parameter for the added rows, so gradients, the optimizer state and DDP's all-reduce
cover k rows rather than the whole vocabulary (152k rows for Qwen2-7B). The rows are saved as
`added_tokens.embed` / `added_tokens.lm_head` in the heads file, and `llava_onevision.py` copies them back
into plain matrices at load: inference never sees these wrappers.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class _AddedRows(nn.Module):
    """A frozen (V, D) matrix whose rows [base_vocab, base_vocab + k) come from the trainable `added` (k, D)."""

    def __init__(self, base: nn.Module, base_vocab: int, k: int) -> None:
        super().__init__()
        assert base_vocab + k <= base.weight.shape[0], "the matrix must already have rows for the added tokens"
        self.base = base.requires_grad_(False)
        self.base_vocab = base_vocab
        self.added = nn.Parameter(base.weight.detach()[base_vocab : base_vocab + k].clone().float())  # (k, D)

    @property
    def weight(self) -> torch.Tensor:  # the matrix the model would have with these rows written in (for saving and inspection)
        w = self.base.weight.detach().clone()
        w[self.base_vocab : self.base_vocab + self.added.shape[0]] = self.added.detach().to(w.dtype)
        return w


class AddedRowsEmbedding(_AddedRows):
    """An embedding whose added tokens' rows are trainable."""

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        k = self.added.shape[0]
        out = self.base(input_ids)  # (B, L, D)
        rel = input_ids - self.base_vocab
        is_added = (rel >= 0) & (rel < k)  # (B, L)
        rows = F.embedding(rel.clamp(0, k - 1), self.added)  # (B, L, D)
        return torch.where(is_added[..., None], rows.to(out.dtype), out)


class AddedRowsHead(_AddedRows):
    """An output projection (no bias) whose added tokens' rows are trainable."""

    def __init__(self, base: nn.Linear, base_vocab: int, k: int) -> None:
        assert base.bias is None, "LM heads have no bias"
        super().__init__(base, base_vocab, k)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        k = self.added.shape[0]
        logits = self.base(hidden)  # (..., V)
        # written over the base's columns in place: a linear layer's backward does not read its output, and a
        # concatenation would make a second (..., V) tensor on every step (V = 152k for Qwen2-7B)
        logits[..., self.base_vocab : self.base_vocab + k] = F.linear(hidden, self.added.to(hidden.dtype)).to(logits.dtype)
        return logits


def train_added_rows(llm: nn.Module, base_vocab: int, k: int) -> None:
    """Replace `llm`'s input embedding and LM head by the wrappers above (in place)."""
    llm.set_input_embeddings(AddedRowsEmbedding(llm.get_input_embeddings(), base_vocab, k))
    llm.set_output_embeddings(AddedRowsHead(llm.get_output_embeddings(), base_vocab, k))

