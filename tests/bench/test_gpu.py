"""bench/gpu.py runs anywhere at tiny size (`--device cpu`), writes its JSON, and needs no Redis, PyAV or web stack."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_gpu_when_run_on_the_cpu_at_tiny_size_reports_windows_per_second_and_writes_json(tmp_path):
    from bench.gpu import main

    out = tmp_path / "results.json"
    result = main(["--device", "cpu", "--size", "tiny", "--frames", "2", "4", "--repeats", "1", "--questions", "1",
                   "--new-frames", "1", "--train-steps", "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["device"] == "cpu" and saved["dtype"] == "float32" and [r["frames"] for r in saved["rows"]] == [2, 4]
    assert all(r["windows_per_s"] > 0 and r["backend"] == "torch" for r in result["rows"])
    assert saved["backends"]["tensorrt-fp16"].startswith(("unavailable", "fp16", "failed"))
    assert saved["train"]["train_step_ms"] > 0


def test_bench_gpu_imports_no_redis_pyav_or_web_stack():
    code = ("import sys; sys.argv = ['x']; import bench.gpu; "
            "bad = [m for m in ('redis', 'av', 'fastapi', 'pydantic', 'stream', 'api') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
