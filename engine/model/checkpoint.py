"""Checkpoint I/O: a model directory holds `config.json`, `model.safetensors`, `tokenizer.json`.

A directory whose config names a `base_checkpoint` (the 7B) holds only what training made: `model.safetensors`
with the SpaceVLLM heads (and any base tensor training changed), and, after a LoRA run, `adapters.safetensors`
+ `adapter_config.json`. Loading builds the base, loads the heads, and merges the adapters into the LLM.

Never pickle: weights are safetensors; `.bin`/`.pt`/`.pkl` files are refused.
The 7B config's base weights come from a local LLaVA-OneVision directory (see `llava_onevision.py`).
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from engine.model.config import SpaceVLLMConfig, load_config, save_config
from engine.model.spacevllm import SpaceVLLM, build_spacevllm
from engine.model.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class CheckpointError(ValueError):
    """A model directory that cannot be loaded; the message says what is wrong."""


def save_model(model: SpaceVLLM, directory: str | Path) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    save_config(model.config, d / "config.json")
    model.tokenizer.save(str(d / "tokenizer.json"))
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt", "model": model.config.name})
    return d


def refuse_pickle(directory: Path) -> None:
    bad = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if bad:
        raise CheckpointError(f"{directory}: refusing pickle-based weight files {bad}; convert them to safetensors")


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


TRAINING_ONLY = ("answer_probe_",)  # parameters with no inference role: a checkpoint may leave them out
# zero-initialised additions that are exact no-ops at their initialisation: a checkpoint from before them
# loads and grounds exactly as it did
ZERO_INIT_ADDITIONS = ("answer_words.", "decoder_words.")
# heads a checkpoint needs only when its config uses them (the match head: `score: match_head`)
OPTIONAL_HEADS = ("match_head.",)


def optional_prefixes(config) -> tuple[str, ...]:
    """Name prefixes a checkpoint of `config` may leave out (kept at initialisation, unused)."""
    from engine.model.config import ScoreMode

    unused = () if config.score is ScoreMode.MATCH_HEAD else OPTIONAL_HEADS
    return TRAINING_ONLY + ZERO_INIT_ADDITIONS + unused


def optional_left_out(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """The tensors of `expected` that `given` (a checkpoint of `config`) left out and may leave out: they are kept at
    their initialisation (checked and loaded as if given)."""
    prefixes = optional_prefixes(config)
    return {k: v for k, v in expected.items() if k not in given and k.startswith(prefixes)}


def _open_model_dir(directory: str | Path) -> tuple[Path, Path, SpaceVLLMConfig]:
    """The directory, its config file and config; CheckpointError for a missing directory, pickle files or a bad config."""
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
    return d, cfg_path, config


def load_model(directory: str | Path, allow_missing: tuple[str, ...] = (), placement=None) -> SpaceVLLM:
    """Load a model directory. `allow_missing`: name prefixes of parameters a newer architecture added
    (kept at their initialisation; training resumes use it, inference never does). `placement`
    (`engine.model.placement.Placement`): build the model on that device in that dtype (a 7B model is never
    materialised in float32 on the host first) and place it there."""
    if placement is not None:
        from engine.model.placement import building_on, place

        with building_on(placement):
            model = load_model(directory, allow_missing)
        return place(model, placement)
    d, cfg_path, config = _open_model_dir(directory)
    if config.base_checkpoint:  # a 7B directory: base weights from a local LLaVA-OneVision checkpoint, heads from here
        from engine.model.llava_onevision import load_from_llava_onevision

        heads = d / "model.safetensors"
        model = load_from_llava_onevision(config, _base_dir(d, cfg_path, config.base_checkpoint),
                                          heads if heads.is_file() else None)
        if (d / "adapters.safetensors").is_file():  # LoRA adapters from training: merged into the LLM's weights once, here
            from engine.model.lora import load_lora

            load_lora(model.language_model, d, merge=True)
        return model.eval()
    for name in ("model.safetensors", "tokenizer.json"):
        if not (d / name).is_file():
            raise CheckpointError(f"{d}: missing {name}")
    tok = load_tokenizer(d / "tokenizer.json")
    model = build_spacevllm(config, tok)
    state = read_safetensors(d / "model.safetensors")
    expected = model.state_dict()
    kept = {k: v for k, v in expected.items() if k not in state and k.startswith(allow_missing)} if allow_missing else {}
    if kept:
        log.warning("keeping %d newly added tensors at initialisation: %s", len(kept), sorted(kept))
    kept.update(optional_left_out(expected, state, config))
    check_state(expected, {**state, **kept}, str(d / "model.safetensors"))
    model.load_state_dict({**state, **kept})
    return model.eval()


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


def check_model_dir(directory: str | Path) -> str:
    """Check that a model directory would load (config, tokenizer, tensor names and shapes) without the cost of
    reading its weights; returns a one-line description. Raises CheckpointError with the reason."""
    d, cfg_path, config = _open_model_dir(directory)
    if config.base_checkpoint:
        base = _base_dir(d, cfg_path, config.base_checkpoint)
        if (d / "model.safetensors").is_file():
            safetensors_shapes(d / "model.safetensors")
        if (d / "adapters.safetensors").is_file():
            from engine.model.lora import read_lora_settings

            safetensors_shapes(d / "adapters.safetensors")
            lora = read_lora_settings(d)
            return f"{config.name} (heads and rank-{lora.rank} LoRA adapters in {d}, base {base})"
        return f"{config.name} (heads in {d}, base {base})"
    for name in ("model.safetensors", "tokenizer.json"):
        if not (d / name).is_file():
            raise CheckpointError(f"{d}: missing {name}")
    shapes = safetensors_shapes(d / "model.safetensors")
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = build_spacevllm(config, load_tokenizer(d / "tokenizer.json"))
    expected = {k: v for k, v in model.state_dict().items()}
    given = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    given.update(optional_left_out(expected, given, config))
    check_state(expected, given, str(d / "model.safetensors"))
    return f"{config.name} ({len(shapes)} tensors)"


def _base_dir(d: Path, cfg_path: Path, base: str) -> Path:
    path = Path(base) if Path(base).is_absolute() else d / base
    if not path.is_dir():
        raise CheckpointError(f"{cfg_path}: base_checkpoint {base!r} is not a local directory (nothing is downloaded)")
    return path


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


__all__ = ["CheckpointError", "SpaceVLLMConfig", "check_model_dir", "check_state", "file_sha256", "load_model", "save_model"]
