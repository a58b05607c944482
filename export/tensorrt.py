"""TensorRT engines from the exported ONNX graphs, through TensorRT's Python API.

Engines are tied to a GPU architecture and a TensorRT version; the manifest beside them
records both, and the runtime refuses a mismatch (`engine/model/graphs.py`: the check both sides share).
INT8 calibration reads real frames (a video file, or frames referenced by windows in Redis).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.model.config import DECODER_MAX_PAIRS, SpaceVLLMConfig
from engine.model.graphs import (DECODER_ENGINE, DECODER_FILE, ENGINE_FORMAT, ENGINE_MANIFEST, VISION_ENGINE, VISION_FILE,
                                 TensorRTUnavailable, require_tensorrt, validate_manifest)
from engine.model.preprocess import ImagePreprocessor, Resample
from stream.redis_server import connect

log = logging.getLogger(__name__)

# the export tool's callers (the CLI) also find whether TensorRT is usable here
__all__ = ["Profile", "TensorRTUnavailable", "build_engines", "calibration_frames_from_redis", "calibration_frames_from_video",
           "default_profile", "manifest_preprocessor", "require_tensorrt"]


@dataclass(frozen=True)
class Profile:
    """min / opt / max for each dynamic dimension."""

    frames: tuple[int, int, int]
    batch: tuple[int, int, int]
    question_len: tuple[int, int, int]


def default_profile(model_config: dict) -> Profile:
    max_frames = int(model_config["max_frames"])
    max_q = int(model_config["max_question_tokens"])
    # the decoder's batch is (question, frame) pairs, up to one call's worth
    return Profile(frames=(1, max_frames, max_frames), batch=(1, 64, DECODER_MAX_PAIRS), question_len=(1, 16, max_q))


def manifest_preprocessor(manifest: dict) -> ImagePreprocessor:
    """The preprocessing the vision graph was exported for (manifests before it was recorded: the config's rule)."""
    if "preprocessor" in manifest:
        p = manifest["preprocessor"]
        return ImagePreprocessor(int(p["size"]), Resample(p["resample"]), tuple(p["mean"]), tuple(p["std"]), float(p["rescale"]))
    return ImagePreprocessor.for_config(SpaceVLLMConfig.from_dict(manifest["model_config"]))


def calibration_frames_from_video(path: str | Path, preprocessor, count: int = 256) -> Iterator[np.ndarray]:
    """Real frames for INT8 calibration: (N, 3, S, S) float32 batches from a video file, preprocessed as the engine
    does (`preprocessor`: engine.model.preprocess.ImagePreprocessor)."""
    import av

    batch = []
    with av.open(str(path)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i >= count:
                break
            batch.append(preprocessor.resize(frame.to_ndarray(format="rgb24")))
            if len(batch) == 16:
                yield preprocessor.to_pixels(np.stack(batch)).numpy()
                batch = []
    if batch:
        yield preprocessor.to_pixels(np.stack(batch)).numpy()


def calibration_frames_from_redis(url: str, prefix: str, preprocessor, count: int = 256, shards: int = 8) -> Iterator[np.ndarray]:
    """Real frames referenced by the newest windows in Redis (stored by ingest at the model's size)."""
    from stream.imagecodec import decode_image
    from stream.keys import Keys
    from stream.types import Window

    client, keys = connect(url), Keys(prefix, shards)
    seen, batch = 0, []
    newest = [f for s in keys.all_shards() for _, f in client.xrevrange(keys.windows(s), count=64 // shards + 1)]
    for fields in newest:
        w = Window.from_fields(fields)
        for data in client.mget([keys.frame(w.camera_id, t) for t in w.frames_ms]):
            if data is None or seen >= count:
                continue
            batch.append(preprocessor.resize(decode_image(data)))
            seen += 1
            if len(batch) == 16:
                yield preprocessor.to_pixels(np.stack(batch)).numpy()
                batch = []
    if batch:
        yield preprocessor.to_pixels(np.stack(batch)).numpy()


def build_engines(onnx_dir: str | Path, out: str | Path, fp16: bool = True, int8: bool = False,
                  calibration: Iterator[np.ndarray] | None = None, profile: Profile | None = None,
                  workspace_gib: float = 4.0) -> dict:
    trt, gpu = require_tensorrt()
    onnx_dir, out = Path(onnx_dir), Path(out)
    manifest = validate_manifest(onnx_dir)
    cfg = manifest["model_config"]
    profile = profile or default_profile(cfg)
    out.mkdir(parents=True, exist_ok=True)
    s = int(cfg["vision"]["image_size"])
    p = SpaceVLLMConfig.from_dict(cfg).frame_tokens
    d = int(cfg["llm"]["hidden_size"])
    logger = trt.Logger(trt.Logger.WARNING)
    shapes = {
        "vision_encoder": {"pixels": [(f, 3, s, s) for f in profile.frames]},
        "space_decoder": {
            "stq_states": [(b, f, d) for b, f in zip(profile.batch, profile.frames)],
            "visual_tokens": [(b, f, p, d) for b, f in zip(profile.batch, profile.frames)],
            "question_states": [(b, q, d) for b, q in zip(profile.batch, profile.question_len)],
            "question_mask": [(b, q) for b, q in zip(profile.batch, profile.question_len)],
        },
    }
    for name, onnx_file, plan in (("vision_encoder", VISION_FILE, VISION_ENGINE), ("space_decoder", DECODER_FILE, DECODER_ENGINE)):
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse((onnx_dir / onnx_file).read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT could not parse {onnx_file}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
        if fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        opt_profile = builder.create_optimization_profile()
        for inp, (mn, op, mx) in shapes[name].items():
            opt_profile.set_shape(inp, mn, op, mx)
        config.add_optimization_profile(opt_profile)
        if int8 and name == "vision_encoder":
            if calibration is None:
                raise ValueError("--int8 needs --calibration (a video file or redis://...)")
            config.set_flag(trt.BuilderFlag.INT8)
            config.int8_calibrator = _calibrator(trt, calibration, out / "calibration.cache")
            config.set_calibration_profile(opt_profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"TensorRT failed to build {name}")
        (out / plan).write_bytes(bytes(serialized))
        log.info("built %s", out / plan)
    engine_manifest = {
        "format": ENGINE_FORMAT, "tensorrt": trt.__version__, "gpu": gpu,
        "precision": "int8" if int8 else "fp16" if fp16 else "fp32",
        "profiles": {k: {inp: {"min": v[0], "opt": v[1], "max": v[2]} for inp, v in d_.items()} for k, d_ in shapes.items()},
        "onnx_manifest": manifest,
    }
    (out / ENGINE_MANIFEST).write_text(json.dumps(engine_manifest, indent=2) + "\n")
    return engine_manifest


def _calibrator(trt, batches: Iterator[np.ndarray], cache: Path):
    import torch

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self.batches = iter(batches)
            self.device = None

        def get_batch_size(self) -> int:
            return 16

        def get_batch(self, names):
            try:
                x = next(self.batches)
            except StopIteration:
                return None
            self.device = torch.from_numpy(np.ascontiguousarray(x)).cuda()
            return [int(self.device.data_ptr())]

        def read_calibration_cache(self):
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data):
            cache.write_bytes(bytes(data))

    return Calibrator()
