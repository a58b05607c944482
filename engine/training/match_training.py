"""`spacevllm train-match`: fit the match head (`engine.model.match_head`) on a frozen model's own groundings.

1. Collect: held-out-style 8 s clips (spec v1 scenes, their own seed streams, never the evaluation's), each with
   its caption, a plain negative, and per attribute (colour, shape, direction, size) a same-pixel swap and its
   reference (`engine.training.swaps.swap_pairs`). The frozen model grounds them all through one shared window prefix
   (the engine's path) and keeps the head's inputs. Written in shards of safetensors; an interrupted collection
   resumes at the next shard.
2. Fit: the head alone, binary cross-entropy, positives and negatives weighted equally, on the training clips.
3. Select and calibrate on a separate selection set (other clips): the epoch with the best balanced accuracy, and
   the threshold that keeps recall >= `min_recall` and rejects the most negatives.
4. Save: the model directory with the head, `score: match_head` and that threshold.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from engine.model.config import ScoreMode
from engine.model.match_head import MatchEvidence

log = logging.getLogger(__name__)

TRAIN_STREAM = 611953  # clips [seed, TRAIN_STREAM, i]; the selection set uses seed + 1, evaluation sets other streams
KINDS = ("positive", "plain", "colour", "shape", "direction", "size")  # what a row is: a match, or which negative


@dataclass(frozen=True)
class MatchTrainSettings:
    clips: int = 3000
    selection_clips: int = 400
    seed: int = 0
    seconds: float = 8.0
    shard: int = 100
    epochs: int = 60
    lr: float = 3e-3
    batch: int = 256
    weight_decay: float = 1e-4
    min_recall: float = 0.92
    balance_kinds: bool = True  # every kind of negative (plain, colour, shape, direction, size) weighs the same in the loss


def clip_rows(model, seed: int, i: int, seconds: float) -> list[tuple[dict[str, torch.Tensor], int, int]]:
    """(evidence, label, kind) rows of one clip: its caption and references (label 1), a plain negative and the
    swaps (label 0)."""
    from engine.training.data.formats import draw_clip
    from engine.training.data.synthetic import negative_caption
    from engine.training.evaluate import window_prefix
    from engine.training.swaps import clip_frames, swap_pairs

    rng = np.random.default_rng([seed, TRAIN_STREAM, i])
    spec = draw_clip(rng, seconds, negative_rate=0.0)
    labelled = {spec.caption: (1, 0)}
    for attribute, (reference, swapped) in swap_pairs(spec.scene, spec.target, spec.caption, rng).items():
        labelled.setdefault(reference, (1, 0))
        labelled.setdefault(swapped, (0, KINDS.index(attribute)))
    labelled.setdefault(negative_caption(spec.scene, rng), (0, KINDS.index("plain")))
    frames, ts = clip_frames(spec, model.config.max_frames, rng, None)
    captions = list(labelled)
    groundings = model.ground(window_prefix(model, frames, ts), captions, with_evidence=True)
    return [(g.evidence, *labelled[c]) for c, g in zip(captions, groundings)]


def _save_shard(rows, path: Path) -> None:
    length = max(len(r["word_ids"]) for r, _, _ in rows)
    words = torch.zeros(len(rows), length, dtype=torch.long)
    for k, (r, _, _) in enumerate(rows):
        words[k, : len(r["word_ids"])] = r["word_ids"]
    save_file({
        "appearance": torch.stack([r["appearance"] for r, _, _ in rows]).float().contiguous(),
        "colour": torch.stack([r["colour"] for r, _, _ in rows]).float().contiguous(),
        "trajectory": torch.stack([r["trajectory"] for r, _, _ in rows]).float().contiguous(),
        "scores": torch.stack([r["scores"] for r, _, _ in rows]).float().contiguous(),
        "word_ids": words,
        "word_len": torch.tensor([len(r["word_ids"]) for r, _, _ in rows]),
        "label": torch.tensor([lab for _, lab, _ in rows]),
        "kind": torch.tensor([kind for _, _, kind in rows]),
    }, str(path))


def collect(model, out: Path, name: str, seed: int, clips: int, seconds: float, shard: int) -> dict[str, torch.Tensor]:
    """Collect (or resume collecting) the evidence of `clips` clips into out/<name>-<k>.safetensors; all rows."""
    out.mkdir(parents=True, exist_ok=True)
    for start in tqdm(range(0, clips, shard), desc=f"collect {name}", dynamic_ncols=True):
        path = out / f"{name}-{start // shard:04d}.safetensors"
        if path.is_file():
            continue
        rows = [row for i in range(start, min(clips, start + shard)) for row in clip_rows(model, seed, i, seconds)]
        _save_shard(rows, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").rename(path)
    return read_rows(sorted(out.glob(f"{name}-*.safetensors"))[: (clips + shard - 1) // shard])


def read_rows(paths: list[Path]) -> dict[str, torch.Tensor]:
    parts = [load_file(str(p)) for p in paths]
    length = max(p["word_ids"].shape[1] for p in parts)
    out = {}
    for key in parts[0]:
        if key == "word_ids":
            out[key] = torch.cat([torch.nn.functional.pad(p[key], (0, length - p[key].shape[1])) for p in parts])
        else:
            out[key] = torch.cat([p[key] for p in parts])
    out["word_mask"] = (torch.arange(length)[None] < out["word_len"][:, None]).long()
    return out


def head_logits(model, rows: dict[str, torch.Tensor]) -> torch.Tensor:
    """The head's logits on collected rows, as the model computes them at inference."""
    return model.match_logits(MatchEvidence(rows["appearance"], rows["colour"], rows["trajectory"], rows["scores"],
                                            rows["word_ids"], rows["word_mask"]))


def threshold_for_recall(scores: np.ndarray, labels: np.ndarray, min_recall: float) -> float:
    """The highest threshold (score >= threshold is a match) that keeps recall >= min_recall."""
    pos = np.sort(scores[labels == 1])
    k = int(np.floor((1.0 - min_recall) * len(pos)))
    return float(pos[min(k, len(pos) - 1)])


def report(scores: np.ndarray, rows: dict[str, torch.Tensor], threshold: float) -> dict[str, float]:
    labels, kinds = rows["label"].numpy(), rows["kind"].numpy()
    out = {"recall": float(np.mean(scores[labels == 1] >= threshold))}
    for k, kind in enumerate(KINDS[1:], start=1):
        sel = (labels == 0) & (kinds == k)
        if sel.any():
            out[f"{kind}_rejected"] = float(np.mean(scores[sel] < threshold))
    out["negatives_rejected"] = float(np.mean(scores[labels == 0] < threshold))
    return out


def row_weights(rows: dict[str, torch.Tensor], balance_kinds: bool) -> torch.Tensor:
    """Loss weights (mean 1): positives and negatives weigh the same in total; with `balance_kinds`, so does each kind
    of negative (the rarer near misses, e.g. size swaps, count as much as plain negatives)."""
    labels, kinds = rows["label"], rows["kind"]
    w = torch.zeros(len(labels))
    pos = labels == 1
    w[pos] = 0.5 / pos.sum().clamp_min(1)
    neg_kinds = [k for k in range(1, len(KINDS)) if ((labels == 0) & (kinds == k)).any()]
    for k in neg_kinds:
        sel = (labels == 0) & (kinds == k)
        w[sel] = (0.5 / len(neg_kinds) / sel.sum()) if balance_kinds else (0.5 / (labels == 0).sum())
    return w * len(labels)


def fit(model, train: dict[str, torch.Tensor], selection: dict[str, torch.Tensor], s: MatchTrainSettings) -> dict:
    """Train the head in place; keeps the epoch with the best selection-set balanced accuracy at its threshold."""
    head = model.match_head
    for p in model.parameters():
        p.requires_grad_(False)
    for p in head.parameters():
        p.requires_grad_(True)
    head.fit_standardisation(train["colour"], train["trajectory"], train["scores"])
    torch.manual_seed(s.seed)
    opt = torch.optim.AdamW(head.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    labels = train["label"].float()
    weights = row_weights(train, s.balance_kinds)
    n = len(labels)
    best = {"balanced": -1.0}
    for epoch in range(s.epochs):
        head.train()
        order = torch.randperm(n)
        for at in range(0, n, s.batch):
            idx = order[at : at + s.batch]
            batch = {k: v[idx] for k, v in train.items()}
            logits = head_logits(model, batch)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels[idx], weight=weights[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        for group in opt.param_groups:  # cosine decay to 5%
            group["lr"] = s.lr * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * (epoch + 1) / s.epochs)))
        head.eval()
        with torch.no_grad():
            sel_scores = head_logits(model, selection).sigmoid().numpy()
        threshold = threshold_for_recall(sel_scores, selection["label"].numpy(), s.min_recall)
        r = report(sel_scores, selection, threshold)
        balanced = (r["recall"] + r["negatives_rejected"]) / 2
        if balanced > best["balanced"]:
            best = {"balanced": balanced, "epoch": epoch + 1, "threshold": threshold, "selection": r,
                    "state": {k: v.detach().clone() for k, v in head.state_dict().items()}}
        if epoch % 10 == 9:
            log.info("epoch %d: loss %.3f, selection %s", epoch + 1, loss.item(), {k: round(v, 3) for k, v in r.items()})
    head.load_state_dict(best.pop("state"))
    head.eval()
    return best


def train_match(model_dir: str | Path, out: str | Path, settings: MatchTrainSettings) -> dict:
    from engine.model.checkpoint import load_model, save_model

    t0 = time.monotonic()
    out = Path(out)
    model = load_model(model_dir)
    if model.config.score is ScoreMode.MATCH_HEAD:  # collect with the base score (the evidence does not depend on it)
        model.config = dataclasses.replace(model.config, score=ScoreMode.ANSWER_AND_PRESENCE)
    evidence = out / "evidence"
    train = collect(model, evidence, "train", settings.seed, settings.clips, settings.seconds, settings.shard)
    selection = collect(model, evidence, "selection", settings.seed + 1, settings.selection_clips, settings.seconds, settings.shard)
    t_collect = time.monotonic() - t0
    best = fit(model, train, selection, settings)
    model.config = dataclasses.replace(model.config, score=ScoreMode.MATCH_HEAD, default_threshold=round(best["threshold"], 4))
    save_model(model, out / "model")
    summary = {"settings": dataclasses.asdict(settings), "train_rows": int(len(train["label"])),
               "selection_rows": int(len(selection["label"])), "collect_s": round(t_collect, 1),
               "total_s": round(time.monotonic() - t0, 1), **best}
    (out / "match_training.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
