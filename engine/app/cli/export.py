"""`spacevllm export onnx | tensorrt | edge-bundle`: the deployable graphs (export/), built from a model directory."""
from __future__ import annotations

from pathlib import Path

import click


@click.group()
def export() -> None:
    """ONNX / TensorRT export and edge bundles."""


@export.command("onnx")
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--parity/--no-parity", default=True, show_default=True, help="Check ONNX Runtime against PyTorch.")
def export_onnx_cmd(model_dir, out, parity) -> None:
    """vision_encoder.onnx + space_decoder.onnx + manifest.json."""
    from engine.model.checkpoint import CheckpointError
    from export.onnx_export import export_onnx, parity as check

    try:
        export_onnx(model_dir, out, progress=lambda m: click.echo(f"... {m}"))
    except CheckpointError as exc:
        raise click.ClickException(str(exc)) from None
    if parity:
        diffs = check(model_dir, out)
        click.echo("parity (max abs diff, ONNX Runtime CPU vs PyTorch): " + ", ".join(f"{k}={v:.2e}" for k, v in diffs.items()))
        if max(diffs.values()) > 1e-4:
            raise click.ClickException("parity check failed (> 1e-4)")


@export.command("tensorrt")
@click.option("--onnx", "onnx_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Default: <onnx>/tensorrt")
@click.option("--fp16/--no-fp16", default=True, show_default=True)
@click.option("--int8", is_flag=True)
@click.option("--calibration", default=None, help="A video file or redis://... URL (frames of recent windows).")
@click.option("--prefix", default="svl:", help="Redis key prefix for --calibration redis://...")
def export_tensorrt_cmd(onnx_dir, out, fp16, int8, calibration, prefix) -> None:
    """Serialized TensorRT engines with optimisation profiles (on a GPU host)."""
    import json

    from export.tensorrt import (TensorRTUnavailable, build_engines, calibration_frames_from_redis,
                                 calibration_frames_from_video, manifest_preprocessor, require_tensorrt)

    try:
        require_tensorrt()
    except TensorRTUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    pre = manifest_preprocessor(json.loads((Path(onnx_dir) / "manifest.json").read_text()))
    calib = None
    if calibration:
        calib = (calibration_frames_from_redis(calibration, prefix, pre) if calibration.startswith(("redis://", "rediss://", "unix://"))
                 else calibration_frames_from_video(calibration, pre))
    m = build_engines(onnx_dir, out or Path(onnx_dir) / "tensorrt", fp16=fp16, int8=int8, calibration=calib)
    click.echo(f"built {m['precision']} engines for {m['gpu']['name']} with TensorRT {m['tensorrt']}")


@export.command("edge-bundle")
@click.option("--onnx", "onnx_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--target", required=True, help="jetson-orin | jetson-xavier | x86-gpu | x86-gpu-int8")
@click.option("--out", default="dist", show_default=True, type=click.Path(file_okay=False))
def export_bundle_cmd(onnx_dir, target, out) -> None:
    """Pack ONNX graphs, manifest, config and a trtexec build script for a device."""
    from export.bundle import make_bundle
    from engine.model.graphs import ManifestError

    try:
        click.echo(make_bundle(onnx_dir, target, out))
    except (ValueError, ManifestError) as exc:
        raise click.ClickException(str(exc)) from None

