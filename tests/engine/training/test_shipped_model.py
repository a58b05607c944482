"""The shipped default model: it loads, and it beats the trivial baseline on freshly generated clips."""
from __future__ import annotations

from pathlib import Path

import pytest

from engine.contracts.settings import DEFAULT_MODEL_DIR

SHIPPED = Path(DEFAULT_MODEL_DIR)
pytestmark = pytest.mark.skipif(not (SHIPPED / "model.safetensors").is_file(), reason="models/tiny is not shipped yet")


def test_the_shipped_model_loads_with_its_tokenizer_and_config():
    from engine.model.checkpoint import load_model

    model = load_model(SHIPPED)
    assert model.config.name == "tiny" and model.config.max_frames == 16
    assert sum(f.stat().st_size for f in SHIPPED.iterdir()) <= 25 * 2**20
    assert (SHIPPED / "MODEL_CARD.md").is_file()


def _evaluate(tmp_path, n):
    from engine.training.data.formats import write_hcstvg_clips
    from engine.training.evaluate import evaluate

    anno = write_hcstvg_clips(tmp_path / "set", n, seed=99, seconds=8.0, negative_rate=0.2, fps_choices=(10,))
    return evaluate("hcstvg", anno, tmp_path / "set" / "videos", SHIPPED, tmp_path / "out")


def test_the_shipped_model_beats_the_trivial_baseline_on_20_clips(tmp_path):
    r = _evaluate(tmp_path, 20)
    base = r["baseline"]
    # (m_tIoU is only a few points above the whole-clip guess: see the model card)
    assert r["m_vIoU"] > base["m_vIoU"] + 0.05, r
    assert r["vIoU@0.3"] > base["vIoU@0.3"], r
    assert r["no_match_accuracy"] > base["no_match_accuracy"], r


@pytest.mark.slow
def test_the_shipped_model_on_100_clips(tmp_path):
    r = _evaluate(tmp_path, 100)
    assert r["m_vIoU"] > 2 * r["baseline"]["m_vIoU"], r
