"""Our LLaVA-OneVision loader against transformers' own model, on a tiny one saved to a temp dir."""
from __future__ import annotations

import pytest
import torch

from engine.model.checkpoint import CheckpointError
from engine.model.llava_onevision import load_from_llava_onevision
from tests.engine.conftest import llava_test_config


def _config():
    return llava_test_config()


def test_loaded_vision_and_llm_outputs_equal_the_originals(llava_dir):
    # given a tiny LLaVA-OneVision saved with save_pretrained
    directory, original = llava_dir
    # when our loader reads the directory
    model = load_from_llava_onevision(_config(), directory)
    pixels = torch.rand(3, 3, 28, 28)
    ids = torch.tensor([[1, 5, 9, 42, 99]])
    with torch.no_grad():
        theirs_vis = original.model.vision_tower((pixels - 0.5) / 0.5, output_hidden_states=True).hidden_states[-1]
        theirs_proj = original.model.multi_modal_projector(theirs_vis)
        theirs_logits = original.lm_head(original.model.language_model(input_ids=ids).last_hidden_state)
        ours_vis = model.vision_tower(pixels)
        ours_proj = model.projector(ours_vis)
        ours_logits = model.language_model(input_ids=ids).logits[..., : theirs_logits.shape[-1]]
    # then vision features, projected tokens and LLM logits are equal
    assert torch.allclose(ours_vis, theirs_vis, atol=1e-5)
    assert torch.allclose(ours_proj, theirs_proj, atol=1e-5)
    assert torch.allclose(ours_logits, theirs_logits, atol=1e-5)
    # and the prompt tokens were added to the checkpoint's tokenizer
    assert model.tokenizer.token_to_id("<st>") is not None and model.tokenizer.token_to_id("2.5") is not None


def test_loading_when_a_tensor_is_missing_or_misshaped_names_it(llava_dir):
    from safetensors.torch import load_file, save_file

    directory, _ = llava_dir
    state = load_file(str(directory / "model.safetensors"))
    proj = next(k for k in state if k.endswith("multi_modal_projector.linear_1.weight"))
    del state[proj]
    norm = next(k for k in state if k.endswith("language_model.model.norm.weight") or k.endswith("language_model.norm.weight"))
    state[norm] = torch.zeros(7)
    save_file(state, str(directory / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        load_from_llava_onevision(_config(), directory)
    assert "projector.linear_1.weight" in str(err.value) and "norm.weight: expected (32,), got (7,)" in str(err.value)


def test_loading_refuses_pickle_files(llava_dir):
    directory, _ = llava_dir
    (directory / "pytorch_model.bin").write_bytes(b"not really")
    with pytest.raises(CheckpointError, match="refusing pickle"):
        load_from_llava_onevision(_config(), directory)


def test_load_model_routes_a_directory_with_base_checkpoint_to_the_llava_loader(llava_dir, tmp_path):
    import dataclasses

    from engine.model.checkpoint import load_model
    from engine.model.config import save_config

    directory, original = llava_dir
    d = tmp_path / "spacevllm-7b-heads"
    d.mkdir()
    save_config(dataclasses.replace(_config(), base_checkpoint=str(directory)), d / "config.json")
    model = load_model(d)
    ids = torch.tensor([[3, 4, 5]])
    with torch.no_grad():
        theirs = original.lm_head(original.model.language_model(input_ids=ids).last_hidden_state)
        ours = model.language_model(input_ids=ids).logits[..., : theirs.shape[-1]]
    assert torch.allclose(ours, theirs, atol=1e-5)
    save_config(dataclasses.replace(_config(), base_checkpoint="/nowhere/llava"), d / "config.json")
    with pytest.raises(CheckpointError, match="not a local directory"):
        load_model(d)
