"""The training sample stream, by global step: which samples of a step are this rank's micro-batch.

Step `s` draws one global batch (deterministic per (seed, s), whatever the world size); it is cut into
`world_size * grad_accum` contiguous parts, and rank r's micro-batch m is part `r * grad_accum + m`. A run
resumed with another world size or accumulation therefore continues the same stream at the same step.
Datasets here are map-style over steps: item `s` is the list of this rank's micro-batches of step s, built
(decoded, tokenised, collated) inside DataLoader workers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.training.data.collate import Batch, collate
from engine.model.config import PromptOrder


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world_size: int = 1
    grad_accum: int = 1

    @property
    def parts(self) -> int:
        return self.world_size * self.grad_accum

    def bounds(self, size: int, micro: int) -> tuple[int, int]:
        """[start, stop) of this rank's micro-batch `micro` within a global batch of `size` samples."""
        assert size >= self.parts, f"a global batch of {size} cannot feed {self.world_size} ranks x {self.grad_accum} micro-steps"
        p = self.rank * self.grad_accum + micro
        return p * size // self.parts, (p + 1) * size // self.parts


@dataclass(frozen=True)
class Collator:
    """Samples -> a `Batch` for the model (its tokenizer, prompt vocabulary and layout)."""

    vocab: object
    tokenizer: object
    tokens_per_frame: int
    order: PromptOrder = PromptOrder.VIDEO_FIRST

    def __call__(self, samples) -> Batch:
        return collate(samples, self.vocab, self.tokenizer, self.tokens_per_frame, self.order)


@dataclass(frozen=True)
class BadRecord:
    """What a worker hands back instead of a batch when a record cannot be used (the message names it)."""

    message: str


def _as_is(item):
    return item


def step_loader(dataset: torch.utils.data.Dataset, start: int, stop: int, workers: int) -> torch.utils.data.DataLoader:
    """Items `start .. stop-1` of a per-step dataset, in order, built by `workers` processes (0: in this one).
    Batches cross from the workers through torch's shared-memory queues; nothing is written to disk."""
    return torch.utils.data.DataLoader(dataset, batch_size=None, sampler=range(start, stop), num_workers=workers,
                                       collate_fn=_as_is, prefetch_factor=2 if workers else None)
