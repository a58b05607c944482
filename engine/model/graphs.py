"""The exported graphs' contract: what `export/` writes and the runtime backends read.

Two parts of the model run outside PyTorch: the vision encoder (+ projector + pooling) and the space decoder.
`spacevllm export onnx` writes them as ONNX graphs with a manifest beside them; `spacevllm export tensorrt` builds
TensorRT engines from those, with a manifest of its own (engines are tied to a GPU architecture and a TensorRT
version). Here: the file and tensor names, the manifests' checks, and the once-per-checkpoint export cache. The act
of exporting (the torch.onnx exporter) stays in `export/`; whoever needs graphs made passes it in.
"""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from engine.model.model_dir import file_sha256

log = logging.getLogger(__name__)

OPSET = 18
ONNX_FORMAT = "spacevllm-onnx/1"
VISION_FILE = "vision_encoder.onnx"
DECODER_FILE = "space_decoder.onnx"
MANIFEST = "manifest.json"
DECODER_INPUTS = ["stq_states", "visual_tokens", "question_states", "question_mask"]
DECODER_OUTPUTS = ["boxes_cxcywh", "presence_logits", "heatmap_logits"]

ENGINE_FORMAT = "spacevllm-trt/1"
ENGINE_MANIFEST = "trt_manifest.json"
VISION_ENGINE = "vision_encoder.plan"
DECODER_ENGINE = "space_decoder.plan"

# (model directory, output directory) -> anything: writes the ONNX graphs and their manifest
# (`export.onnx_export.export_onnx`)
Exporter = Callable[[Path, Path], object]


class ManifestError(ValueError):
    """An export directory that does not match what loads it; the message says what."""


def validate_manifest(onnx_dir: str | Path, model_dir: str | Path | None = None, check_hashes: bool = True) -> dict:
    d = Path(onnx_dir)
    path = d / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{d}: missing {MANIFEST} (export with `spacevllm export onnx`)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not JSON ({exc})") from None
    if manifest.get("format") != ONNX_FORMAT:
        raise ManifestError(f"{path}: unknown format {manifest.get('format')!r}")
    if manifest.get("opset") != OPSET:
        raise ManifestError(f"{path}: opset {manifest.get('opset')} but this runtime expects {OPSET}; re-export")
    for name in (VISION_FILE, DECODER_FILE):
        if not (d / name).is_file():
            raise ManifestError(f"{d}: missing {name}")
        if check_hashes and file_sha256(d / name) != manifest["graphs"][name]["sha256"]:
            raise ManifestError(f"{d / name}: sha256 differs from the manifest (file changed after export)")
    if model_dir is not None:
        want = file_sha256(Path(model_dir) / "model.safetensors")
        if manifest["source_checkpoint"]["sha256"] != want:
            raise ManifestError(f"{d}: exported from a different checkpoint than {model_dir} (sha256 mismatch); re-export")
    return manifest


# The exporter's libraries log every pass at INFO (about 130 lines per export: "Replaced initializer ...") and
# torch.onnx warns about torchvision ops this model never uses: raised for the export's duration, so a first start
# says one line of ours instead (`--verbose` keeps them all).
EXPORT_LOG_LEVELS = {"onnx_ir": logging.WARNING, "onnxscript": logging.WARNING, "torch.onnx": logging.ERROR}


@contextmanager
def quiet_export_logs() -> Iterator[None]:
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    loggers = [(logging.getLogger(name), level) for name, level in EXPORT_LOG_LEVELS.items()]
    loggers += [(lg, level) for name, level in EXPORT_LOG_LEVELS.items()  # children with a level of their own
                for child, lg in logging.Logger.manager.loggerDict.items()
                if isinstance(lg, logging.Logger) and child.startswith(name + ".") and lg.level != logging.NOTSET]
    before = [(lg, lg.level) for lg, _ in loggers]
    for lg, level in loggers:
        lg.setLevel(max(level, lg.getEffectiveLevel()))
    try:
        yield
    finally:
        for lg, level in before:
            lg.setLevel(level)


def export_quietly(export: Exporter, model_dir: Path, out_dir: Path, where: Path) -> None:
    """`export` with its libraries' chatter held back, then one line: what was exported, where it is kept, how long."""
    t0 = time.perf_counter()
    with quiet_export_logs():
        export(model_dir, out_dir)
    log.info("exported the model's vision encoder and space decoder to ONNX in %.1f s (kept in %s; once per checkpoint)",
             time.perf_counter() - t0, where)


def cached_export(model_dir: str | Path, cache_dir: str | Path, export: Exporter) -> Path:
    """`<cache_dir>/<sha256 of the weights, 16 hex>`: exported by `export` on first use (into a temporary sibling, then
    renamed, so a crash never leaves a half export), reused while its manifest matches the checkpoint."""
    target = Path(cache_dir) / file_sha256(Path(model_dir) / "model.safetensors")[:16]
    try:
        validate_manifest(target, model_dir)
        return target
    except ManifestError:
        pass
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    export_quietly(export, Path(model_dir), tmp, target)
    shutil.rmtree(target, ignore_errors=True)
    try:
        tmp.rename(target)
    except OSError:  # another process exported it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return target


class TensorRTUnavailable(RuntimeError):
    """No GPU or no TensorRT here; the message says which is missing."""


def require_tensorrt():
    """(the tensorrt module, `gpu_info()`), or TensorRTUnavailable naming what is missing."""
    try:
        import tensorrt as trt  # optional: only hosts with an NVIDIA GPU install it
    except ImportError:
        raise TensorRTUnavailable("TensorRT is not installed: pip install '.[tensorrt]' on a host with an NVIDIA GPU") from None
    gpu = gpu_info()
    if gpu is None:
        raise TensorRTUnavailable("no CUDA GPU is visible (TensorRT engines are built on the GPU they run on)")
    return trt, gpu


def gpu_info() -> dict | None:
    """Name and compute capability of GPU 0, or None without a CUDA GPU."""
    try:
        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return {"name": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}
    except Exception:  # a broken CUDA install reads as "no GPU"
        log.debug("torch.cuda probe failed", exc_info=True)
    if shutil.which("nvidia-smi"):
        r = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip():
            name, cc = [x.strip() for x in r.stdout.splitlines()[0].split(",")]
            return {"name": name, "compute_capability": cc}
    return None


class EngineMismatch(RuntimeError):
    """Engines built for another TensorRT version or GPU, or an incomplete engine directory."""


def check_engine_manifest(engine_dir: str | Path, trt_version: str, gpu: dict | None) -> dict:
    """Refuse engines built for another TensorRT version or GPU architecture."""
    path = Path(engine_dir) / ENGINE_MANIFEST
    if not path.is_file():
        raise EngineMismatch(f"{engine_dir}: missing {ENGINE_MANIFEST} (build with `spacevllm export tensorrt`)")
    m = json.loads(path.read_text())
    if m.get("tensorrt") != trt_version:
        raise EngineMismatch(f"{engine_dir}: engines built with TensorRT {m.get('tensorrt')}, running {trt_version}; rebuild them here")
    if gpu is None:
        raise EngineMismatch("no CUDA GPU is visible")
    if m["gpu"]["compute_capability"] != gpu["compute_capability"]:
        raise EngineMismatch(f"{engine_dir}: engines built for {m['gpu']['name']} (sm {m['gpu']['compute_capability']}), "
                             f"this GPU is {gpu['name']} (sm {gpu['compute_capability']}); rebuild them here")
    for name in (VISION_ENGINE, DECODER_ENGINE):
        if not (Path(engine_dir) / name).is_file():
            raise EngineMismatch(f"{engine_dir}: missing {name}")
    return m
