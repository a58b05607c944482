"""Training: `spacevllm train --config ... --out DIR [--resume]`, one process or one per GPU under torchrun.

Samples are synthetic Uni-STG scenes (the tiny model's default), or real datasets through a mixture file
(`--mixture`, `engine/training/data/mixture.py`). Each optimizer step consumes one global batch, deterministic per
(seed, step), cut across ranks and accumulation micro-steps (`engine/training/data/steps.py`): a resumed run
continues the exact sample stream at its step, with any world size. Batches are built in DataLoader workers.

Under `torchrun --nproc_per_node N` (RANK/WORLD_SIZE/LOCAL_RANK set) the model is wrapped in DDP (or FSDP with
`fsdp`), NCCL on CUDA and gloo on the CPU; rank 0 alone logs, shows progress and writes checkpoints. With
DDP every rank holds the whole model and optimizer state, so rank 0's checkpoint is complete. Precision:
`fp32`, or autocast in `bf16` / `fp16` (fp16 with a gradient scaler).

Checkpoints are safetensors only. A model built from scratch (tiny): `model.safetensors` + `config.json` +
`tokenizer.json`. A run on a base checkpoint (7B, `config.base_checkpoint`): heads + adapters
(`engine/model/finetune.py`). Both add `train_state.safetensors` / `train_state.json` (optimizer moments by
parameter name, un-sharded; step) for `--resume`, and `train_log.jsonl` (one line per step, rank 0).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from engine.model.boxes import cxcywh_to_xyxy
from engine.model.checkpoint import load_model, save_model
from engine.model.config import ScoreMode, SpaceVLLMConfig, load_config
from engine.model.finetune import FinetuneSettings, load_for_training, save_finetuned
from engine.model.lora import LoraSettings
from engine.model.losses import LossTerms, SpaceVLLMCriterion
from engine.model.preprocess import frames_to_pixels, preprocessor_of
from engine.model.spacevllm import SpaceVLLM, build_spacevllm
from engine.model.tokenizer import train_tokenizer
from engine.training.data.collate import Batch
from engine.training.data.mixture import MixtureSteps, RecordError, load_mixture
from engine.training.data.steps import BadRecord, Collator, Shard, step_loader
from engine.training.data.synthetic import SceneMix, make_pair, make_sample
from engine.training.distributed import ProcessGroup, barrier, init_process_group, mean_over_ranks, teardown
from engine.training.metrics import match_summary, stvg_summary, t_iou, v_iou

log = logging.getLogger(__name__)

EVAL_SEED_OFFSET = 10_000_000  # held-out samples never collide with training seeds


class Precision(str, Enum):
    FP32 = "fp32"
    BF16 = "bf16"  # autocast; no scaler needed (fp32's exponent range)
    FP16 = "fp16"  # autocast + GradScaler

    @property
    def dtype(self) -> torch.dtype:
        return {Precision.FP32: torch.float32, Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}[self]


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 6000
    batch_size: int = 16  # the global batch: summed over ranks and accumulation micro-steps
    lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 0.01
    seed: int = 0
    frames: int = 16
    task_mix: tuple[float, float, float] = (0.45, 0.15, 0.4)  # stvg, vtg, rec
    rec_batch_size: int = 64  # single images are ~16x cheaper than clips: bigger batches teach the visual words fast
    negative_rate: float = 0.3
    pair_rate: float = 0.0  # share of each batch made of contrastive pairs (`make_pair`)
    real_background_rate: float = 0.0  # share of clips drawn over real footage (`SceneMix`)
    look_alike_rate: float = 0.35  # distractors sharing colour and shape with another object (`SceneMix`)
    checkpoint_every: int = 250
    eval_samples: int = 64
    calibration_samples: int = 300
    max_minutes: float = 0.0  # stop (with a checkpoint) after this many minutes; 0 = no limit
    workers: int = 1  # DataLoader worker processes building batches (0: in the training process)
    # real data, devices, precision (the defaults train the tiny model exactly as before them)
    mixture: str | None = None  # a mixture YAML (engine/training/data/mixture.py); None: synthetic scenes
    device: str = "auto"  # auto: this rank's GPU when CUDA is available, else the CPU
    precision: Precision = Precision.FP32
    grad_accum: int = 1  # micro-steps per optimizer step (DDP syncs gradients on the last only)
    grad_checkpointing: bool = False  # recompute the LLM's (and a trained SigLIP's) activations in backward
    fsdp: bool = False  # shard parameters, gradients and optimizer state over the torchrun ranks (for the 7B)
    # runs on a base checkpoint (config.base_checkpoint): what is trained (engine/model/finetune.py)
    lora_rank: int = 16
    full_finetune: bool = False  # the whole LLM instead of LoRA adapters
    train_vision: bool = False  # unfreeze the vision tower
    digests: bool = False  # every rank writes digests/rank<r>.json (a hash of its weights) at the end


def batch_samples(settings: TrainSettings, index: int, size: int, image_size: int = 64, shard: Shard | None = None, micro: int = 0):
    """Synthetic global batch `index` (deterministic per (seed, index)), or only `shard`'s micro-batch `micro` of it."""
    shard = shard or Shard()
    rng = np.random.default_rng([settings.seed, index])
    task = ("stvg", "vtg", "rec")[int(rng.choice(3, p=np.asarray(settings.task_mix) / sum(settings.task_mix)))]
    if task == "rec":
        size = settings.rec_batch_size
    pairs = int(round(size * settings.pair_rate / 2))
    seeds = [int(x) for x in rng.integers(0, EVAL_SEED_OFFSET, size - pairs)]
    start, stop = shard.bounds(size, micro)
    mix = SceneMix(settings.real_background_rate, settings.look_alike_rate)
    out, made = [], {}
    for pos in range(start, stop):  # positions 0 .. 2*pairs-1 are the pairs' members, then one sample per seed
        if pos < 2 * pairs:
            if pos // 2 not in made:
                made[pos // 2] = make_pair(seeds[pos // 2], task, frames=settings.frames, size=image_size, mix=mix)
            out.append(made[pos // 2][pos % 2])
        else:
            out.append(make_sample(seeds[pos - pairs], task, frames=settings.frames, size=image_size,
                                   negative_rate=settings.negative_rate, mix=mix))
    return out


class SyntheticSteps(torch.utils.data.Dataset):
    """Item `step`: this rank's micro-batches of synthetic global batch `step`."""

    def __init__(self, settings: TrainSettings, image_size: int, collator: Collator, shard: Shard) -> None:
        self.settings, self.image_size, self.collator, self.shard = settings, image_size, collator, shard

    def __len__(self) -> int:
        return self.settings.steps

    def __getitem__(self, step: int) -> list[Batch]:
        return [self.collator(batch_samples(self.settings, step, self.settings.batch_size, self.image_size, self.shard, m))
                for m in range(self.shard.grad_accum)]


def lr_at(step: int, s: TrainSettings) -> float:
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    progress = min(1.0, (step - s.warmup) / max(1, s.steps - s.warmup))
    return s.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def save_weights(model: SpaceVLLM, out: Path, full_state: dict[str, torch.Tensor] | None = None,
                 trainable: set[str] | None = None) -> None:
    """The model directory: a whole model (tiny), or heads + adapters naming the base checkpoint (7B).
    `full_state` / `trainable`: the gathered state dict and trainable names when `model` holds FSDP shards."""
    if model.config.base_checkpoint:
        save_finetuned(model, out, full_state, trainable)
    else:
        save_model(model, out)


@dataclass(frozen=True)
class GatheredState:
    """An FSDP run's full (un-sharded) state, gathered to rank 0's CPU memory for a checkpoint."""

    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, dict]  # parameter name -> {exp_avg, exp_avg_sq, step}
    trainable: set[str]


def save_train_state(out: Path, model: SpaceVLLM, opt: torch.optim.Optimizer, step: int, settings: TrainSettings, elapsed_s: float,
                     gathered: GatheredState | None = None) -> None:
    """Weights, optimizer moments (by parameter name: the same for any world size) and the step."""
    if gathered is None:
        save_weights(model, out)
        names = {id(p): n for n, p in model.named_parameters()}
        optimizer_state = {names[id(p)]: opt.state[p] for g in opt.param_groups for p in g["params"] if opt.state.get(p)}
    else:
        save_weights(model, out, gathered.model_state, gathered.trainable)
        optimizer_state = gathered.optimizer_state
    tensors = {}
    for name, st in optimizer_state.items():
        for k in ("exp_avg", "exp_avg_sq"):
            tensors[f"{name}::{k}"] = st[k].detach().cpu().contiguous()
        tensors[f"{name}::step"] = torch.as_tensor(st["step"], dtype=torch.float32).cpu().reshape(1)
    save_file(tensors, str(out / "train_state.safetensors"))
    (out / "train_state.json").write_text(json.dumps({"step": step, "elapsed_s": elapsed_s, "settings": settings.__dict__}, indent=2))


def load_train_state(out: Path, model: SpaceVLLM, opt: torch.optim.Optimizer) -> tuple[int, float]:
    meta = json.loads((out / "train_state.json").read_text())
    tensors = load_file(str(out / "train_state.safetensors"))
    params = dict(model.named_parameters())
    for name, p in params.items():
        if f"{name}::exp_avg" in tensors:
            opt.state[p] = {
                "exp_avg": tensors[f"{name}::exp_avg"].to(p.device), "exp_avg_sq": tensors[f"{name}::exp_avg_sq"].to(p.device),
                "step": tensors[f"{name}::step"].reshape(()),
            }
    return int(meta["step"]), float(meta.get("elapsed_s", 0.0))


@torch.no_grad()
def quick_eval(model: SpaceVLLM, settings: TrainSettings, n: int) -> dict[str, float]:
    """Held-out STVG samples on the sampled frames: tIoU, vIoU, no-match accuracy (fast proxy of `spacevllm eval`)."""
    model.eval()
    t_list, v_list, pm, gm = [], [], [], []
    for i in range(n):
        s = make_sample(EVAL_SEED_OFFSET + i, "stvg", frames=settings.frames, size=model.config.vision.image_size,
                        negative_rate=0.2)
        px = frames_to_pixels(s.frames)  # samples are made at the model's size
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
        px = frames_to_pixels(s.frames)  # samples are made at the model's size
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
    model in `init_from` (its config and tokenizer; fresh optimizer and schedule). A config naming a
    `base_checkpoint` starts from that checkpoint (see `engine/model/finetune.py`). Under torchrun, every rank
    calls this; rank 0 returns the metrics, the others an empty dict."""
    group = init_process_group(settings.device)
    try:
        return _train(group, config, out, settings, resume, init_from)
    finally:
        teardown(group)


def build_model(config: SpaceVLLMConfig, out: Path, settings: TrainSettings, resuming: bool, init_from: Path | None) -> SpaceVLLM:
    """The model to train, on the CPU: resumed from `out`, fine-tuned from `init_from`, or new."""
    source = out if resuming else init_from
    requested = config
    if source is not None:
        config = load_config(source / "config.json")
    if config.base_checkpoint:
        fs = FinetuneSettings(lora=None if settings.full_finetune else LoraSettings(rank=settings.lora_rank,
                                                                                     alpha=2.0 * settings.lora_rank),
                              train_vision=settings.train_vision)
        log.info("%s %s on base %s", "resuming" if resuming else "fine-tuning" if source else "training",
                 source or config.name, config.base_checkpoint)
        return load_for_training(config, fs, source)
    if resuming:
        log.info("resuming from %s", out)
        return load_model(out, allow_missing=("motion.",))
    if init_from is not None:  # its architecture and inference settings, the --config file's loss weights
        log.info("fine-tuning %s", init_from)
        model = load_model(init_from)
        model.config = dataclasses.replace(model.config, loss=requested.loss)
        return model
    return build_spacevllm(config, train_tokenizer(config.max_time_s))


def _train(group: ProcessGroup, config: SpaceVLLMConfig, out: Path, settings: TrainSettings, resume: bool,
           init_from: Path | None) -> dict[str, float]:
    precision = Precision(settings.precision)
    start_ranks(group, settings, out)
    resuming = resume and (out / "train_state.json").is_file()
    model = build_model(config, out, settings, resuming, init_from)
    ready_for_training(model, group.device, settings, precision)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    trainable = {n for n, _ in named}
    opt = build_optimizer(named, settings)
    step, elapsed = load_train_state(out, model, opt) if resuming else (0, 0.0)
    if group.is_main:
        log.info("%d trainable parameters of %d (%d ranks, %s, %d micro-steps per step)", sum(p.numel() for _, p in named),
                 sum(p.numel() for p in model.parameters()), group.world_size, precision.value, settings.grad_accum)
    runner = wrap_for_ranks(model, group, settings)
    stepper = Stepper(model, runner, opt, torch.amp.GradScaler(group.device.type, enabled=precision is Precision.FP16),
                      SpaceVLLMCriterion(model.config.loss, model.vocab.time_ids, model.language_model.config.vocab_size,
                                         model.config.frame_grid).to(group.device),
                      [p for _, p in named], group, settings, precision)
    dataset = build_dataset(model, settings, group)
    step, last = run_steps(out, stepper, dataset, step, elapsed, trainable)
    if settings.digests and not settings.fsdp:  # an FSDP rank holds shards: nothing to compare
        write_digest(out, model, step, group, trainable)
    if not group.is_main:
        return {}
    return finish(out, model, settings, step, last)


def start_ranks(group: ProcessGroup, settings: TrainSettings, out: Path) -> None:
    """Seed; rank 0 alone logs (errors excepted) and makes `out`, which every rank then waits for."""
    torch.manual_seed(settings.seed)
    if not group.is_main:
        logging.getLogger().setLevel(logging.ERROR)
    if group.is_main:
        out.mkdir(parents=True, exist_ok=True)
    barrier(group)


def ready_for_training(model: SpaceVLLM, device: torch.device, settings: TrainSettings, precision: Precision) -> None:
    """In place: training mode, frozen weights in the compute dtype, on `device`, activation checkpointing if asked."""
    model.train()
    if precision is not Precision.FP32:  # frozen weights in the compute dtype: half the memory of the frozen base
        for p in model.parameters():
            if not p.requires_grad:
                p.data = p.data.to(precision.dtype)
    model.to(device)
    if settings.grad_checkpointing:
        for part in (model.language_model, getattr(model.vision_tower, "model", None)):
            if part is None or not any(p.requires_grad for p in part.parameters()):
                continue
            kwargs = {"use_reentrant": False}  # non-reentrant: fine with DDP and with frozen inputs (LoRA)
            if hasattr(part, "activation_checkpointing_enable"):  # its newer name (transformers 5.x)
                part.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            elif hasattr(part, "gradient_checkpointing_enable"):
                part.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def build_optimizer(named: list[tuple[str, torch.nn.Parameter]], settings: TrainSettings) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; biases, norms and the STQ and position embeddings without weight decay."""
    decay = [p for n, p in named if p.ndim >= 2 and "stq" not in n and "pos" not in n]
    no_decay = [p for n, p in named if not (p.ndim >= 2 and "stq" not in n and "pos" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=settings.lr, betas=(0.9, 0.98))


def build_dataset(model: SpaceVLLM, settings: TrainSettings, group: ProcessGroup) -> torch.utils.data.Dataset:
    """Item `step`: this rank's micro-batches of global batch `step`, from the mixture or synthetic scenes."""
    collator = Collator(model.vocab, model.tokenizer, model.config.tokens_per_frame, model.config.prompt_order)
    shard = Shard(group.rank, group.world_size, settings.grad_accum)
    if settings.mixture:
        # real frames are resized by the model's own rule (the base checkpoint's preprocessor_config.json)
        return MixtureSteps(load_mixture(settings.mixture), settings.seed, settings.batch_size, settings.frames, preprocessor_of(model),
                            model.config.max_time_s, collator, shard, settings.steps)
    return SyntheticSteps(settings, model.config.vision.image_size, collator, shard)


@dataclass(frozen=True)
class Stepper:
    """What one optimizer step works with: the model, the module the steps run through (the model, DDP or FSDP), the
    optimizer, the gradient scaler (fp16), the criterion and the trainable parameters (for gradient clipping)."""

    model: SpaceVLLM
    runner: torch.nn.Module
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    criterion: SpaceVLLMCriterion
    params: list[torch.nn.Parameter]
    group: ProcessGroup
    settings: TrainSettings
    precision: Precision

    def step(self, batches: list[Batch], lr: float) -> dict[str, float]:
        """One optimizer step over this rank's micro-batches; the loss terms averaged over micro-batches and ranks."""
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        micro_terms = [self.micro_step(batch, final=m == len(batches) - 1, micro_steps=len(batches))
                       for m, batch in enumerate(batches)]
        if self.settings.fsdp:
            sync_unsharded_grads(self.model, self.group)
        self.scaler.unscale_(self.opt)
        if self.settings.fsdp:
            self.runner.clip_grad_norm_(1.0)
        else:
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.scaler.step(self.opt)
        self.scaler.update()
        return averaged(micro_terms, self.group)

    def micro_step(self, batch: Batch, final: bool, micro_steps: int) -> torch.Tensor:
        """Forward and backward on one micro-batch (DDP syncs gradients on the `final` one only); its loss terms
        (`LossTerms.as_tensor`), left on the device."""
        batch = to_device(batch, self.group.device)
        with (self.runner.no_sync() if self.group.distributed and not final else nullcontext()):
            with torch.autocast(self.group.device.type, dtype=self.precision.dtype, enabled=self.precision is not Precision.FP32):
                outp = self.runner(batch.pixels, batch.input_ids, batch.attention_mask, batch.question_index, batch.question_mask)
            logits, decoder, presence_logits = float_outputs(outp)  # the losses in fp32 (no-ops in fp32 runs)
            terms = self.criterion(logits, batch.labels, decoder, batch.boxes_cxcywh, batch.box_mask, batch.presence, presence_logits)
            self.scaler.scale(terms.total / micro_steps).backward()
        return terms.as_tensor()


def run_steps(out: Path, stepper: Stepper, dataset: torch.utils.data.Dataset, step: int, elapsed: float,
              trainable: set[str]) -> tuple[int, dict[str, float]]:
    """From `step` to `settings.steps` (or `max_minutes`), with progress, a log line per step and checkpoints;
    returns the step reached and its loss terms."""
    settings, group = stepper.settings, stepper.group
    started = time.monotonic()
    bar = tqdm(total=settings.steps, initial=step, desc="train", dynamic_ncols=True, disable=not group.is_main)
    train_log = open(out / "train_log.jsonl", "a", buffering=1) if group.is_main else None  # a line per step (rank 0)
    window = deque(maxlen=50)  # (loss terms, seconds, samples) of the last steps, for the progress bar
    last: dict[str, float] = {}
    try:
        for batches in step_loader(dataset, step, settings.steps, settings.workers):
            if isinstance(batches, BadRecord):
                raise RecordError(batches.message)
            t0 = time.monotonic()
            last = stepper.step(batches, lr_at(step, settings))
            step += 1
            window.append((last, time.monotonic() - t0, settings.batch_size if group.distributed else sum(b.pixels.shape[0] for b in batches)))
            if train_log is not None:
                train_log.write(json.dumps({"step": step, "lr": lr_at(step - 1, settings), **last}) + "\n")
            if step % 10 == 0:
                show_progress(bar, window)
            bar.update(1)
            timed_out = agreed_timeout(settings, started, group)
            if step % settings.checkpoint_every == 0 or step == settings.steps or timed_out:
                checkpoint(out, stepper.model, stepper.runner, stepper.opt, step, settings, elapsed + time.monotonic() - started,
                           group, trainable)
            if timed_out:
                log.info("stopping after %.1f minutes at step %d (resume with --resume)", settings.max_minutes, step)
                break
    finally:
        bar.close()
        if train_log is not None:
            train_log.close()
    return step, last


def show_progress(bar: tqdm, window: deque) -> None:
    """The progress bar's postfix: the loss terms averaged over the last steps, and samples per second."""
    avg = {k: np.mean([w[0][k] for w in window]) for k in window[0][0]}
    sps = sum(w[2] for w in window) / max(1e-9, sum(w[1] for w in window))
    bar.set_postfix({**{k: f"{v:.3f}" for k, v in avg.items()}, "samples/s": f"{sps:.1f}"})


def finish(out: Path, model: SpaceVLLM, settings: TrainSettings, step: int, last: dict[str, float]) -> dict[str, float]:
    """Rank 0, after the last step: train_metrics.json; a synthetic run from scratch also calibrates its match
    threshold (saved in the model's config) and runs the held-out quick eval."""
    if settings.mixture or model.config.base_checkpoint:  # the synthetic calibration and quick eval do not apply
        metrics = {"loss": last.get("total", float("nan"))}
        (out / "train_metrics.json").write_text(json.dumps({"step": step, **metrics}, indent=2))
        log.info("trained to step %d; calibrate the match threshold on held-out data of this domain", step)
        return metrics
    model.to("cpu")
    model.train()
    threshold, mode, calib = calibrate_threshold(model, n=settings.calibration_samples, frames=settings.frames)
    model.config = dataclasses.replace(model.config, default_threshold=threshold, score=mode)
    save_model(model, out)
    log.info("calibrated score %s, default threshold %.2f (%s)", mode.value, threshold, calib)
    metrics = quick_eval(model, settings, settings.eval_samples)
    (out / "train_metrics.json").write_text(json.dumps({"step": step, **metrics}, indent=2))
    log.info("held-out quick eval at step %d: %s", step, metrics)
    return metrics


def wrap_for_ranks(model: SpaceVLLM, group: ProcessGroup, settings: TrainSettings) -> torch.nn.Module:
    """The module the steps run through: the model itself alone, else DDP (or FSDP)."""
    if not group.distributed:
        assert not settings.fsdp, "--fsdp needs torchrun with more than one process"
        return model
    if settings.fsdp:
        # One FSDP unit per transformer layer; use_orig_params for the mix of frozen and trainable parameters
        # (LoRA, frozen vision). Tested with gloo on the CPU (tests/engine/training/test_train_distributed.py); on CUDA
        # fp16 would want FSDP's ShardedGradScaler (bf16 needs no scaler).
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        assert model.config.base_checkpoint, "--fsdp is for runs on a base checkpoint (the 7B)"
        layers = {type(m) for m in model.modules() if type(m).__name__ in ("Qwen2DecoderLayer", "SiglipEncoderLayer")}
        # FSDP cannot shard 0-d parameters (the space decoder's presence_match): they stay whole on every rank,
        # and `sync_unsharded_grads` averages their gradients
        return FSDP(model, auto_wrap_policy=ModuleWrapPolicy(layers), use_orig_params=True, device_id=group.device,
                    ignored_states=unsharded_parameters(model))
    from torch.nn.parallel import DistributedDataParallel as DDP

    # some parameters sit out some steps (the image query on video batches, the frame queries on images)
    return DDP(model, device_ids=[group.device.index] if group.device.type == "cuda" else None, find_unused_parameters=True)


def unsharded_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Parameters FSDP leaves whole (it cannot shard 0-d tensors)."""
    return [p for p in model.parameters() if p.ndim == 0]


def sync_unsharded_grads(model: torch.nn.Module, group: ProcessGroup) -> None:
    """Average over ranks the gradients of the parameters FSDP left whole (FSDP reduces only its own)."""
    import torch.distributed as dist

    for p in unsharded_parameters(model):
        if p.requires_grad:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= group.world_size


def checkpoint(out: Path, model: SpaceVLLM, runner: torch.nn.Module, opt, step: int, settings: TrainSettings, elapsed_s: float,
               group: ProcessGroup, trainable: set[str]) -> None:
    """Rank 0 writes the checkpoint (with FSDP every rank first takes part in gathering the full state)."""
    gathered = None
    if settings.fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        model_state, optim_state = get_state_dict(runner, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=group.device.type == "cuda"))
        gathered = GatheredState(model_state, dict(optim_state.get("state", {})), trainable)
    if group.is_main:
        save_train_state(out, model, opt, step, settings, elapsed_s, gathered)
        log.info("checkpoint at step %d", step)
    barrier(group)


def float_outputs(outp) -> tuple[torch.Tensor, object, torch.Tensor]:
    """(logits, decoder outputs, answer-presence logits) as float32 (the same tensors when they already are)."""
    dec = outp.decoder
    dec = dataclasses.replace(dec, **{f.name: getattr(dec, f.name).float() for f in dataclasses.fields(dec)
                                      if torch.is_tensor(getattr(dec, f.name)) and getattr(dec, f.name).is_floating_point()})
    return outp.logits.float(), dec, outp.answer_presence_logits.float()


def to_device(batch: Batch, device: torch.device) -> Batch:
    if device.type == "cpu":
        return batch
    return Batch(*(getattr(batch, f.name).to(device, non_blocking=True) for f in dataclasses.fields(batch)))


def averaged(micro_terms: list[torch.Tensor], group: ProcessGroup) -> dict[str, float]:
    """Loss terms (`LossTerms.as_tensor` per micro-batch) averaged over this step's micro-batches and over every rank:
    one copy to the host per step."""
    local = torch.stack(micro_terms).cpu().double().mean(0)
    return dict(zip(LossTerms.NAMES, mean_over_ranks(local, group).tolist()))


def agreed_timeout(settings: TrainSettings, started: float, group: ProcessGroup) -> bool:
    """Past `max_minutes`, by rank 0's clock (every rank must stop at the same step)."""
    if not settings.max_minutes:
        return False
    flag = torch.tensor([float((time.monotonic() - started) / 60 >= settings.max_minutes)])
    if group.distributed:
        import torch.distributed as dist

        flag = flag.to(group.device)
        dist.broadcast(flag, src=0)
    return bool(flag.item())


def weights_digest(model: SpaceVLLM, names: set[str] | None = None) -> str:
    """sha256 over parameter names and values (float32 bytes), in name order: equal digests, equal weights."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if names is None or name in names:
            h.update(name.encode())
            h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def write_digest(out: Path, model: SpaceVLLM, step: int, group: ProcessGroup, trainable: set[str]) -> None:
    """digests/rank<r>.json: this rank's step and weight digests (all parameters and the trained ones)."""
    d = out / "digests"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"rank{group.rank}.json").write_text(json.dumps({
        "rank": group.rank, "world_size": group.world_size, "step": step,
        "all": weights_digest(model), "trainable": weights_digest(model, trainable)}, indent=2))
