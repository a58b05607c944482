from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.model.checkpoint import CheckpointError, load_model, save_model


def test_save_then_load_gives_the_same_outputs(tiny_model, tmp_path):
    save_model(tiny_model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    px, ts = torch.rand(3, 3, 32, 32), [0.0, 0.5, 1.0]
    a = tiny_model.ground(tiny_model.encode_window(px, ts), ["the red circle"])[0]
    b = loaded.ground(loaded.encode_window(px, ts), ["the red circle"])[0]
    assert a.score == pytest.approx(b.score, abs=1e-6) and torch.allclose(a.all_boxes_cxcywh, b.all_boxes_cxcywh)


@pytest.mark.parametrize("damage, message", [
    ("missing_dir", "does not exist"),
    ("no_weights", "missing model.safetensors"),
    ("pickle", "refusing pickle"),
    ("misshaped", "mis-shaped tensors"),
    ("unexpected", "unexpected tensors"),
    ("bad_config", "unknown model config keys"),
    ("bad_score", "unknown score mode"),
])
def test_load_model_when_the_checkpoint_is_wrong_says_what(tiny_model, tmp_path, damage, message):
    d = save_model(tiny_model, tmp_path / "m")
    if damage == "missing_dir":
        d = tmp_path / "nope"
    elif damage == "no_weights":
        (d / "model.safetensors").unlink()
    elif damage == "pickle":
        torch.save({"x": torch.zeros(1)}, d / "model.pt")
    elif damage in ("misshaped", "unexpected"):
        state = load_file(str(d / "model.safetensors"))
        if damage == "misshaped":
            state["stq"] = torch.zeros(3, 3)
        else:
            state["surprise.weight"] = torch.zeros(1)
        save_file(state, str(d / "model.safetensors"))
    elif damage == "bad_config":
        (d / "config.json").write_text('{"name": "x", "colour": "red"}')
    elif damage == "bad_score":
        (d / "config.json").write_text('{"name": "x", "score": "vibes"}')
    with pytest.raises(CheckpointError, match=message):
        load_model(d)


@pytest.mark.parametrize("left_out", [("answer_probe_",), ("answer_words.", "decoder_words.")],
                         ids=["training-only probe", "zero-init question-word paths (older checkpoints)"])
def test_a_checkpoint_without_optional_tensors_loads_and_grounds_the_same(tiny_model, tmp_path, left_out):
    # given a saved model whose training-only probe, or whose (still zero) question-word paths, were left out
    d = save_model(tiny_model, tmp_path / "m")
    state = {k: v for k, v in load_file(str(d / "model.safetensors")).items() if not k.startswith(left_out)}
    save_file(state, str(d / "model.safetensors"))
    # when it is loaded
    loaded = load_model(d)
    # then it grounds exactly like the original
    px, ts = torch.rand(3, 3, 32, 32), [0.0, 0.5, 1.0]
    a = tiny_model.ground(tiny_model.encode_window(px, ts), ["the red circle"])[0]
    b = loaded.ground(loaded.encode_window(px, ts), ["the red circle"])[0]
    assert a.score == pytest.approx(b.score, abs=1e-6) and torch.allclose(a.all_boxes_cxcywh, b.all_boxes_cxcywh)
