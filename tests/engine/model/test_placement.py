"""Device and dtype names -> torch placement; models built and moved there."""
from __future__ import annotations

import pytest
import torch

from engine.model.placement import Placement, PlacementError, building_on, place, placement_of, resolve_placement


def test_resolve_placement_when_defaults_is_cpu_float32_and_changes_nothing(tiny_model):
    p = resolve_placement("cpu", "float32")
    assert p == Placement(torch.device("cpu"), torch.float32) and p.is_default
    assert place(tiny_model, p) is tiny_model


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only answer")
def test_resolve_placement_when_auto_without_cuda_is_the_cpu():
    assert resolve_placement("auto", "bfloat16").device == torch.device("cpu")


@pytest.mark.parametrize("device, dtype, message", [
    ("gpu", "float32", "auto, cpu, cuda or cuda:N"),
    ("cuda:x", "float32", "auto, cpu, cuda or cuda:N"),
    ("cpu", "float64", "dtype must be one of"),
    ("cpu", "float16", "use bfloat16"),
])
def test_resolve_placement_when_the_names_cannot_work_refuses_with_the_reason(device, dtype, message):
    with pytest.raises(PlacementError, match=message):
        resolve_placement(device, dtype)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only answer")
def test_resolve_placement_when_cuda_is_asked_for_on_a_cpu_only_host_says_so():
    with pytest.raises(PlacementError, match="no CUDA device"):
        resolve_placement("cuda", "bfloat16")


def test_building_on_when_bfloat16_creates_modules_in_it_and_restores_the_default_dtype():
    with building_on(resolve_placement("cpu", "bfloat16")):
        layer = torch.nn.Linear(4, 4)
    assert layer.weight.dtype == torch.bfloat16 and torch.get_default_dtype() == torch.float32
    assert placement_of(layer) == Placement(torch.device("cpu"), torch.bfloat16)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_building_on_when_cuda_builds_the_model_on_the_gpu(tiny_config):
    from engine.model.spacevllm import build_spacevllm
    from engine.model.tokenizer import train_tokenizer

    where = resolve_placement("cuda", "bfloat16")
    with building_on(where):
        model = build_spacevllm(tiny_config, train_tokenizer(tiny_config.max_time_s))
    assert all(p.is_cuda and p.dtype == torch.bfloat16 for p in model.parameters())
    assert model.device.type == "cuda" and resolve_placement("auto", "float16").device.type == "cuda"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype, atol, score", [("float32", 1e-3, "answer_and_presence"), ("bfloat16", 0.1, "answer_and_presence"), ("float32", 1e-3, "match_head"),
                                                ("bfloat16", 0.1, "match_head")])
def test_ground_when_the_shipped_model_runs_on_cuda_matches_the_cpu_and_answers_on_the_host(dtype, atol, score):
    import dataclasses
    from pathlib import Path

    from engine.model.config import ScoreMode
    from engine.model.match_head import colour_grid

    from engine.model.checkpoint import load_model
    from engine.model.placement import resolve_placement

    shipped = Path(__file__).resolve().parents[3] / "models" / "tiny"
    questions = ["the red circle moving right", "the blue square", "the green triangle moving up"]
    ts = [k * 0.5 for k in range(8)]
    frames = torch.rand(2, 8, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    results = {}
    for device, dt in [("cpu", "float32"), ("cuda", dtype)]:
        # given the shipped model built on the device in the dtype (as the engine loads it)
        where = resolve_placement(device, dt)
        model = load_model(shipped, placement=where)
        if model.config.score is not ScoreMode(score):  # both score modes (the head as shipped, or initialised)
            model.config = dataclasses.replace(model.config, score=ScoreMode(score))
        px = frames.to(where.device, where.dtype)
        # when windows are grounded one at a time, as a batch, and from scratch
        single = [model.ground(model.encode_window(p, ts), questions) for p in px]
        tokens = torch.stack([model.encode_frames(p) for p in px])
        assert tokens.device == where.device and tokens.dtype == where.dtype
        colours = torch.stack([colour_grid(p) for p in px])  # what the grounder caches beside the tokens
        batch = model.ground_batch(model.encode_window_batch([ts, ts], tokens, colours), [questions, questions])
        scratch = model.ground_from_scratch(px[0], ts, questions[0])
        # then every answer is host floats and host tensors
        for g in [*single[0], *batch[1], scratch]:
            assert isinstance(g.score, float) and g.all_boxes_cxcywh.device.type == "cpu"
        results[device] = single
    # and the GPU's scores agree with the CPU's within float rounding (float32) or bfloat16's precision
    diffs = [abs(a.score - b.score) for wa, wb in zip(results["cpu"], results["cuda"]) for a, b in zip(wa, wb)]
    assert max(diffs) < atol, diffs
