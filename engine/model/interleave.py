"""STQ interleaving: build prompt ids with placeholders, then splice features into the embeddings.

Each frame contributes its timestamp token, P placeholder `<img>` tokens and one `<st>`
query token. Frame features and STQ embeddings replace the placeholders by one masked
scatter each, after a count check.
"""
from __future__ import annotations

import torch

from engine.model.tokenizer import PromptVocab, TASK_PREFIX


def video_prefix_ids(vocab: PromptVocab, tok, timestamps_s: list[float], tokens_per_frame: int) -> list[int]:
    """`<video> [t_0] <img>*P <st> [t_1] <img>*P <st> ...` for a clip; a single image when timestamps is empty."""
    if not timestamps_s:
        return [vocab.image] + [vocab.img] * tokens_per_frame + [vocab.st_img]
    ids = [vocab.video]
    for ts in timestamps_s:
        ids.append(vocab.time_id(ts))
        ids.extend([vocab.img] * tokens_per_frame)
        ids.append(vocab.st)
    return ids


def question_ids(vocab: PromptVocab, tok, task: str, caption: str) -> list[int]:
    """`<q> {task words} {caption} <a>`: the tokens the space decoder reads as the question."""
    words = tok.encode(f"{TASK_PREFIX[task]} {caption}").ids
    return [vocab.question, *words, vocab.answer]


def answer_ids(vocab: PromptVocab, tok, span_s: tuple[float, float] | None) -> list[int]:
    if span_s is None:
        return [vocab.none, vocab.eos]
    s, e = span_s
    return [vocab.from_, vocab.time_id(s), vocab.to, vocab.time_id(e), vocab.eos]


def splice(
    embeds: torch.Tensor,  # (B, L, D) token embeddings with placeholders
    input_ids: torch.Tensor,  # (B, L)
    placeholder_id: int,
    features: torch.Tensor,  # (K, D): K must equal the number of placeholders
    what: str,
) -> torch.Tensor:
    """Replace every `placeholder_id` position of `embeds` by the rows of `features`, in order."""
    mask = input_ids == placeholder_id  # (B, L)
    n_slots = int(mask.sum())
    n_feat = features.shape[0]
    if n_slots != n_feat:
        raise ValueError(f"{what}: the prompt has {n_slots} placeholder tokens but {n_feat} features were given")
    return embeds.masked_scatter(mask[..., None].expand_as(embeds), features.to(embeds.dtype))
