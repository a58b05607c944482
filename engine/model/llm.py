"""The language model: transformers' Qwen2ForCausalLM, built from config (tiny) or loaded (7B)."""
from __future__ import annotations

from transformers import Qwen2Config, Qwen2ForCausalLM

from engine.model.config import LLMConfig


def qwen2_config(cfg: LLMConfig, vocab_size: int) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_theta=cfg.rope_theta,
        tie_word_embeddings=False,
        attn_implementation="sdpa",
    )


def build_llm(cfg: LLMConfig, vocab_size: int) -> Qwen2ForCausalLM:
    return Qwen2ForCausalLM(qwen2_config(cfg, vocab_size))
