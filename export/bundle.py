"""Edge bundles: the ONNX graphs, their manifest, the model config, and a build script that runs
`trtexec` on the device with the right profiles and precision (engines are built where they run)."""
from __future__ import annotations

import json
import shutil
import stat
import tarfile
from pathlib import Path

from engine.model.config import SpaceVLLMConfig
from engine.model.graphs import (DECODER_ENGINE, DECODER_FILE, ENGINE_FORMAT, ENGINE_MANIFEST, MANIFEST, VISION_ENGINE,
                                 VISION_FILE, validate_manifest)
from export.tensorrt import default_profile

TARGETS = {
    # name: (precision, workspace MiB, notes)
    "jetson-orin": ("fp16", 2048, "Jetson Orin (JetPack 6, TensorRT 10)"),
    "jetson-xavier": ("fp16", 1024, "Jetson Xavier (JetPack 5, TensorRT 8.5)"),
    "x86-gpu": ("fp16", 4096, "x86-64 server with an NVIDIA GPU"),
    "x86-gpu-int8": ("int8", 4096, "x86-64 server, INT8 (needs a calibration cache from `spacevllm export tensorrt --int8`)"),
}


def _shape(dims) -> str:
    return "x".join(str(d) for d in dims)


def build_script(manifest: dict, precision: str, workspace_mib: int) -> str:
    cfg = manifest["model_config"]
    prof = default_profile(cfg)
    s, p, d = cfg["vision"]["image_size"], SpaceVLLMConfig.from_dict(cfg).frame_tokens, cfg["llm"]["hidden_size"]
    flags = {"fp16": "--fp16", "int8": "--int8 --fp16 --calib=calibration.cache", "fp32": ""}[precision]
    vis = [f"pixels:{_shape((f, 3, s, s))}" for f in prof.frames]
    dec = [",".join([f"stq_states:{_shape((b, f, d))}", f"visual_tokens:{_shape((b, f, p, d))}",
                     f"question_states:{_shape((b, q, d))}", f"question_mask:{_shape((b, q))}"])
           for b, f, q in zip(prof.batch, prof.frames, prof.question_len)]
    return f"""#!/usr/bin/env bash
# Builds TensorRT engines on this device (engines are tied to its GPU and TensorRT version).
set -euo pipefail
cd "$(dirname "$0")"
TRTEXEC="${{TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}}"
[ -x "$TRTEXEC" ] || {{ echo "trtexec not found: install TensorRT (JetPack on Jetson) or set TRTEXEC"; exit 1; }}
"$TRTEXEC" --onnx={VISION_FILE} --saveEngine={VISION_ENGINE} {flags} --memPoolSize=workspace:{workspace_mib} \\
  --minShapes={vis[0]} --optShapes={vis[1]} --maxShapes={vis[2]}
"$TRTEXEC" --onnx={DECODER_FILE} --saveEngine={DECODER_ENGINE} {flags.replace('--int8 ', '').replace(' --calib=calibration.cache', '')} --memPoolSize=workspace:{workspace_mib} \\
  --minShapes={dec[0]} --optShapes={dec[1]} --maxShapes={dec[2]}
python3 - <<'PY'
import json, subprocess
name, cc = subprocess.check_output(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"], text=True).splitlines()[0].split(", ")
try:
    import tensorrt; version = tensorrt.__version__
except ImportError:
    version = subprocess.check_output(["bash", "-c", "dpkg-query -W -f='${{Version}}' tensorrt 2>/dev/null || echo unknown"], text=True).strip()
m = json.load(open("{MANIFEST}"))
json.dump({{"format": "{ENGINE_FORMAT}", "tensorrt": version, "gpu": {{"name": name, "compute_capability": cc}},
           "precision": "{precision}", "onnx_manifest": m}}, open("{ENGINE_MANIFEST}", "w"), indent=2)
print("engines built:", name, cc, version)
PY
"""


def make_bundle(onnx_dir: str | Path, target: str, out: str | Path) -> Path:
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; known: {', '.join(sorted(TARGETS))}")
    manifest = validate_manifest(onnx_dir)
    precision, workspace, notes = TARGETS[target]
    out = Path(out)
    stage = out / f"spacevllm-edge-{target}"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    for name in (VISION_FILE, DECODER_FILE, MANIFEST):
        shutil.copy2(Path(onnx_dir) / name, stage / name)
    (stage / "model_config.json").write_text(json.dumps(manifest["model_config"], indent=2) + "\n")
    script = stage / "build_engines.sh"
    script.write_text(build_script(manifest, precision, workspace))
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    (stage / "README.txt").write_text(f"SpaceVLLM edge bundle for {notes}.\nOn the device: ./build_engines.sh, then point "
                                      f"engine.engine_dir at this folder with engine.backend: tensorrt.\n")
    archive = out / f"spacevllm-edge-{target}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(stage, arcname=stage.name)
    return archive
