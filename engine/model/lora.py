"""LoRA adapters on the language model (via `peft`), saved as safetensors beside a JSON config.

A model directory trained with adapters holds `adapters.safetensors` (peft's adapter tensors, names relative
to the LLM: `model.layers.0.self_attn.q_proj.lora_A.weight`, ...) and `adapter_config.json`
(`{"rank", "alpha", "dropout", "target_modules"}`). Training keeps the adapters separate (only they get
gradients); inference merges them into the base weights once at load (`merge=True`): the LLM then runs at
exactly the base model's cost, with no adapter layers left.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from safetensors.torch import save_file
from torch import nn

from engine.model.model_dir import CheckpointError, read_safetensors

log = logging.getLogger(__name__)

ADAPTERS_FILE = "adapters.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")  # Qwen2's feed-forward projections


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 16
    alpha: float = 32.0  # scaling alpha / rank = 2, peft's usual
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ATTENTION + MLP

    def to_dict(self) -> dict:
        return {**asdict(self), "target_modules": list(self.target_modules)}

    @classmethod
    def from_dict(cls, data: dict) -> LoraSettings:
        return cls(rank=int(data["rank"]), alpha=float(data["alpha"]), dropout=float(data["dropout"]),
                   target_modules=tuple(data["target_modules"]))


def add_lora(llm: nn.Module, settings: LoraSettings) -> None:
    """Inject LoRA layers into `llm` in place. peft freezes every other parameter of `llm`."""
    assert settings.rank > 0, "LoRA rank must be positive"
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=list(settings.target_modules), bias="none")
    inject_adapter_in_model(config, llm)


def lora_state(llm: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors of `llm` (peft's names, without the adapter name)."""
    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(llm).items()}


def save_lora(settings: LoraSettings, directory: Path, state: dict[str, torch.Tensor]) -> None:
    """The adapter tensors (`lora_state`, or gathered from a sharded run) and their settings, beside the heads."""
    save_file(state, str(directory / ADAPTERS_FILE), metadata={"format": "pt"})
    (directory / ADAPTER_CONFIG_FILE).write_text(json.dumps(settings.to_dict(), indent=2) + "\n")


def read_lora_settings(directory: Path) -> LoraSettings:
    path = directory / ADAPTER_CONFIG_FILE
    try:
        return LoraSettings.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: not a readable adapter config ({exc!r})") from None


def load_lora(llm: nn.Module, directory: Path, merge: bool) -> LoraSettings:
    """Add the adapters saved in `directory` to `llm` and load their weights. `merge`: fold them into the
    base weights and remove the adapter layers (inference); else keep them trainable (resuming a run)."""
    settings = read_lora_settings(directory)
    state = read_safetensors(directory / ADAPTERS_FILE)
    add_lora(llm, settings)
    expected = set(lora_state(llm))
    if set(state) != expected:
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        raise CheckpointError(f"{directory / ADAPTERS_FILE}: adapters do not fit the model (missing {missing[:5]}, unexpected {unexpected[:5]})")
    result = set_peft_model_state_dict(llm, state)
    assert not getattr(result, "unexpected_keys", None), result
    if merge:
        merge_lora(llm)
    return settings


def merge_lora(llm: nn.Module) -> None:
    """Fold every LoRA layer of `llm` into its base layer and put the base layer back in its place."""
    for name, module in list(llm.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(llm.get_submodule(parent_name) if parent_name else llm, child, module.get_base_layer())
    if hasattr(llm, "peft_config"):
        del llm.peft_config
