"""Fine-tuning a base checkpoint: what is frozen, LoRA adapters and heads saved and loaded back."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from engine.training.data.collate import collate
from engine.training.data.synthetic import make_sample
from engine.model.checkpoint import load_model
from engine.model.finetune import FinetuneSettings, load_for_training, save_finetuned
from engine.model.lora import LoraSettings
from engine.model.losses import SpaceVLLMCriterion
from tests.engine.conftest import llava_test_config


def _config(directory):
    return llava_test_config(max_time_s=20.0, base_checkpoint=str(directory))


def _batch(model, task="stvg", seed=3):
    samples = [make_sample(seed + i, task, frames=4, size=28, negative_rate=0.3) for i in range(2)]
    return collate(samples, model.vocab, model.tokenizer, model.config.tokens_per_frame)


def _outputs(model, batch):
    with torch.no_grad():
        out = model(batch.pixels, batch.input_ids, batch.attention_mask, batch.question_index, batch.question_mask)
    return out.logits[..., : model.tokenizer.get_vocab_size()], out.decoder.boxes_cxcywh


def _trained(llava_dir, settings):
    """A model prepared for fine-tuning whose trainable weights all moved (as after some training)."""
    torch.manual_seed(0)
    model = load_for_training(_config(llava_dir[0]), settings)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def test_frozen_parts_get_no_gradients_and_trained_parts_do(llava_dir):
    # given a LoRA fine-tuning model on the tiny base (vision frozen by default)
    model = load_for_training(_config(llava_dir[0]), FinetuneSettings(lora=LoraSettings(rank=4)))
    model.train()
    # when one batch's loss is back-propagated
    batch = _batch(model)
    crit = SpaceVLLMCriterion(model.config.loss, model.vocab.time_ids, model.language_model.config.vocab_size, model.config.frame_grid)
    out = model(batch.pixels, batch.input_ids, batch.attention_mask, batch.question_index, batch.question_mask)
    crit(out.logits, batch.labels, out.decoder, batch.boxes_cxcywh, batch.box_mask, batch.presence,
         out.answer_presence_logits).total.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    # then the vision tower and the LLM's own weights have no gradient at all
    frozen = [n for n in grads if n.startswith("vision_tower.") or (n.startswith("language_model.") and "lora_" not in n
                                                                     and not n.endswith(".added"))]
    assert frozen and all(grads[n] is None for n in frozen)
    assert all(not p.requires_grad for n, p in model.named_parameters() if n in frozen)
    # and the adapters, the added token rows, the projector and the heads have one (the frame queries: a video batch)
    trained = [n for n in grads if "lora_B" in n or n.endswith(".added") or n == "stq" or n.startswith(("projector.", "space_decoder."))]
    assert any("lora_B" in n for n in trained) and sum(n.endswith(".added") for n in trained) == 2
    assert all(grads[n] is not None for n in trained)


def test_lora_checkpoint_round_trip_gives_the_trained_outputs(llava_dir, tmp_path):
    # given a LoRA run's model with moved adapters, heads and added rows, saved as heads + adapters
    model = _trained(llava_dir, FinetuneSettings(lora=LoraSettings(rank=4, dropout=0.0)))
    save_finetuned(model, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["adapter_config.json", "adapters.safetensors",
                                                                       "config.json", "model.safetensors"]
    batch = _batch(model)
    want_logits, want_boxes = _outputs(model, batch)
    # when the engine loads it (adapters merged into the LLM) and a resumed run loads it (adapters kept apart)
    merged = load_model(tmp_path / "run")
    resumed = load_for_training(_config(llava_dir[0]), FinetuneSettings(lora=LoraSettings(rank=4, dropout=0.0)), tmp_path / "run").eval()
    # then the merged model has no adapter layers and gives the same outputs (float rounding of the merge)
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    logits, boxes = _outputs(merged, batch)
    assert torch.allclose(logits, want_logits, atol=1e-5) and torch.allclose(boxes, want_boxes, atol=1e-5)
    # and the resumed model gives exactly the same outputs
    logits, boxes = _outputs(resumed, batch)
    assert torch.equal(logits, want_logits) and torch.equal(boxes, want_boxes)


def test_full_fine_tuning_saves_the_llm_and_loads_back_identically(llava_dir, tmp_path):
    model = _trained(llava_dir, FinetuneSettings(lora=None, train_vision=True))
    save_finetuned(model, tmp_path / "run")
    assert not (tmp_path / "run" / "adapters.safetensors").exists()
    batch = _batch(model)
    loaded = load_model(tmp_path / "run")
    for got, want in zip(_outputs(loaded, batch), _outputs(model, batch)):
        assert torch.equal(got, want)


def test_an_image_batch_runs_through_the_lora_model(llava_dir):
    model = _trained(llava_dir, FinetuneSettings(lora=LoraSettings(rank=4)))
    logits, boxes = _outputs(model, _batch(model, task="rec"))
    assert boxes.shape == (2, 1, 4) and torch.isfinite(logits).all()


def test_heads_file_with_a_tensor_the_model_lacks_is_refused(llava_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    from engine.model.checkpoint import CheckpointError

    model = _trained(llava_dir, FinetuneSettings(lora=LoraSettings(rank=4)))
    save_finetuned(model, tmp_path / "run")
    heads = load_file(str(tmp_path / "run" / "model.safetensors"))
    heads["projector.extra.weight"] = torch.zeros(2)
    save_file(heads, str(tmp_path / "run" / "model.safetensors"))
    with pytest.raises(CheckpointError, match="base tensors the model lacks \\['projector.extra.weight'\\]"):
        load_model(tmp_path / "run")


def test_adapter_settings_are_read_from_the_run_not_the_flags(llava_dir, tmp_path):
    model = _trained(llava_dir, FinetuneSettings(lora=LoraSettings(rank=4)))
    save_finetuned(model, tmp_path / "run")
    resumed = load_for_training(_config(llava_dir[0]), FinetuneSettings(lora=LoraSettings(rank=8)), tmp_path / "run")
    assert resumed.language_model.peft_config["default"].r == 4
    assert dataclasses.asdict(LoraSettings.from_dict(LoraSettings(rank=4).to_dict())) == dataclasses.asdict(LoraSettings(rank=4))


def test_a_heads_file_of_the_older_format_still_loads(llava_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    # given a heads file with only STQ, motion, space decoder and added rows (before answer/decoder words, the probe)
    model = _trained(llava_dir, FinetuneSettings(lora=None))
    save_finetuned(model, tmp_path / "run")
    heads = load_file(str(tmp_path / "run" / "model.safetensors"))
    old = {k: v for k, v in heads.items() if k.startswith(("stq", "motion.", "space_decoder.", "added_tokens."))}
    save_file(old, str(tmp_path / "run" / "model.safetensors"))
    # when loaded, then those tensors are the saved ones and the newer additions keep their initialisation
    loaded = load_model(tmp_path / "run")
    assert torch.equal(loaded.stq, old["stq"]) and not loaded.answer_words.weight.detach().any()
