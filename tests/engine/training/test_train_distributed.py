"""Training across processes: `torchrun --nproc_per_node 2` (gloo, CPU) on a mixture of the four formats over a
tiny LLaVA-OneVision base; its checkpoint in the engine; resuming it in one process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.training.data.sample_sets import write_format_samples, write_mixture
from engine.model.config import save_config
from tests.engine.conftest import llava_test_config, write_tiny_llava

REPO = Path(__file__).resolve().parents[3]
STEPS, BATCH, FRAMES = 8, 4, 4


def _train_args(root: Path, out: str, steps: int = STEPS) -> list[str]:
    """`spacevllm train` on the tiny base and the mixture under `root`."""
    return ["-m", "engine.app.cli", "train", "--config", str(root / "model.json"), "--base", str(root / "llava"),
            "--mixture", str(root / "mix.yaml"), "--out", str(root / out), "--steps", str(steps), "--batch-size", str(BATCH),
            "--frames", str(FRAMES), "--lr", "3e-3", "--warmup", "1", "--seed", "0"]


def _torchrun(root: Path, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    proc = subprocess.run(cmd, check=False, cwd=root, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """A 2-process torchrun (gloo) of `spacevllm train` on the mixture: its output directory and timings."""
    root = tmp_path_factory.mktemp("ddp")
    (root / "llava").mkdir()
    write_tiny_llava(root / "llava")
    write_mixture(root / "mix.yaml", write_format_samples(root / "data", n=3, seed=1, seconds=2.0))
    save_config(llava_test_config(max_time_s=20.0), root / "model.json")
    started = time.monotonic()
    proc = _torchrun(root, _train_args(root, "out") + ["--grad-accum", "2", "--workers", "1", "--write-digests"])
    return root, proc, time.monotonic() - started


def _fixed_batches(model, root):
    """The first steps' whole global batches of the mixture, collated for `model`."""
    from engine.training.data.mixture import MixtureSteps, load_mixture
    from engine.training.data.steps import Collator, Shard

    collator = Collator(model.vocab, model.tokenizer, model.config.tokens_per_frame)
    ds = MixtureSteps(load_mixture(root / "mix.yaml"), 0, BATCH, FRAMES, model.config.vision.image_size,
                      model.config.max_time_s, collator, Shard(), steps=STEPS)
    return [ds[s][0] for s in range(4)]


@torch.no_grad()
def _loss(model, batches) -> float:
    from engine.model.losses import SpaceVLLMCriterion

    model.eval()
    crit = SpaceVLLMCriterion(model.config.loss, model.vocab.time_ids, model.language_model.config.vocab_size, model.config.frame_grid)
    total = 0.0
    for b in batches:
        out = model(b.pixels, b.input_ids, b.attention_mask, b.question_index, b.question_mask)
        total += float(crit(out.logits, b.labels, out.decoder, b.boxes_cxcywh, b.box_mask, b.presence, out.answer_presence_logits).total)
    return total / len(batches)


def test_torchrun_two_processes_train_the_mixture_and_hold_identical_weights(ddp_run):
    root, proc, seconds = ddp_run
    out = root / "out"
    # then both ranks ran every step and hold the same weights
    digests = [json.loads((out / "digests" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(d["rank"], d["world_size"], d["step"]) for d in digests] == [(0, 2, STEPS), (1, 2, STEPS)]
    assert digests[0]["all"] == digests[1]["all"] and digests[0]["trainable"] == digests[1]["trainable"]
    # and rank 0 alone logged and checkpointed: one log line per step, heads + adapters beside the config
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1))
    assert {"config.json", "model.safetensors", "adapters.safetensors", "adapter_config.json", "train_state.json"} <= {
        p.name for p in out.iterdir()}
    assert proc.stderr.count("mixture source hcstvg") == 1
    assert seconds < 60, f"the torchrun test took {seconds:.0f} s"


def test_torchrun_training_lowers_the_loss_on_the_batches_it_saw(ddp_run):
    from engine.model.checkpoint import load_model
    from engine.model.config import load_config
    from engine.training.train import TrainSettings, build_model

    root, _, _ = ddp_run
    # given the model as training built it (seed 0) and the trained checkpoint as the engine loads it
    torch.manual_seed(0)
    before = build_model(load_config(root / "out" / "config.json"), root / "out", TrainSettings(), False, None)
    after = load_model(root / "out")
    batches = _fixed_batches(after, root)
    # then the loss on the first steps' batches fell
    first, last = _loss(before, batches), _loss(after, batches)
    assert last < 0.9 * first, (first, last)


def test_the_torchrun_checkpoint_grounds_a_window_in_the_engine(ddp_run):
    from engine.training.data.mixture import load_mixture, read_frames
    from engine.model.checkpoint import check_model_dir, load_model

    root, _, _ = ddp_run
    # given the checkpoint (base + heads + merged adapters) and a window of a fixture clip
    assert "LoRA adapters" in check_model_dir(root / "out")
    model = load_model(root / "out")
    item = load_mixture(root / "mix.yaml").sources[0].items[0]
    idx = [int(k * item.n_frames / FRAMES) for k in range(FRAMES)]
    frames = read_frames(item, root / "mix.yaml", idx, model.config.vision.image_size)
    pixels = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    # when the engine encodes the window and grounds a question
    (g,) = model.ground(model.encode_window(pixels, [i / item.fps for i in idx]), [item.caption])
    # then it answers with a score, a span inside the window and a box per frame of the span
    assert 0.0 <= g.score <= 1.0 and 0.0 <= g.span_s[0] <= g.span_s[1]
    assert len(g.boxes_cxcywh) == len(g.frame_indices) and all(0 <= v <= 1 for b in g.boxes_cxcywh for v in b)


def test_a_two_process_run_resumes_in_one_process(ddp_run, tmp_path):
    import shutil

    from safetensors.torch import load_file

    from engine.model.config import load_config
    from engine.training.train import TrainSettings, train

    root, _, _ = ddp_run
    out = tmp_path / "resumed"
    shutil.copytree(root / "out", out)
    # when the run continues for 2 more steps in this one process (no grad accumulation)
    settings = TrainSettings(steps=STEPS + 2, batch_size=BATCH, frames=FRAMES, lr=3e-3, warmup=1, seed=0,
                             mixture=str(root / "mix.yaml"), workers=0)
    train(load_config(out / "config.json"), out, settings, resume=True)
    # then it went on from step STEPS, with the optimizer state the two processes saved
    assert json.loads((out / "train_state.json").read_text())["step"] == STEPS + 2
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 3))
    moments = load_file(str(out / "train_state.safetensors"))
    lora_steps = {float(v) for k, v in moments.items() if "lora_A" in k and k.endswith("::step")}
    assert lora_steps == {float(STEPS + 2)}


def test_torchrun_with_fsdp_trains_and_its_checkpoint_loads_in_the_engine(ddp_run):
    from engine.model.checkpoint import load_model

    root, _, _ = ddp_run
    # given the same base and mixture, sharded over 2 processes with FSDP (gloo on the CPU)
    _torchrun(root, _train_args(root, "fsdp", steps=2) + ["--workers", "0", "--fsdp"])
    # then rank 0 gathered the full state into a checkpoint at step 2 that the engine loads and grounds with
    assert json.loads((root / "fsdp" / "train_state.json").read_text())["step"] == 2
    model = load_model(root / "fsdp")
    (g,) = model.ground(model.encode_window(torch.rand(FRAMES, 3, 28, 28), [0.0, 0.5, 1.0, 1.5]), ["the red circle"])
    assert 0.0 <= g.score <= 1.0
