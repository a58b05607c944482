"""A model directory on disk: opening it (its config, the base checkpoint it names), reading its files, and checking
the tensors it holds against the model they are for.

`config.json` (or `config.yaml`) says what the model is; `model.safetensors` holds its weights, or, when the config
names a `base_checkpoint` (the 7B), only what training made on top of that local base directory. Never pickle:
`.bin`/`.pt`/`.pkl` files are refused. Loading (`checkpoint.py`), the base loader (`llava_onevision.py`), LoRA
adapters (`lora.py`), fine-tuning (`finetune.py`) and preprocessing (`preprocess.py`) all open directories here.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from engine.model.config import ScoreMode, SpaceVLLMConfig, load_config

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")

TRAINING_ONLY = ("answer_probe_",)  # parameters with no inference role: a checkpoint may leave them out
# zero-initialised additions that are exact no-ops at their initialisation: a checkpoint from before them
# loads and grounds exactly as it did
ZERO_INIT_ADDITIONS = ("answer_words.", "decoder_words.")
# heads a checkpoint needs only when its config uses them (the match head: `score: match_head`)
OPTIONAL_HEADS = ("match_head.",)


class CheckpointError(ValueError):
    """A model directory that cannot be loaded; the message says what is wrong."""


@dataclass(frozen=True)
class ModelDir:
    """An opened model directory: where it is, which config file it has, and that config."""

    path: Path
    config_path: Path
    config: SpaceVLLMConfig

    def base_dir(self) -> Path:
        """The local base checkpoint directory its config names (relative to the model directory unless absolute)."""
        base = self.config.base_checkpoint
        path = Path(base) if Path(base).is_absolute() else self.path / base
        if not path.is_dir():
            raise CheckpointError(f"{self.config_path}: base_checkpoint {base!r} is not a local directory "
                                  "(nothing is downloaded)")
        return path


def open_model_dir(directory: str | Path) -> ModelDir:
    """CheckpointError for a missing directory, pickle files, or a missing or bad config."""
    d = Path(directory)
    if not d.is_dir():
        raise CheckpointError(f"model directory {d} does not exist")
    refuse_pickle(d)
    cfg_path = d / "config.json" if (d / "config.json").is_file() else d / "config.yaml"
    if not cfg_path.is_file():
        raise CheckpointError(f"{d}: missing config.json")
    try:
        config = load_config(cfg_path)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{cfg_path}: {exc}") from exc
    return ModelDir(d, cfg_path, config)


def refuse_pickle(directory: Path) -> None:
    bad = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if bad:
        raise CheckpointError(f"{directory}: refusing pickle-based weight files {bad}; convert them to safetensors")


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error type (truncated file, bad header) or OSError
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc}); re-copy or re-export it") from None


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from a safetensors header, without reading the weights."""
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        size = path.stat().st_size
        with open(path, "rb") as raw:  # the header says where the data ends: a truncated file is caught here
            n = int.from_bytes(raw.read(8), "little")
            header = json.loads(raw.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + n + end > size:
            raise ValueError(f"file is {size} bytes, its header needs {8 + n + end}: truncated")
        return shapes
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc}); re-copy or re-export it") from None


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_state(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor], where: str) -> None:
    """Raise naming every missing, unexpected or mis-shaped tensor."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = sorted(
        f"{k}: expected {tuple(expected[k].shape)}, got {tuple(given[k].shape)}"
        for k in set(expected) & set(given)
        if tuple(expected[k].shape) != tuple(given[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing tensors {missing[:20]}{' ...' if len(missing) > 20 else ''}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}")
    if shapes:
        problems.append(f"mis-shaped tensors {shapes[:20]}")
    if problems:
        raise CheckpointError(f"{where}: " + "; ".join(problems))


def optional_prefixes(config: SpaceVLLMConfig) -> tuple[str, ...]:
    """Name prefixes a checkpoint of `config` may leave out (kept at initialisation, unused)."""
    unused = () if config.score is ScoreMode.MATCH_HEAD else OPTIONAL_HEADS
    return TRAINING_ONLY + ZERO_INIT_ADDITIONS + unused


def optional_left_out(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor],
                      config: SpaceVLLMConfig) -> dict[str, torch.Tensor]:
    """The tensors of `expected` that `given` (a checkpoint of `config`) left out and may leave out: they are kept at
    their initialisation (checked and loaded as if given)."""
    prefixes = optional_prefixes(config)
    return {k: v for k, v in expected.items() if k not in given and k.startswith(prefixes)}
