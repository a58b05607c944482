"""Load SpaceVLLM's base weights from a local LLaVA-OneVision / LLaVA-Video checkpoint.

The directory is a transformers-format `LlavaOnevisionForConditionalGeneration` checkpoint
(`config.json`, `*.safetensors`, `tokenizer.json`): its vision tower, projector and language
model map onto ours; the SpaceVLLM heads (STQ embeddings, space decoder, rows of the added
prompt tokens) come from a separate safetensors file. Nothing is fetched from a hub and
pickle files are refused.
"""
from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import torch
from safetensors import safe_open
from tokenizers import AddedToken, Tokenizer
from transformers import Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig, SiglipVisionModel

from engine.model.config import SpaceVLLMConfig
from engine.model.model_dir import CheckpointError, check_state, optional_left_out, read_safetensors, refuse_pickle
from engine.model.preprocess import PreprocessorError, base_preprocessor
from engine.model.space_decoder import build_space_decoder
from engine.model.spacevllm import SpaceVLLM
from engine.model.tokenizer import SPECIAL_TOKENS, time_tokens
from engine.model.vision import SiglipEncoder

log = logging.getLogger(__name__)

# prompt words the constrained decoder needs as single tokens
GRAMMAR_TOKENS = ["none", "from", "to"]
BASE_PARTS = ("vision_tower.", "projector.", "language_model.")  # what the base checkpoint provides
ADDED_ROWS = ("added_tokens.embed", "added_tokens.lm_head")


def map_key(key: str) -> str | None:
    """A LLaVA-OneVision tensor name -> ours (None: not used). Accepts the legacy and the v5 layouts."""
    for prefix in ("model.", ""):
        if key.startswith(prefix + "vision_tower."):
            rest = key[len(prefix + "vision_tower."):]
            rest = rest[len("vision_model."):] if rest.startswith("vision_model.") else rest
            if rest.startswith("head."):
                return None  # the attention-pooling head is unused by LLaVA (strategy "full")
            return "vision_tower.model." + rest
        if key.startswith(prefix + "multi_modal_projector."):
            return "projector." + key[len(prefix + "multi_modal_projector."):]
    if key.startswith("language_model.model.") or key.startswith("language_model.lm_head."):
        return key
    if key.startswith("model.language_model."):
        return "language_model.model." + key[len("model.language_model."):]
    if key.startswith("lm_head."):
        return "language_model." + key
    if key.endswith("image_newline"):
        return None
    return "<unmapped>." + key


def read_base_state(directory: Path) -> dict[str, torch.Tensor]:
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{directory}: no .safetensors weight files")
    state = {}
    for f in files:
        with safe_open(str(f), "pt") as sf:
            for k in sf.keys():
                mapped = map_key(k)
                if mapped is not None:
                    state[mapped] = sf.get_tensor(k)
    return state


def load_prompt_tokenizer(directory: Path, max_time_s: float) -> tuple[Tokenizer, int]:
    """The checkpoint's tokenizer plus our prompt tokens (specials, grammar words, time tokens)."""
    path = directory / "tokenizer.json"
    if not path.is_file():
        raise CheckpointError(f"{directory}: missing tokenizer.json")
    tok = Tokenizer.from_file(str(path))
    base = tok.get_vocab_size()
    tok.add_special_tokens([AddedToken(t, special=True) for t in SPECIAL_TOKENS if tok.token_to_id(t) is None])
    tok.add_tokens([AddedToken(t, single_word=True) for t in GRAMMAR_TOKENS + time_tokens(max_time_s)])
    return tok, base


def load_from_llava_onevision(config: SpaceVLLMConfig, directory: str | Path, heads: str | Path | None = None) -> SpaceVLLM:
    d = Path(directory)
    if not d.is_dir():
        raise CheckpointError(f"base checkpoint directory {d} does not exist")
    refuse_pickle(d)
    raw = json.loads((d / "config.json").read_text())
    vcfg = SiglipVisionConfig(**{k: v for k, v in raw["vision_config"].items() if k not in ("model_type",)})
    vcfg.vision_use_head = False
    tcfg = Qwen2Config(**{k: v for k, v in raw["text_config"].items() if k not in ("model_type",)})
    tok, base_vocab = load_prompt_tokenizer(d, config.max_time_s)
    try:  # size, filter and mean/std of the frames the base was trained on (its preprocessor_config.json)
        pre = base_preprocessor(config, d)
    except PreprocessorError as exc:
        raise CheckpointError(str(exc)) from None
    if pre.size != vcfg.image_size:
        raise CheckpointError(f"{d}: preprocessor size {pre.size} but the vision tower reads {vcfg.image_size} px")
    vision = SiglipEncoder(SiglipVisionModel(vcfg), feature_layer=int(raw.get("vision_feature_layer", -1)), preprocessor=pre)
    llm = Qwen2ForCausalLM(tcfg)
    decoder = build_space_decoder(tcfg.hidden_size, config.decoder, config.frame_grid)
    model = SpaceVLLM(config, tok, vision, llm, decoder)
    state = read_base_state(d)
    if any(k.startswith("vision_tower.model.vision_model.") for k in model.state_dict()):  # transformers 4.x layout
        state = {("vision_tower.model.vision_model." + k[len("vision_tower.model."):] if k.startswith("vision_tower.model.") else k): v
                 for k, v in state.items()}
    expected = {k: v for k, v in model.state_dict().items() if k.startswith(BASE_PARTS)}
    check_state(expected, state, f"{d} (LLaVA-OneVision base)")
    model.load_state_dict(state, strict=False)
    # grow the embeddings for our prompt tokens; their rows come from the heads file when given
    n_vocab = max(tok.get_vocab_size(), tcfg.vocab_size)
    if n_vocab > llm.get_input_embeddings().weight.shape[0]:
        llm.resize_token_embeddings(n_vocab)
    if heads is not None:
        load_heads(model, heads, base_vocab)
    else:
        log.warning("no SpaceVLLM heads given: STQ embeddings, motion mixing and the space decoder are untrained")
    return model.eval()


def load_heads(model: SpaceVLLM, heads: str | Path, base_vocab: int) -> None:
    """Load a heads file into a model built on its base: every SpaceVLLM tensor outside the base parts
    (STQ embeddings, motion, space decoder, ...; training-only and zero-initialised additions may be absent),
    the rows of the added prompt tokens (`added_tokens.embed` / `added_tokens.lm_head`, rows from
    `base_vocab` on), and any base tensor training changed (projector, a trained vision tower, a fully
    fine-tuned LLM), which replaces the base's."""
    state = read_safetensors(Path(heads))
    rows = {k: state.pop(k) for k in ADDED_ROWS if k in state}
    overrides = {k: state.pop(k) for k in list(state) if k.startswith(BASE_PARTS)}
    full = model.state_dict()
    own = {k: v for k, v in full.items() if not k.startswith(BASE_PARTS)}
    kept = optional_left_out(own, state, model.config)
    check_state(own, {**state, **kept}, f"{heads} (SpaceVLLM heads)")
    unknown = sorted(k for k in overrides if k not in full)
    if unknown:
        raise CheckpointError(f"{heads} (SpaceVLLM heads): base tensors the model lacks {unknown[:20]}")
    check_state({k: full[k] for k in overrides}, overrides, f"{heads} (trained base tensors)")
    model.load_state_dict({**state, **overrides}, strict=False)
    if overrides:
        log.info("%d base tensors replaced by trained ones from %s", len(overrides), heads)
    if rows:
        llm = model.language_model
        with torch.no_grad():
            emb, lm = llm.get_input_embeddings().weight, llm.get_output_embeddings().weight
            k = rows["added_tokens.embed"].shape[0]
            emb[base_vocab : base_vocab + k] = rows["added_tokens.embed"]
            lm[base_vocab : base_vocab + k] = rows["added_tokens.lm_head"]


def base_vocab_size(directory: str | Path) -> int:
    """Tokens of the base checkpoint's own tokenizer: our prompt tokens' rows start there (read once per process:
    a 7B tokenizer.json is ~7 MB, and every checkpoint save asks)."""
    return _base_vocab_size(str(Path(directory).resolve()))


@functools.lru_cache(maxsize=8)
def _base_vocab_size(directory: str) -> int:
    path = Path(directory) / "tokenizer.json"
    if not path.is_file():
        raise CheckpointError(f"{directory}: missing tokenizer.json")
    return Tokenizer.from_file(str(path)).get_vocab_size()
