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
@click.option("--batch-size", default=16, show_default=True)
@click.option("--lr", default=1e-3, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--max-minutes", default=0.0, show_default=True, help="Stop with a checkpoint after this long (0: no limit).")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in --out.")
@click.option("--threads", default=0, help="Torch threads (0: default).")
def train(config_path, out, steps, batch_size, lr, seed, max_minutes, resume, threads) -> None:
    """Train a model on synthetic Uni-STG scenes."""
    import torch

    from engine.model.config import load_config
    from engine.train import TrainSettings, train as run

    if threads:
        torch.set_num_threads(threads)
    settings = TrainSettings(steps=steps, batch_size=batch_size, lr=lr, seed=seed, max_minutes=max_minutes)
    metrics = run(load_config(config_path), Path(out), settings, resume=resume)
    click.echo(" ".join(f"{k}={v:.3f}" for k, v in metrics.items()))


if __name__ == "__main__":
    main()
