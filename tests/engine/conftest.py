"""Fixtures for engine tests: a tiny LLaVA-OneVision base checkpoint saved with `save_pretrained`."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.model.config import DecoderConfig, SpaceVLLMConfig, VisionConfig
from engine.model.tokenizer import WORDS


def write_tiny_llava(directory: Path):
    """A random tiny LLaVA-OneVision (SigLIP 28 px / patch 4, Qwen2 hidden 32, 2 layers) in transformers format,
    with a word-level tokenizer over the scene words (so captions tokenise to real ids). Returns the model."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, Qwen2Config, SiglipVisionConfig

    torch.manual_seed(0)
    vision = SiglipVisionConfig(hidden_size=32, image_size=28, patch_size=4, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=64)
    text = Qwen2Config(vocab_size=120, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1)
    cfg = LlavaOnevisionConfig(vision_config=vision.to_dict(), text_config=text.to_dict())
    original = LlavaOnevisionForConditionalGeneration(cfg).eval()
    original.save_pretrained(directory)
    words = [w for w in WORDS if w not in ("none", "from", "to")]
    vocab = {w: i for i, w in enumerate(["w0"] + words + [f"w{i}" for i in range(len(words) + 1, 100)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(Path(directory) / "tokenizer.json"))
    return original


def llava_test_config(**overrides) -> SpaceVLLMConfig:
    """The SpaceVLLM config for the tiny base: SigLIP grid 7x7, pooled to 4x4 tokens per frame."""
    return SpaceVLLMConfig(**{"name": "llava-test", "vision": VisionConfig(kind="siglip", image_size=28, patch_size=4, grid=7),
                              "decoder": DecoderConfig(width=32, num_layers=1, num_heads=2), "pooled_grid": 4,
                              "max_frames": 8, **overrides})


@pytest.fixture
def llava_dir(tmp_path):
    """(directory, transformers model) of a tiny LLaVA-OneVision saved with save_pretrained."""
    directory = tmp_path / "llava"
    directory.mkdir()
    return directory, write_tiny_llava(directory)
