"""Training on synthetic Uni-STG samples: `spacevllm train --config ... --out DIR [--resume]`.

Batches are generated on the fly by a thread pool (deterministic per (seed, batch index)),
so a resumed run continues the exact sample stream. Checkpoints are safetensors only:
`model.safetensors` + `config.json` + `tokenizer.json`, and `train_state.safetensors` /
`train_state.json` (optimizer moments, step) for `--resume`.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from engine.data.collate import Batch, collate
from engine.data.synthetic import make_pair, make_sample
from engine.model.checkpoint import load_model, save_model
from engine.model.config import ScoreMode, SpaceVLLMConfig
from engine.model.losses import SpaceVLLMCriterion
from engine.model.spacevllm import SpaceVLLM, build_spacevllm
from engine.model.tokenizer import train_tokenizer

log = logging.getLogger(__name__)

EVAL_SEED_OFFSET = 10_000_000  # held-out samples never collide with training seeds


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 6000
    batch_size: int = 16
    lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 0.01
    seed: int = 0
    frames: int = 16
    task_mix: tuple[float, float, float] = (0.45, 0.15, 0.4)  # stvg, vtg, rec
    rec_batch_size: int = 64  # single images are ~16x cheaper than clips: bigger batches teach the visual words fast
    negative_rate: float = 0.3
    pair_rate: float = 0.0  # share of each batch made of contrastive pairs (`make_pair`)
    checkpoint_every: int = 250
    eval_samples: int = 64
    calibration_samples: int = 300
    max_minutes: float = 0.0  # stop (with a checkpoint) after this many minutes; 0 = no limit
    workers: int = 1


def batch_samples(settings: TrainSettings, index: int, size: int, image_size: int = 64):
    rng = np.random.default_rng([settings.seed, index])
    task = ("stvg", "vtg", "rec")[int(rng.choice(3, p=np.asarray(settings.task_mix) / sum(settings.task_mix)))]
    if task == "rec":
        size = settings.rec_batch_size
    pairs = int(round(size * settings.pair_rate / 2))
    seeds = [int(x) for x in rng.integers(0, EVAL_SEED_OFFSET, size - pairs)]
    samples = [x for s in seeds[:pairs] for x in make_pair(s, task, frames=settings.frames, size=image_size)]
    return samples + [make_sample(s, task, frames=settings.frames, size=image_size, negative_rate=settings.negative_rate)
                      for s in seeds[pairs:]]


def lr_at(step: int, s: TrainSettings) -> float:
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    progress = min(1.0, (step - s.warmup) / max(1, s.steps - s.warmup))
    return s.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def save_train_state(out: Path, model: SpaceVLLM, opt: torch.optim.Optimizer, step: int, settings: TrainSettings, elapsed_s: float) -> None:
    save_model(model, out)
    names = {id(p): n for n, p in model.named_parameters()}
    tensors = {}
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p)
            if st:
                for k in ("exp_avg", "exp_avg_sq"):
                    tensors[f"{names[id(p)]}::{k}"] = st[k].contiguous()
                tensors[f"{names[id(p)]}::step"] = torch.as_tensor(st["step"], dtype=torch.float32).reshape(1)
    save_file(tensors, str(out / "train_state.safetensors"))
    (out / "train_state.json").write_text(json.dumps({"step": step, "elapsed_s": elapsed_s, "settings": settings.__dict__}, indent=2))


def load_train_state(out: Path, model: SpaceVLLM, opt: torch.optim.Optimizer) -> tuple[int, float]:
    meta = json.loads((out / "train_state.json").read_text())
    tensors = load_file(str(out / "train_state.safetensors"))
    params = dict(model.named_parameters())
    for name, p in params.items():
        if f"{name}::exp_avg" in tensors:
            opt.state[p] = {
                "exp_avg": tensors[f"{name}::exp_avg"], "exp_avg_sq": tensors[f"{name}::exp_avg_sq"],
                "step": tensors[f"{name}::step"].reshape(()),
            }
    return int(meta["step"]), float(meta.get("elapsed_s", 0.0))


@torch.no_grad()
def quick_eval(model: SpaceVLLM, settings: TrainSettings, n: int) -> dict[str, float]:
    """Held-out STVG samples on the sampled frames: tIoU, vIoU, no-match accuracy (fast proxy of `spacevllm eval`)."""
    from engine.boxes import cxcywh_to_xyxy
    from engine.metrics import match_summary, stvg_summary, t_iou, v_iou

    model.eval()
    t_list, v_list, pm, gm = [], [], [], []
    for i in range(n):
        s = make_sample(EVAL_SEED_OFFSET + i, "stvg", frames=settings.frames, size=model.config.vision.image_size,
                        negative_rate=0.2)
        px = torch.from_numpy(s.frames).permute(0, 3, 1, 2).float() / 255
        g = model.ground(model.encode_window(px, list(s.timestamps_s)), [s.caption])[0]
        pm.append(g.score >= 0.5)
        gm.append(s.span_s is not None)
        if s.span_s is None:
            continue
        ts = s.timestamps_s
        gt = [k for k in range(len(ts)) if s.in_span[k]]
        gt_span = (min(gt), max(gt)) if gt else None
        pred_span = (min(g.frame_indices), max(g.frame_indices)) if g.score >= 0.5 and g.frame_indices else None
        pb = {k: cxcywh_to_xyxy(np.asarray(b)) for k, b in zip(g.frame_indices, g.boxes_cxcywh)}
        gb = {k: cxcywh_to_xyxy(s.boxes_cxcywh[k]) for k in gt if s.present[k]}
        t_list.append(t_iou(pred_span, gt_span))
        v_list.append(v_iou(pred_span, gt_span, pb, gb))
    model.train()
    return {**stvg_summary(t_list, v_list), **match_summary(pm, gm)}


def best_threshold(scores: np.ndarray, labels: np.ndarray, min_recall: float) -> tuple[float, float]:
    """(threshold, balanced accuracy): the threshold on a 0.01 grid that maximises balanced accuracy (recall of
    matches and of non-matches) among those keeping recall >= `min_recall`; (0.5, -1) if none does."""
    best, best_t = -1.0, 0.5
    for t in np.round(np.arange(0.05, 0.99, 0.01), 2):
        tpr = (scores[labels] >= t).mean() if labels.any() else 0.0
        tnr = (scores[~labels] < t).mean() if (~labels).any() else 0.0
        # users must not lose what they asked for: keep recall >= min_recall, then reject as many non-matches as possible
        if tpr >= min_recall and (tpr + tnr) / 2 > best:
            best, best_t = (tpr + tnr) / 2, float(t)
    return best_t, float(best)


@torch.no_grad()
def calibrate_threshold(model: SpaceVLLM, n: int = 300, frames: int = 16, seed_offset: int = EVAL_SEED_OFFSET + 500_000,
                        min_recall: float = 0.9) -> tuple[float, ScoreMode, dict]:
    """The score mode and match threshold that maximise balanced accuracy (recall of matches and of `none`)
    while keeping recall >= `min_recall`, on held-out STVG samples (20% negatives) of the training
    distribution; never on the evaluation clips."""
    model.eval()
    answer, presence, labels = [], [], []
    for i in range(n):
        s = make_sample(seed_offset + i, "stvg", frames=frames, size=model.config.vision.image_size, negative_rate=0.2)
        px = torch.from_numpy(s.frames).permute(0, 3, 1, 2).float() / 255
        g = model.ground(model.encode_window(px, list(s.timestamps_s)), [s.caption])[0]
        answer.append(g.answer_score)
        presence.append(float(g.presence.max()))
        labels.append(s.span_s is not None)
    answer, presence, labels = np.asarray(answer), np.asarray(presence), np.asarray(labels)
    candidates = {ScoreMode.ANSWER: answer, ScoreMode.ANSWER_AND_PRESENCE: np.sqrt(answer * presence)}
    results = {mode: best_threshold(scores, labels, min_recall) for mode, scores in candidates.items()}
    mode = max(results, key=lambda m: results[m][1])
    t = results[mode][0]
    scores = candidates[mode]
    return t, mode, {"balanced_accuracy": results[mode][1], "samples": n,
                     **{f"balanced_accuracy[{m.value}]": results[m][1] for m in results},
                     "recall": float((scores[labels] >= t).mean()), "no_match_accuracy": float((scores[~labels] < t).mean())}


def train(config: SpaceVLLMConfig, out: Path, settings: TrainSettings, resume: bool = False,
          init_from: Path | None = None) -> dict[str, float]:
    """Train `config` from scratch, continue the run in `out` (`resume`), or fine-tune the weights of the
    model in `init_from` (its config and tokenizer; fresh optimizer and schedule)."""
    torch.manual_seed(settings.seed)
    out.mkdir(parents=True, exist_ok=True)
    if resume and (out / "train_state.json").is_file():
        model = load_model(out, allow_missing=("motion.",))
        log.info("resuming from %s", out)
    elif init_from is not None:
        model = load_model(init_from)
        log.info("fine-tuning %s", init_from)
    else:
        model = build_spacevllm(config, train_tokenizer(config.max_time_s))
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "stq" not in n and "pos" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "stq" not in n and "pos" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=settings.lr, betas=(0.9, 0.98))
    step, elapsed = (load_train_state(out, model, opt) if resume and (out / "train_state.json").is_file() else (0, 0.0))
    crit = SpaceVLLMCriterion(model.config.loss, model.vocab.time_ids, model.language_model.config.vocab_size, model.config.frame_grid)
    tok, vocab, p = model.tokenizer, model.vocab, model.config.tokens_per_frame

    def make(index: int) -> Batch:
        return collate(batch_samples(settings, index, settings.batch_size, model.config.vision.image_size), vocab, tok, p,
                       model.config.prompt_order)

    started = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=settings.workers)
    pending = deque(pool.submit(make, i) for i in range(step, min(settings.steps, step + 2 * settings.workers)))
    next_index = step + len(pending)
    bar = tqdm(total=settings.steps, initial=step, desc="train", dynamic_ncols=True)
    window = deque(maxlen=50)
    try:
        while step < settings.steps:
            batch = pending.popleft().result()
            if next_index < settings.steps:
                pending.append(pool.submit(make, next_index))
                next_index += 1
            for g in opt.param_groups:
                g["lr"] = lr_at(step, settings)
            t0 = time.monotonic()
            outp = model(batch.pixels, batch.input_ids, batch.attention_mask, batch.question_index, batch.question_mask)
            terms = crit(outp.logits, batch.labels, outp.decoder, batch.boxes_cxcywh, batch.box_mask, batch.presence,
                         outp.answer_presence_logits)
            opt.zero_grad(set_to_none=True)
            terms.total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            window.append((terms.as_floats(), time.monotonic() - t0, batch.pixels.shape[0]))
            if step % 10 == 0:
                avg = {k: np.mean([w[0][k] for w in window]) for k in window[0][0]}
                sps = sum(w[2] for w in window) / max(1e-9, sum(w[1] for w in window))
                bar.set_postfix({**{k: f"{v:.3f}" for k, v in avg.items()}, "samples/s": f"{sps:.1f}"})
            bar.update(1)
            timed_out = settings.max_minutes and (time.monotonic() - started) / 60 >= settings.max_minutes
            if step % settings.checkpoint_every == 0 or step == settings.steps or timed_out:
                save_train_state(out, model, opt, step, settings, elapsed + time.monotonic() - started)
                log.info("checkpoint at step %d", step)
            if timed_out:
                log.info("stopping after %.1f minutes at step %d (resume with --resume)", settings.max_minutes, step)
                break
    finally:
        bar.close()
        pool.shutdown(wait=False, cancel_futures=True)
    threshold, mode, calib = calibrate_threshold(model, n=settings.calibration_samples, frames=settings.frames)
    model.config = dataclasses.replace(model.config, default_threshold=threshold, score=mode)
    save_model(model, out)
    log.info("calibrated score %s, default threshold %.2f (%s)", mode.value, threshold, calib)
    metrics = quick_eval(model, settings, settings.eval_samples)
    (out / "train_metrics.json").write_text(json.dumps({"step": step, **metrics}, indent=2))
    log.info("held-out quick eval at step %d: %s", step, metrics)
    return metrics
