"""A first start exports the ONNX graphs with one line of ours: the exporter libraries' chatter is held back for
the export's duration (and only then), and a CPU-only host is not warned about GPU providers it cannot have."""
from __future__ import annotations

import logging

import pytest

from engine.model.graphs import cached_export
from engine.serving.runtime.ort import choose_providers


def chatty_export(model_dir, out_dir):
    """What the torch.onnx exporter and its libraries log during one export (the real one: ~130 lines)."""
    for k in range(120):
        logging.getLogger("onnx_ir.passes.common.initializer_deduplication").info("Replaced initializer %d", k)
    logging.getLogger("onnxscript.optimizer._constant_folding").info("Skipping constant folding")
    logging.getLogger("torch.onnx._internal.exporter._registration").warning("torchvision is not installed")
    (out_dir / "vision_encoder.onnx").write_bytes(b"graph")


def test_cached_export_when_first_run_then_one_info_line_says_what_where_and_how_long(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.safetensors").write_bytes(b"weights")
    target = cached_export(tmp_path / "model", tmp_path / "cache", chatty_export)
    lines = [r for r in caplog.records]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    msg = lines[0].getMessage()
    assert lines[0].levelno == logging.INFO and lines[0].name == "engine.model.graphs"
    assert "ONNX" in msg and str(target) in msg and " s " in msg
    # and the libraries' own levels are back afterwards
    assert logging.getLogger("onnx_ir").level == logging.NOTSET and logging.getLogger("torch.onnx").level == logging.NOTSET
    logging.getLogger("onnx_ir.passes").info("after the export")
    assert caplog.records[-1].getMessage() == "after the export"


def test_cached_export_when_verbose_then_the_libraries_are_heard(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.safetensors").write_bytes(b"weights")
    cached_export(tmp_path / "model", tmp_path / "cache", chatty_export)
    assert sum("Replaced initializer" in r.getMessage() for r in caplog.records) == 120


@pytest.mark.parametrize("wanted, device, warned", [
    (None, "cpu", False),  # the expected CPU-only case
    (None, "cuda", True),  # a model on a GPU whose providers are missing
    (["CUDAExecutionProvider", "CPUExecutionProvider"], "cpu", True),  # asked for by name
])
def test_choose_providers_when_gpu_providers_are_missing_then_warned_only_when_a_surprise(wanted, device, warned, caplog):
    caplog.set_level(logging.DEBUG)
    assert choose_providers(["CPUExecutionProvider"], wanted, device) == ["CPUExecutionProvider"]
    assert any(r.levelno == logging.WARNING for r in caplog.records) is warned
