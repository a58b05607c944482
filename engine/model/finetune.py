"""What a run on a base checkpoint (the 7B: LLaVA-OneVision weights) trains, and how its result is saved.

By default: the SpaceVLLM heads (STQ embeddings, motion, space decoder, ...), the projector, the rows of our
added prompt tokens, and LoRA adapters on the LLM's attention and MLP projections; the vision tower and the
LLM's own weights stay frozen (no gradients: `requires_grad` False). `train_vision` unfreezes the vision
tower; `lora=None` fine-tunes the whole LLM instead.

Saved (`save_finetuned`) beside a config.json that names the base directory:
* `model.safetensors`: the heads, `added_tokens.embed` / `added_tokens.lm_head`, and every base tensor that
  was trained in full (projector; vision tower with `train_vision`; the LLM without LoRA);
* `adapters.safetensors` + `adapter_config.json` (LoRA runs; see `lora.py`).
`checkpoint.load_model` rebuilds base + heads and merges the adapters; `load_for_training` rebuilds the
same with the adapters kept separate, to resume.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from engine.model.added_tokens import train_added_rows
from engine.model.config import SpaceVLLMConfig, save_config
from engine.model.llava_onevision import BASE_PARTS, base_vocab_size, load_from_llava_onevision
from engine.model.lora import ADAPTERS_FILE, LoraSettings, add_lora, load_lora, save_lora
from engine.model.model_dir import CheckpointError
from engine.model.spacevllm import SpaceVLLM

log = logging.getLogger(__name__)

HEADS_FILE = "model.safetensors"


@dataclass(frozen=True)
class FinetuneSettings:
    lora: LoraSettings | None = field(default_factory=LoraSettings)  # None: fine-tune the whole LLM
    train_vision: bool = False  # the vision tower stays frozen unless asked
    train_projector: bool = True


def prepare_for_finetune(model: SpaceVLLM, settings: FinetuneSettings, base_vocab: int, adapters_from: Path | None = None) -> None:
    """Freeze and add adapters in place. `adapters_from`: a run directory whose adapters continue training."""
    model.vision_tower.requires_grad_(settings.train_vision)
    model.projector.requires_grad_(settings.train_projector)
    llm = model.language_model
    if settings.lora is None:
        llm.requires_grad_(True)
        return
    if adapters_from is not None:
        load_lora(llm, adapters_from, merge=False)  # its own saved LoRA settings
    else:
        add_lora(llm, settings.lora)  # freezes the rest of the LLM
    k = model.tokenizer.get_vocab_size() - base_vocab
    train_added_rows(llm, base_vocab, k)


def load_for_training(config: SpaceVLLMConfig, settings: FinetuneSettings, resume_from: Path | None = None) -> SpaceVLLM:
    """The base checkpoint `config.base_checkpoint` (plus, to resume, the heads and adapters in `resume_from`),
    prepared for training."""
    base = Path(config.base_checkpoint)
    heads = resume_from / HEADS_FILE if resume_from is not None else None
    if heads is not None and not heads.is_file():
        raise CheckpointError(f"{resume_from}: missing {HEADS_FILE} to resume from")
    model = load_from_llava_onevision(config, base, heads)
    adapters = resume_from if resume_from is not None and (resume_from / ADAPTERS_FILE).is_file() else None
    if resume_from is not None and settings.lora is not None and adapters is None:
        raise CheckpointError(f"{resume_from}: a LoRA run needs {ADAPTERS_FILE} to resume (was it a full fine-tuning run?)")
    prepare_for_finetune(model, settings, base_vocab_size(base), adapters)
    return model


def trained_tensors(state: dict[str, torch.Tensor], trainable: set[str], base_vocab: int, n_added: int) -> dict[str, torch.Tensor]:
    """What `model.safetensors` holds for a base-checkpoint run (see the module docstring), from a full state
    dict (a plain model's, or one gathered from FSDP shards) and the names of the trainable parameters."""
    out = {k: v for k, v in state.items() if not k.startswith(BASE_PARTS)}
    out.update({k: state[k] for k in trainable
                if k.startswith(BASE_PARTS) and "lora_" not in k and not k.endswith(".added")})
    for key, prefix in (("added_tokens.embed", "language_model.model.embed_tokens"), ("added_tokens.lm_head", "language_model.lm_head")):
        wrapped = f"{prefix}.added"  # an AddedRows wrapper (LoRA runs)
        out[key] = state[wrapped] if wrapped in state else state[f"{prefix}.weight"][base_vocab : base_vocab + n_added]
    return {k: v.detach().float().cpu().contiguous().clone() for k, v in out.items()}  # clone: no views shared


def adapter_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The LoRA tensors of a full state dict, named as peft's `get_peft_model_state_dict` names them for the LLM."""
    out = {}
    for k, v in state.items():
        if "lora_" in k:
            name = k[len("language_model."):]
            for part in ("lora_A", "lora_B"):
                name = name.replace(f".{part}.default.", f".{part}.")
            out[name] = v.detach().cpu().contiguous()
    return out


def save_finetuned(model: SpaceVLLM, directory: Path, state: dict[str, torch.Tensor] | None = None,
                   trainable: set[str] | None = None) -> Path:
    """config.json (naming the base directory), model.safetensors, and the adapters of a LoRA run. `state` and
    `trainable` (parameter names): the gathered full state dict and the names taken before wrapping, when
    `model`'s own parameters are shards (FSDP); default `model.state_dict()` and its trainable parameters."""
    assert model.config.base_checkpoint, "only runs on a base checkpoint save heads and adapters"
    directory.mkdir(parents=True, exist_ok=True)
    save_config(model.config, directory / "config.json")
    state = state if state is not None else model.state_dict()
    base_vocab = base_vocab_size(model.config.base_checkpoint)
    trainable = trainable if trainable is not None else {n for n, p in model.named_parameters() if p.requires_grad}
    heads = trained_tensors(state, trainable, base_vocab, model.tokenizer.get_vocab_size() - base_vocab)
    save_file(heads, str(directory / HEADS_FILE), metadata={"format": "pt", "model": model.config.name})
    llm = model.language_model
    if hasattr(llm, "peft_config"):
        cfg = llm.peft_config["default"]
        settings = LoraSettings(rank=cfg.r, alpha=float(cfg.lora_alpha), dropout=float(cfg.lora_dropout),
                                target_modules=tuple(sorted(cfg.target_modules)))
        save_lora(settings, directory, adapter_tensors(state))
    return directory
