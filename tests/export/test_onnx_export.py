"""Export + parity with real ONNX Runtime sessions, manifest validation, backends, edge bundles."""
from __future__ import annotations

import json
import shutil
import tarfile

import numpy as np
import pytest
import torch

from engine.model.checkpoint import save_model
from engine.model.graphs import ManifestError, validate_manifest
from engine.serving.runtime import TorchBackend, build_backend
from engine.serving.runtime.ort import OrtBackend, choose_providers
from export.onnx_export import export_onnx, parity


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from engine.model.spacevllm import build_spacevllm
    from engine.model.tokenizer import train_tokenizer
    from tests.conftest import TINY_TEST_CONFIG

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("export")
    model_dir = save_model(build_spacevllm(TINY_TEST_CONFIG, train_tokenizer(TINY_TEST_CONFIG.max_time_s)), root / "model")
    export_onnx(model_dir, root / "onnx")
    return model_dir, root / "onnx"


def test_export_writes_checked_graphs_and_a_manifest(exported):
    import onnx

    model_dir, onnx_dir = exported
    m = validate_manifest(onnx_dir, model_dir)
    for name in ("vision_encoder.onnx", "space_decoder.onnx"):
        onnx.checker.check_model(onnx.load(str(onnx_dir / name)), full_check=True)
    vis = m["graphs"]["vision_encoder.onnx"]
    assert vis["inputs"][0] == {"name": "pixels", "dtype": "float32", "shape": ["frames", 3, 32, 32]}
    assert vis["outputs"][0]["shape"] == ["frames", 64, 32]  # the full 8x8 grid (decoder.full_grid)
    dec = {i["name"]: i["shape"] for i in m["graphs"]["space_decoder.onnx"]["inputs"]}
    assert dec["question_states"] == ["batch", "question_len", 32] and dec["visual_tokens"] == ["batch", "frames", 64, 32]
    assert m["opset"] == 18 and len(m["source_checkpoint"]["sha256"]) == 64 and m["model_config"]["name"] == "test"


def test_onnxruntime_matches_pytorch_within_1e_4_on_random_and_real_frames(exported, h264_file):
    import av

    from stream.imagecodec import resize

    model_dir, onnx_dir = exported
    with av.open(str(h264_file)) as c:
        real = np.stack([resize(f.to_ndarray(format="rgb24"), 32) for _, f in zip(range(8), c.decode(video=0))])
    diffs = parity(model_dir, onnx_dir, frame_counts=(1, 4, 16), real_frames=real)
    assert diffs["vision_encoder"] <= 1e-4 and diffs["space_decoder"] <= 1e-4, diffs


@pytest.mark.parametrize("damage, message", [
    ("missing_file", "missing space_decoder.onnx"),
    ("wrong_hash", "sha256 differs"),
    ("wrong_opset", "opset 17 but this runtime expects 18"),
    ("no_manifest", "missing manifest.json"),
])
def test_manifest_problems_are_clear_errors(exported, tmp_path, damage, message):
    _, onnx_dir = exported
    d = tmp_path / "copy"
    shutil.copytree(onnx_dir, d)
    if damage == "missing_file":
        (d / "space_decoder.onnx").unlink()
    elif damage == "wrong_hash":
        with open(d / "vision_encoder.onnx", "ab") as f:
            f.write(b"\0")
    elif damage == "wrong_opset":
        m = json.loads((d / "manifest.json").read_text())
        m["opset"] = 17
        (d / "manifest.json").write_text(json.dumps(m))
    else:
        (d / "manifest.json").unlink()
    with pytest.raises(ManifestError, match=message):
        validate_manifest(d)


def test_manifest_from_another_checkpoint_is_refused(exported, tmp_path, tiny_model):
    _, onnx_dir = exported
    other = save_model(tiny_model, tmp_path / "other")
    with torch.no_grad():
        tiny_model.stq.add_(1.0)
    save_model(tiny_model, other)
    with pytest.raises(ManifestError, match="different checkpoint"):
        validate_manifest(onnx_dir, other)


def test_provider_selection_prefers_tensorrt_then_cuda_then_cpu(caplog):
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert "falling back" not in caplog.text  # the expected CPU-only case: no warning
    assert choose_providers(["CPUExecutionProvider"], device_type="cuda") == ["CPUExecutionProvider"]
    assert "falling back to CPUExecutionProvider" in caplog.text  # a model on a GPU: worth a warning
    assert choose_providers(["CUDAExecutionProvider", "CPUExecutionProvider", "TensorrtExecutionProvider"]) == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(RuntimeError, match="none of the ONNX Runtime providers"):
        choose_providers(["Foo"], ["CUDAExecutionProvider"])


def test_backend_selection(exported):
    from engine.model.checkpoint import load_model

    model_dir, onnx_dir = exported
    model = load_model(model_dir)
    assert isinstance(build_backend("torch", model), TorchBackend)
    assert isinstance(build_backend("onnxruntime", model, str(onnx_dir)), OrtBackend)
    with pytest.raises(ValueError, match="unknown backend"):
        build_backend("tpu", model)
    with pytest.raises(ValueError, match="needs engine_dir"):
        build_backend("tensorrt", model)


def test_window_grounding_on_onnxruntime_equals_torch(exported):
    from engine.model.checkpoint import load_model

    model_dir, onnx_dir = exported
    model = load_model(model_dir)
    ort_backend = OrtBackend(onnx_dir)
    px, ts = torch.rand(8, 3, 32, 32), [0.5 * k for k in range(8)]
    qs = ["the red circle", "the small blue square moving left", "the white triangle"]
    a = model.ground(model.encode_window(None, ts, visual_tokens=TorchBackend(model).encode_frames(px)), qs)
    b = model.ground(model.encode_window(None, ts, visual_tokens=ort_backend.encode_frames(px)), qs, decoder=ort_backend.decode)
    for x, y in zip(a, b):
        assert abs(x.score - y.score) < 1e-4 and x.span_s == y.span_s
        assert torch.allclose(x.all_boxes_cxcywh, y.all_boxes_cxcywh, atol=1e-4)


def test_edge_bundle_packs_graphs_and_a_trtexec_script(exported, tmp_path):
    from export.bundle import make_bundle

    _, onnx_dir = exported
    archive = make_bundle(onnx_dir, "jetson-orin", tmp_path)
    with tarfile.open(archive) as tar:
        names = {n.split("/", 1)[-1] for n in tar.getnames()}
        script = tar.extractfile("spacevllm-edge-jetson-orin/build_engines.sh").read().decode()
    assert {"vision_encoder.onnx", "space_decoder.onnx", "manifest.json", "model_config.json", "build_engines.sh"} <= names
    assert "--fp16" in script and "--minShapes=pixels:1x3x32x32" in script and "--maxShapes=pixels:8x3x32x32" in script
    with pytest.raises(ValueError, match="unknown target"):
        make_bundle(onnx_dir, "toaster", tmp_path)


def test_tensorrt_without_gpu_or_tensorrt_fails_with_one_clear_line():
    from engine.model.graphs import TensorRTUnavailable, require_tensorrt

    try:
        import tensorrt  # noqa: F401
        has_trt = True
    except ImportError:
        has_trt = False
    if has_trt and torch.cuda.is_available():
        pytest.skip("TensorRT and a GPU are present")
    with pytest.raises(TensorRTUnavailable, match="TensorRT is not installed|no CUDA GPU"):
        require_tensorrt()


@pytest.mark.gpu
def test_tensorrt_engines_build_and_match_pytorch(exported, tmp_path):
    pytest.importorskip("tensorrt")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from engine.model.checkpoint import load_model
    from engine.serving.runtime.trt import TensorRTBackend
    from export.tensorrt import build_engines

    model_dir, onnx_dir = exported
    build_engines(onnx_dir, tmp_path / "trt", fp16=False)
    backend = TensorRTBackend(tmp_path / "trt")
    model = load_model(model_dir)
    px = torch.rand(4, 3, 32, 32)
    assert torch.allclose(backend.encode_frames(px), model.encode_frames(px), atol=1e-3)
