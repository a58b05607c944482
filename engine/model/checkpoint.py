"""Checkpoint I/O: a model directory holds `config.json`, `model.safetensors`, `tokenizer.json`.

A directory whose config names a `base_checkpoint` (the 7B) holds only what training made: `model.safetensors`
with the SpaceVLLM heads (and any base tensor training changed), and, after a LoRA run, `adapters.safetensors`
+ `adapter_config.json`. Loading builds the base, loads the heads, and merges the adapters into the LLM.

Opening a directory, reading its files and checking them against the model: `model_dir.py`.
The 7B config's base weights come from a local LLaVA-OneVision directory (see `llava_onevision.py`).
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import save_file

from engine.model.config import SpaceVLLMConfig, save_config
from engine.model.llava_onevision import load_from_llava_onevision
from engine.model.lora import ADAPTERS_FILE, load_lora, read_lora_settings
from engine.model.model_dir import (CheckpointError, check_state, open_model_dir, optional_left_out, read_safetensors,
                                    safetensors_shapes)
from engine.model.placement import Placement, building_on, place
from engine.model.spacevllm import SpaceVLLM, build_spacevllm
from engine.model.tokenizer import load_tokenizer

log = logging.getLogger(__name__)


def save_model(model: SpaceVLLM, directory: str | Path) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    save_config(model.config, d / "config.json")
    model.tokenizer.save(str(d / "tokenizer.json"))
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt", "model": model.config.name})
    return d


def load_model(directory: str | Path, allow_missing: tuple[str, ...] = (), placement: Placement | None = None) -> SpaceVLLM:
    """Load a model directory. `allow_missing`: name prefixes of parameters a newer architecture added
    (kept at their initialisation; training resumes use it, inference never does). `placement`: build the model
    on that device in that dtype (a 7B model is never materialised in float32 on the host first) and place it there."""
    if placement is not None:
        with building_on(placement):
            model = load_model(directory, allow_missing)
        return place(model, placement)
    md = open_model_dir(directory)
    d, config = md.path, md.config
    if config.base_checkpoint:  # a 7B directory: base weights from a local LLaVA-OneVision checkpoint, heads from here
        heads = d / "model.safetensors"
        model = load_from_llava_onevision(config, md.base_dir(), heads if heads.is_file() else None)
        if (d / ADAPTERS_FILE).is_file():  # LoRA adapters from training: merged into the LLM's weights once, here
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


def check_model_dir(directory: str | Path) -> str:
    """Check that a model directory would load (config, tokenizer, tensor names and shapes) without the cost of
    reading its weights; returns a one-line description. Raises CheckpointError with the reason."""
    md = open_model_dir(directory)
    d, config = md.path, md.config
    if config.base_checkpoint:
        base = md.base_dir()
        if (d / "model.safetensors").is_file():
            safetensors_shapes(d / "model.safetensors")
        if (d / ADAPTERS_FILE).is_file():
            safetensors_shapes(d / ADAPTERS_FILE)
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


__all__ = ["CheckpointError", "SpaceVLLMConfig", "check_model_dir", "load_model", "save_model"]
