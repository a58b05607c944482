"""The one CLI: `spacevllm ...`. Commands only parse, build and call `run()`."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import click


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """SpaceVLLM: streaming spatio-temporal video grounding."""
    _setup_logging(verbose)


@main.command()
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
def train(config_path, out, steps, batch_size, lr, warmup, checkpoint_every, seed, max_minutes, resume, threads, task_mix, rec_batch_size, negative_rate,
          pair_rate, init_from, mixture, base_dir, frames, workers, device, precision, grad_accum, grad_checkpointing, fsdp,
          lora_rank, full_finetune, train_vision, write_digests) -> None:
    """Train a model: synthetic Uni-STG scenes, or real datasets (--mixture); one process, or DDP under torchrun.

    \b
    torchrun --nproc_per_node 8 -m engine.app.cli train --config configs/model/spacevllm-7b.yaml \\
        --base /models/llava-onevision-qwen2-7b-ov --mixture data.yaml --precision bf16 --out runs/7b
    """
    import dataclasses
    import os

    import torch

    from engine.training.data.formats import FormatError
    from engine.training.data.mixture import RecordError
    from engine.model.checkpoint import CheckpointError
    from engine.model.config import load_config
    from engine.training.train import TrainSettings, train as run

    if threads:
        torch.set_num_threads(threads)
    try:
        mix = tuple(float(x) for x in task_mix.split(","))
        assert len(mix) == 3 and min(mix) >= 0 and sum(mix) > 0
    except (ValueError, AssertionError):
        raise click.BadParameter("three non-negative numbers, e.g. 0.45,0.15,0.4", param_hint="--task-mix") from None
    if not 0 <= negative_rate < 1:
        raise click.BadParameter("a share in [0, 1)", param_hint="--negative-rate")
    if not 0 <= pair_rate <= 1:
        raise click.BadParameter("a share in [0, 1]", param_hint="--pair-rate")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if grad_accum < 1 or batch_size < world * grad_accum:
        raise click.BadParameter(f"--batch-size {batch_size} must be at least ranks ({world}) x --grad-accum ({grad_accum})",
                                 param_hint="--grad-accum")
    config = load_config(config_path)
    if base_dir:
        config = dataclasses.replace(config, base_checkpoint=str(Path(base_dir).resolve()))
    elif config.base_checkpoint:
        base = Path(config.base_checkpoint)
        config = dataclasses.replace(config, base_checkpoint=str(base if base.is_absolute() else (Path(config_path).parent / base).resolve()))
    if fsdp and (world == 1 or not config.base_checkpoint):
        raise click.BadParameter("FSDP shards a base-checkpoint model over torchrun ranks (WORLD_SIZE > 1)", param_hint="--fsdp")
    if not config.base_checkpoint and (full_finetune or train_vision):
        raise click.BadParameter("a model without a base checkpoint always trains every weight", param_hint="--full-finetune/--train-vision")
    settings = TrainSettings(steps=steps, batch_size=batch_size, lr=lr, warmup=warmup, checkpoint_every=checkpoint_every,
                             seed=seed, max_minutes=max_minutes, task_mix=mix, rec_batch_size=rec_batch_size, negative_rate=negative_rate, pair_rate=pair_rate,
                             frames=frames, workers=workers, mixture=mixture, device=device, precision=precision,
                             grad_accum=grad_accum, grad_checkpointing=grad_checkpointing, fsdp=fsdp, lora_rank=lora_rank,
                             full_finetune=full_finetune, train_vision=train_vision, digests=write_digests)
    try:
        metrics = run(config, Path(out), settings, resume=resume, init_from=Path(init_from) if init_from else None)
    except (RecordError, FormatError, CheckpointError) as exc:
        raise click.ClickException(str(exc)) from None
    if metrics:  # rank 0
        click.echo(" ".join(f"{k}={v:.3f}" for k, v in metrics.items()))


@main.command()
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


@main.command("train-match")
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


@main.command("eval")
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
def eval_cmd(suite, fmt, anno, videos, model_dir, out, threshold, limit, n_clips, seed, style_shift) -> None:
    """Evaluate a model; writes metrics.json and predictions.json (grounding) or swaps.json (swaps).

    A style-shifted grounding set: `spacevllm make-eval-set --style-shift`."""
    import json as _json

    from engine.training.data.formats import FormatError
    from engine.model.checkpoint import CheckpointError
    from engine.contracts.settings import DEFAULT_MODEL_DIR

    try:
        if suite == "swaps":
            from engine.training.swaps import run_swaps

            result = run_swaps(model_dir or DEFAULT_MODEL_DIR, n_clips, seed, out, threshold, style_shift)
        else:
            missing = [name for name, v in (("--format", fmt), ("--anno", anno), ("--videos", videos)) if v is None]
            if missing:
                raise click.UsageError(f"--suite grounding needs {', '.join(missing)}")
            from engine.training.evaluate import evaluate

            result = evaluate(fmt, anno, videos, model_dir or DEFAULT_MODEL_DIR, out, threshold, limit)
    except (FormatError, CheckpointError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(_json.dumps(result, indent=2))


@main.command("make-eval-set")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--n", default=500, show_default=True)
@click.option("--seed", default=1, show_default=True)
@click.option("--seconds", default=8.0, show_default=True)
@click.option("--negative-rate", default=0.2, show_default=True)
@click.option("--style-shift", is_flag=True,
              help="The same scenes and captions through a camera style training never shows (noise, blur, tone, JPEG, CRF).")
def make_eval_set(out, n, seed, seconds, negative_rate, style_shift) -> None:
    """Render held-out synthetic clips in HC-STVG format (<out>/anno.json, <out>/videos/*.mp4)."""
    from tqdm import tqdm

    from engine.training.data.formats import write_hcstvg_clips

    bar = tqdm(total=n, desc="render")
    path = write_hcstvg_clips(out, n, seed, seconds, negative_rate, progress=lambda i: bar.update(1), style_shift=style_shift)
    bar.close()
    click.echo(path)


# ---- service commands ---------------------------------------------------------------------
def _service_config(path):
    from engine.contracts.settings import ConfigError, load_service_config

    try:
        return load_service_config(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _client(config_path, redis_url):
    from stream.urls import redact_url
    from stream.keys import LayoutMismatch, check_layout
    from stream.redis_server import connect

    cfg = _service_config(config_path)
    url = redis_url or cfg.redis.url
    if not url:
        raise click.ClickException("no Redis URL: pass --redis-url, set REDIS_URL, or set redis.url in the config "
                                   "(`spacevllm up` prints the URL of its embedded Redis)")
    try:
        client = connect(url, cluster=cfg.redis.cluster)
        client.ping()
        check_layout(client, cfg.redis.keys())
    except LayoutMismatch as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # redis errors of any kind: one clear line
        raise click.ClickException(f"cannot reach Redis at {redact_url(url)}: {exc}") from None
    return client, cfg.redis.keys()


config_option = click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
                             help="Service config YAML (default: embedded defaults).")
redis_option = click.option("--redis-url", default=None, envvar="REDIS_URL", help="Redis URL (or REDIS_URL).")


@main.command("validate-config")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
def validate_config(path) -> None:
    """Check a service config file, and that its model directory would load (without reading the weights)."""
    from engine.model.checkpoint import CheckpointError, check_model_dir

    cfg = _service_config(path)
    try:
        model = check_model_dir(cfg.engine.model)
    except CheckpointError as exc:
        raise click.ClickException(f"{path}: engine.model: {exc}") from None
    from engine.app.service import ServiceError, model_windows

    try:
        model_windows(cfg)
    except ServiceError as exc:
        raise click.ClickException(f"{path}: {exc}") from None
    click.echo(f"{path}: OK ({len(cfg.cameras)} cameras, {len(cfg.queries)} queries, model {model}, backend {cfg.engine.backend})")


@main.command()
@config_option
@click.option("--max-seconds", type=float, default=None, help="Stop after this long (default: until Ctrl-C).")
def up(config_path, max_seconds) -> None:
    """The main job: embedded Redis, demo camera, ingest, one engine worker, events printed live."""
    from engine.model.checkpoint import CheckpointError
    from engine.app.service import ServiceError, run_up

    try:
        run_up(_service_config(config_path), click.echo, max_seconds=max_seconds)
    except CheckpointError as exc:
        raise click.ClickException(f"cannot load the model: {exc}") from None
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None


health_port_option = click.option("--health-port", type=int, default=None, envvar="SVL_HEALTH_PORT",
                                  help="Serve GET /healthz on this port (container healthchecks; or SVL_HEALTH_PORT).")


def _serve_healthz(port, alive) -> None:
    if port is not None:
        from api.probe import serve_healthz

        serve_healthz("0.0.0.0", port, alive)


@main.command()
@config_option
@health_port_option
def ingest(config_path, health_port) -> None:
    """Ingest cameras into Redis windows (until SIGTERM/SIGINT). The config's cameras seed the camera registry in
    Redis; cameras added or removed there (API, `spacevllm cameras`) are picked up while running."""
    from engine.app.service import ServiceError, model_windows, open_redis, seed_queries
    from stream.urls import redact_url
    from stream.cameras import CameraRegistry
    from stream.ingest import IngestService

    cfg = _service_config(config_path)
    try:
        client, server, url = open_redis(cfg)
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Redis: {redact_url(url)}")
    keys = cfg.redis.keys()
    try:
        seed_queries(client, keys, [q.model_dump(exclude_none=True) for q in cfg.queries])
        try:
            windows = model_windows(cfg)  # the model's input size: ingest stores frames at it
        except ServiceError as exc:
            raise click.ClickException(str(exc)) from None
        svc = IngestService(client, keys, list(cfg.cameras), windows, cfg.ingest, registry=CameraRegistry(client, keys))
        _serve_healthz(health_port, lambda: not svc.stop_event.is_set()
                       and bool(client.exists(keys.heartbeat("ingest", svc.worker_id))))
        svc.run()
    finally:
        if server is not None:
            server.stop()


@main.command()
@config_option
@click.option("--max-windows", type=int, default=None, help="Exit after this many windows (tests).")
@click.option("--exit-when-idle", type=float, default=None, help="Exit after this many seconds without a window (tests, benches).")
@click.option("--consumer", default=None, help="Consumer name in the group (default: host + random).")
@health_port_option
def engine(config_path, max_windows, exit_when_idle, consumer, health_port) -> None:
    """An engine worker: windows from Redis -> grounding events. Registers the config's queries."""
    import signal
    import threading

    from engine.model.checkpoint import CheckpointError
    from engine.app.service import ServiceError, build_engine, format_event, load_engine_model, open_redis, seed_queries

    cfg = _service_config(config_path)
    if not cfg.redis.url:
        raise click.ClickException("the engine needs a shared Redis: set redis.url or REDIS_URL")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        loaded = load_engine_model(cfg)
        client, _, _ = open_redis(cfg)
    except CheckpointError as exc:
        raise click.ClickException(f"cannot load the model: {exc}") from None
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    keys = cfg.redis.keys()
    seed_queries(client, keys, [q.model_dump(exclude_none=True) for q in cfg.queries])
    worker = build_engine(cfg, client, keys, stop, on_event=lambda e: click.echo(format_event(e)),
                          consumer=consumer, loaded=loaded)
    _serve_healthz(health_port, lambda: not stop.is_set() and bool(client.exists(keys.heartbeat("engine", worker.consumer))))
    worker.run(max_windows=max_windows, idle_exit_s=exit_when_idle)


@main.command()
@config_option
@click.option("--host", default=None, help="Listen address (default: api.host, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Listen port (default: api.port, 8080).")
def serve(config_path, host, port) -> None:
    """The HTTP API: /v1 queries, cameras, events (+ SSE), webhooks, /metrics, /healthz, /readyz."""
    from api.server import ExposureError, build_server
    from engine.app.service import ServiceError, open_redis

    cfg = _service_config(config_path)
    if not cfg.redis.url:
        raise click.ClickException("the API needs a shared Redis: set redis.url or REDIS_URL")
    settings = cfg.api.model_copy(update={k: v for k, v in {"host": host, "port": port}.items() if v is not None})
    try:
        client, _, _ = open_redis(cfg)
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        server = build_server(client, cfg.redis.keys(), settings, cfg.data_dir, media_dir=cfg.media_dir())
    except ExposureError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"API: {server.url}  (OpenAPI: {server.url}/docs)")
    server.serve_forever()


@main.command()
@config_option
@health_port_option
def media(config_path, health_port) -> None:
    """Event media: follow the event feed; a snapshot per event, a clip when it ends (files under media.dir)."""
    import signal
    import threading

    from engine.media.worker import MediaWorker
    from engine.media.store import MediaStore
    from engine.app.service import ServiceError, open_redis

    cfg = _service_config(config_path)
    if not cfg.redis.url:
        raise click.ClickException("the media worker needs a shared Redis: set redis.url or REDIS_URL")
    try:
        client, _, _ = open_redis(cfg)
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    worker = MediaWorker(client, cfg.redis.keys(), cfg.media, MediaStore(cfg.media_dir()), stop)
    _serve_healthz(health_port, lambda: not stop.is_set())
    click.echo(f"media worker: media in {cfg.media_dir()}")
    worker.run()


@main.group()
def token() -> None:
    """API tokens (stored hashed in the token file)."""


@token.command("create")
@click.option("--name", required=True, help="Who uses it (shown in 403 messages).")
@click.option("--scope", type=click.Choice(["read", "write", "admin"]), default="read", show_default=True)
@click.option("--file", "path", default=None, help="Token file (default: api.tokens_file, else <data_dir>/api-tokens.json).")
@config_option
def token_create(name, scope, path, config_path) -> None:
    """Create a token; prints it once (only its SHA-256 is kept)."""
    from api.auth import Scope, TokenFileError, add_token
    from api.server import tokens_path

    cfg = _service_config(config_path)
    target = path or tokens_path(cfg.api, cfg.data_dir)
    try:
        click.echo(add_token(target, name, Scope(scope)))
    except TokenFileError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"(stored hashed in {target}; restart `spacevllm serve` to load it)", err=True)


@main.group()
def cameras() -> None:
    """Cameras: ls (with health), add, rm."""


@cameras.command("ls")
@config_option
@redis_option
def cameras_ls(config_path, redis_url) -> None:
    from stream.cameras import CameraRegistry
    from stream.health import read_health
    from stream.urls import redact_url

    client, keys = _client(config_path, redis_url)
    registered = {c.id: c for c in CameraRegistry(client, keys).all()}
    announced = {m.decode() if isinstance(m, bytes) else m for m in client.smembers(keys.cameras())}
    click.echo("ID\tSTATE\tFPS\tDECODED\tDROPPED\tRECONNECTS\tURL\tLAST ERROR")
    for cid in sorted(set(registered) | announced):
        try:
            h = read_health(client, keys, cid)
        except ValueError:
            h = None
        url = redact_url(registered[cid].url) if cid in registered else "(not registered)"
        if h is None:
            click.echo(f"{cid}\t-\t-\t-\t-\t-\t{url}\t")
        else:
            click.echo(f"{cid}\t{h.state.value}\t{h.fps:.1f}\t{h.frames_decoded}\t{h.frames_dropped}\t{h.reconnects}\t{url}\t{h.last_error}")


@cameras.command("add")
@click.argument("camera_id")
@click.argument("url")
@click.option("--replace", is_flag=True, help="Replace a camera with this id.")
@config_option
@redis_option
def cameras_add(camera_id, url, replace, config_path, redis_url) -> None:
    """Register a camera; a running ingest starts it."""
    from pydantic import ValidationError

    from engine.contracts.errors import error_lines
    from engine.contracts.settings import CameraSettings
    from stream.cameras import CameraExists, CameraRegistry

    client, keys = _client(config_path, redis_url)
    try:
        cam = CameraSettings(id=camera_id, url=url)
    except ValidationError as exc:
        raise click.ClickException("; ".join(error_lines(exc.errors(), whole="camera"))) from None
    try:
        CameraRegistry(client, keys).add(cam, replace=replace)
    except CameraExists:
        raise click.ClickException(f"camera {camera_id!r} exists (--replace replaces it)") from None
    click.echo(camera_id)


@cameras.command("rm")
@click.argument("camera_id")
@config_option
@redis_option
def cameras_rm(camera_id, config_path, redis_url) -> None:
    """Unregister a camera; a running ingest stops it."""
    from stream.cameras import CameraRegistry

    client, keys = _client(config_path, redis_url)
    if not CameraRegistry(client, keys).remove(camera_id):
        raise click.ClickException(f"no registered camera {camera_id!r}")
    click.echo(f"removed {camera_id}")


@main.group()
def query() -> None:
    """Standing queries: add, ls, rm."""


@query.command("add")
@click.argument("text")
@click.option("--camera", "cameras", multiple=True, help="Camera id (repeat; default: every camera).")
@click.option("--threshold", type=float, default=None, help="Match threshold in [0, 1] (default: the model's calibrated one).")
@click.option("--min-duration", type=float, default=None, help="Seconds (default: the query schema's, 0).")
@click.option("--cooldown", type=float, default=None, help="Seconds (default: the query schema's, 4).")
@click.option("--id", "query_id", default=None)
@click.option("--webhook", "webhooks", multiple=True, metavar="URL=SECRET", help="A sink for this query's events (repeat).")
@click.option("--replace", is_flag=True, help="Replace a query with this --id (without it, an existing id is an error).")
@config_option
@redis_option
def query_add(text, cameras, threshold, min_duration, cooldown, query_id, webhooks, replace, config_path, redis_url) -> None:
    """Add a standing query (validated by the one query schema, engine.contracts.queries.QuerySpec)."""
    from engine.contracts.client import GroundingClient
    from engine.contracts.queries import QueryError, QueryExists

    hooks = []
    for w in webhooks:
        url, sep, secret = w.rpartition("=")
        if not sep or not url:
            raise click.BadParameter("URL=SECRET", param_hint="--webhook")
        hooks.append({"url": url, "secret": secret})
    client, keys = _client(config_path, redis_url)
    try:
        q = GroundingClient(client, keys).add_query(text, list(cameras) or None, threshold, min_duration, cooldown, query_id,
                                                    webhooks=hooks or None, replace=replace)
    except QueryError as exc:
        raise click.ClickException(f"invalid query: {exc}") from None
    except QueryExists:
        raise click.ClickException(f"query {query_id!r} exists (--replace replaces it)") from None
    click.echo(q.id)


@query.command("ls")
@config_option
@redis_option
def query_ls(config_path, redis_url) -> None:
    from engine.contracts.client import GroundingClient

    client, keys = _client(config_path, redis_url)
    for q in GroundingClient(client, keys).list_queries():
        shown = q.threshold if q.threshold is not None else "model-default"
        click.echo(f"{q.id}\t{','.join(q.cameras)}\tthreshold={shown}\t{q.text}")


@query.command("rm")
@click.argument("query_id")
@config_option
@redis_option
def query_rm(query_id, config_path, redis_url) -> None:
    from engine.contracts.client import GroundingClient

    client, keys = _client(config_path, redis_url)
    if not GroundingClient(client, keys).remove_query(query_id):
        raise click.ClickException(f"no query {query_id!r}")
    click.echo(f"removed {query_id}")


@main.group()
def windows() -> None:
    """Windows the engine could not process."""


@windows.group("dead", invoke_without_command=True)
@config_option
@redis_option
@click.pass_context
def windows_dead(ctx, config_path, redis_url) -> None:
    """Dead-lettered windows: ls (the default), retry REF, drop REF."""
    ctx.obj = (config_path, redis_url)
    if ctx.invoked_subcommand is None:
        ctx.invoke(windows_dead_ls)


def _window_source(ctx, config_path, redis_url):
    from engine.serving.window_source import WindowSource

    config_path = config_path or (ctx.obj or (None, None))[0]
    redis_url = redis_url or (ctx.obj or (None, None))[1]
    client, keys = _client(config_path, redis_url)
    return WindowSource(client, keys, _service_config(config_path).engine.group, "cli")


@windows_dead.command("ls")
@config_option
@redis_option
@click.pass_context
def windows_dead_ls(ctx, config_path=None, redis_url=None) -> None:
    """List dead-lettered windows: REF, when, camera, window start, deliveries, error."""
    from datetime import datetime, timezone

    dead = _window_source(ctx, config_path, redis_url).dead()
    for d in dead:
        when = datetime.fromtimestamp(d.failed_at, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"{d.ref}\t{when}\tcamera={d.window.get('camera')} start_ms={d.window.get('start_ms')}\t"
                   f"deliveries={d.deliveries}\t{d.error}")
    if not dead:
        click.echo("no dead-lettered windows")


@windows_dead.command("retry")
@click.argument("ref")
@config_option
@redis_option
@click.pass_context
def windows_dead_retry(ctx, ref, config_path, redis_url) -> None:
    """Put a dead-lettered window back on its stream (REF as `ls` shows it: SHARD/ID)."""
    try:
        new_id = _window_source(ctx, config_path, redis_url).retry_dead(ref)
    except KeyError as exc:
        raise click.ClickException(exc.args[0]) from None
    click.echo(f"requeued {ref} as {new_id}")


@windows_dead.command("drop")
@click.argument("ref")
@config_option
@redis_option
@click.pass_context
def windows_dead_drop(ctx, ref, config_path, redis_url) -> None:
    """Delete a dead-lettered window."""
    try:
        _window_source(ctx, config_path, redis_url).drop_dead(ref)
    except KeyError as exc:
        raise click.ClickException(exc.args[0]) from None
    click.echo(f"dropped {ref}")


@main.group()
def events() -> None:
    """Grounding events."""


@events.command("tail")
@click.option("--camera", default=None)
@click.option("--query", "query_id", default=None)
@click.option("--since", default="$", help="Stream id, Unix seconds, or '$' (only new; default).")
@click.option("--json", "as_json", is_flag=True, help="Print the raw event JSON.")
@config_option
@redis_option
def events_tail(camera, query_id, since, as_json, config_path, redis_url) -> None:
    from engine.contracts.client import GroundingClient
    from engine.app.service import format_event

    client, keys = _client(config_path, redis_url)
    try:
        for _, e in GroundingClient(client, keys).events(since=since, camera=camera, query=query_id):
            click.echo(e.to_json() if as_json else format_event(e))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None



# ---- export --------------------------------------------------------------------------------
@main.group()
def export() -> None:
    """ONNX / TensorRT export and edge bundles."""


@export.command("onnx")
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--parity/--no-parity", default=True, show_default=True, help="Check ONNX Runtime against PyTorch.")
def export_onnx_cmd(model_dir, out, parity) -> None:
    """vision_encoder.onnx + space_decoder.onnx + manifest.json."""
    from engine.model.checkpoint import CheckpointError
    from export.onnx_export import export_onnx, parity as check

    try:
        export_onnx(model_dir, out, progress=lambda m: click.echo(f"... {m}"))
    except CheckpointError as exc:
        raise click.ClickException(str(exc)) from None
    if parity:
        diffs = check(model_dir, out)
        click.echo("parity (max abs diff, ONNX Runtime CPU vs PyTorch): " + ", ".join(f"{k}={v:.2e}" for k, v in diffs.items()))
        if max(diffs.values()) > 1e-4:
            raise click.ClickException("parity check failed (> 1e-4)")


@export.command("tensorrt")
@click.option("--onnx", "onnx_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Default: <onnx>/tensorrt")
@click.option("--fp16/--no-fp16", default=True, show_default=True)
@click.option("--int8", is_flag=True)
@click.option("--calibration", default=None, help="A video file or redis://... URL (frames of recent windows).")
@click.option("--prefix", default="svl:", help="Redis key prefix for --calibration redis://...")
def export_tensorrt_cmd(onnx_dir, out, fp16, int8, calibration, prefix) -> None:
    """Serialized TensorRT engines with optimisation profiles (on a GPU host)."""
    import json as _json

    from export.tensorrt import (TensorRTUnavailable, build_engines, calibration_frames_from_redis,
                                 calibration_frames_from_video, manifest_preprocessor, require_tensorrt)

    try:
        require_tensorrt()
    except TensorRTUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    pre = manifest_preprocessor(_json.loads((Path(onnx_dir) / "manifest.json").read_text()))
    calib = None
    if calibration:
        calib = (calibration_frames_from_redis(calibration, prefix, pre) if calibration.startswith(("redis://", "rediss://", "unix://"))
                 else calibration_frames_from_video(calibration, pre))
    m = build_engines(onnx_dir, out or Path(onnx_dir) / "tensorrt", fp16=fp16, int8=int8, calibration=calib)
    click.echo(f"built {m['precision']} engines for {m['gpu']['name']} with TensorRT {m['tensorrt']}")


@export.command("edge-bundle")
@click.option("--onnx", "onnx_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--target", required=True, help="jetson-orin | jetson-xavier | x86-gpu | x86-gpu-int8")
@click.option("--out", default="dist", show_default=True, type=click.Path(file_okay=False))
def export_bundle_cmd(onnx_dir, target, out) -> None:
    """Pack ONNX graphs, manifest, config and a trtexec build script for a device."""
    from export.bundle import make_bundle
    from export.onnx_export import ManifestError

    try:
        click.echo(make_bundle(onnx_dir, target, out))
    except (ValueError, ManifestError) as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    main()
