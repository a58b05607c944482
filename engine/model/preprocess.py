"""Image preprocessing: camera frames -> the pixels the vision encoder reads, once per frame.

Three steps, each in one place:
1. `resize`: RGB uint8 (H, W, 3) -> (S, S, 3) uint8. Ingest does it when it stores a frame (so the engine reads
   frames already at the model's size); evaluation and training call the same function on decoded frames.
2. `to_pixels`: uint8 (N, S, S, 3) -> (N, 3, S, S) rescaled to [0, 1] (x / 255), on the model's device and dtype.
   The frame-feature cache means the engine does this once per frame.
3. `normalize`: (x - mean) / std per channel, inside the vision encoder (so the exported ONNX / TensorRT graphs take
   [0, 1] pixels and carry the normalisation with them).

Which values: a model built on a base checkpoint (`base_checkpoint`, LLaVA-OneVision / LLaVA-Video) reads them from
the base's `preprocessor_config.json` (SigLIP: 384 x 384, bicubic, mean = std = 0.5, rescale 1/255), as
transformers' image processor would; the tiny model has its own rule (area-averaged to `vision.image_size`, mean =
std = 0.5, rescale 1/255), exactly the pixels it was trained on. A SigLIP model without a file (random weights:
benchmarks, tests) gets SigLIP's defaults. `preprocessor_for_model_dir` reads only JSON (no weights), so ingest
learns the input size from the model directory without loading the model.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from engine.model.config import SpaceVLLMConfig
from engine.model.model_dir import CheckpointError, open_model_dir

log = logging.getLogger(__name__)

PREPROCESSOR_FILE = "preprocessor_config.json"


class PreprocessorError(ValueError):
    """A preprocessor_config.json we cannot follow faithfully, or one that disagrees with the model."""


class Resample(str, Enum):
    """How a frame is scaled to the model's input (names shared with `stream.imagecodec.RESAMPLES`)."""

    AREA = "area"  # the tiny model's rule: FFmpeg's area averaging
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    LANCZOS = "lanczos"
    BOX = "box"
    HAMMING = "hamming"


# PIL's numbering, as transformers' preprocessor_config.json writes `resample`
PIL_RESAMPLE = {0: Resample.NEAREST, 1: Resample.LANCZOS, 2: Resample.BILINEAR, 3: Resample.BICUBIC,
                4: Resample.BOX, 5: Resample.HAMMING}
UINT8_RESCALE = 1.0 / 255.0


@dataclass(frozen=True)
class ImagePreprocessor:
    size: int  # the square side the vision encoder reads
    resample: Resample = Resample.AREA
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    rescale: float = UINT8_RESCALE  # uint8 -> [0, 1]

    # ---- where the values come from -----------------------------------------------------------
    @classmethod
    def tiny(cls, size: int) -> "ImagePreprocessor":
        """The tiny conv encoder's rule (what models/tiny was trained on)."""
        return cls(size, Resample.AREA)

    @classmethod
    def siglip(cls, size: int) -> "ImagePreprocessor":
        """SigLIP's defaults (a SigLIP encoder without a preprocessor_config.json: random weights)."""
        return cls(size, Resample.BICUBIC)

    @classmethod
    def for_config(cls, config: SpaceVLLMConfig) -> "ImagePreprocessor":
        """The rule for a model config when no preprocessor_config.json says otherwise."""
        if config.vision.kind == "siglip":
            return cls.siglip(config.vision.image_size)
        return cls.tiny(config.vision.image_size)

    @classmethod
    def from_hf(cls, data: dict[str, Any], where: str = PREPROCESSOR_FILE) -> "ImagePreprocessor":
        """From a transformers image processor config (SigLIP, LLaVA-OneVision, CLIP-like). Only a square resize of the
        whole frame is supported (what SigLIP and LLaVA-OneVision's video path do); a centre crop or an aspect-kept
        resize is refused rather than approximated."""
        size = data.get("size", {"height": 384, "width": 384}) if data.get("do_resize", True) else None
        if isinstance(size, int):
            side = size
        elif isinstance(size, dict) and "height" in size and "width" in size:
            if size["height"] != size["width"]:
                raise PreprocessorError(f"{where}: size {size} is not square; the vision encoders here read square frames")
            side = int(size["height"])
        else:
            raise PreprocessorError(f"{where}: size {size!r} is not supported (expected {{height, width}}: a square resize "
                                    "of the whole frame, as SigLIP does)")
        if data.get("do_center_crop"):
            crop = data.get("crop_size")
            crop_side = crop.get("height") if isinstance(crop, dict) else crop
            if crop_side != side:
                raise PreprocessorError(f"{where}: a centre crop ({crop}) after the resize is not supported")
        code = data.get("resample", 3)
        if code not in PIL_RESAMPLE:
            raise PreprocessorError(f"{where}: resample {code!r} is not one of PIL's filters {sorted(PIL_RESAMPLE)}")
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        if data.get("do_normalize", True):
            mean = _triple(data.get("image_mean", 0.5), "image_mean", where)
            std = _triple(data.get("image_std", 0.5), "image_std", where)
            if min(std) <= 0:
                raise PreprocessorError(f"{where}: image_std {std} must be positive")
        rescale = float(data.get("rescale_factor", UINT8_RESCALE)) if data.get("do_rescale", True) else 1.0
        return cls(side, PIL_RESAMPLE[code], mean, std, rescale)

    @classmethod
    def from_file(cls, path: str | Path) -> "ImagePreprocessor":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise PreprocessorError(f"{path}: not a readable JSON file ({exc})") from None
        if not isinstance(data, dict):
            raise PreprocessorError(f"{path}: expected a JSON object")
        return cls.from_hf(data, str(path))

    def checked_against(self, config: SpaceVLLMConfig, where: str) -> "ImagePreprocessor":
        """Self, when its size is the vision encoder's (SigLIP's position embeddings fix it); else PreprocessorError."""
        if self.size != config.vision.image_size:
            raise PreprocessorError(f"{where}: frames of {self.size} px, but the model's vision encoder reads "
                                    f"{config.vision.image_size} px (vision.image_size)")
        return self

    # ---- the three steps ------------------------------------------------------------------------
    def resize(self, image: np.ndarray) -> np.ndarray:
        """RGB uint8 (H, W, 3) -> (S, S, 3) uint8 (what ingest stores: `stream.imagecodec.resize`, one function)."""
        from stream.imagecodec import resize  # PyAV / PIL: imported only where frames are resized

        return resize(image, self.size, self.resample.value)

    def to_pixels(self, images: np.ndarray | torch.Tensor, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> (N, 3, S, S) rescaled pixels on `device` in `dtype` (default: CPU, float32). Frames not
        at S (stored by an ingest with another size) are resized here: area on the rescaled floats (as the engine
        always did), any other filter on the uint8 frames first."""
        if isinstance(images, torch.Tensor):
            images = images.cpu().numpy()
        if images.shape[1:3] != (self.size, self.size) and self.resample is not Resample.AREA:
            images = np.stack([self.resize(im) for im in images])
        px = frames_to_pixels(images, self.rescale)  # (N, 3, H, W)
        if px.shape[-1] != self.size or px.shape[-2] != self.size:
            px = F.interpolate(px, size=(self.size, self.size), mode="area")
        if device is not None or dtype is not None:
            px = px.to(device=device, dtype=dtype)
        return px

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) rescaled pixels -> (pixels - mean) / std per channel (the vision encoder's first step)."""
        if len(set(self.mean)) == 1 and len(set(self.std)) == 1:
            return (pixels - self.mean[0]) / self.std[0]
        mean = torch.tensor(self.mean, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
        return (pixels - mean) / std

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "resample": self.resample.value, "mean": list(self.mean), "std": list(self.std),
                "rescale": self.rescale}


def frames_to_pixels(frames: np.ndarray, rescale: float = UINT8_RESCALE) -> torch.Tensor:
    """uint8 frames (..., H, W, 3) -> float32 pixels (..., 3, H, W) times `rescale`, nothing resized: the one place a
    frame becomes pixels (also for frames already at the model's size: training batches, the export's parity check)."""
    px = torch.from_numpy(np.ascontiguousarray(frames)).movedim(-1, -3).float()
    # x / 255, not x * (1 / 255): the two differ in the last bit, and every model here was trained on x / 255
    return px / 255.0 if rescale == UINT8_RESCALE else px * rescale


def to_model_pixels(frames: np.ndarray | list[np.ndarray], preprocessor: ImagePreprocessor,
                    device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Decoded RGB uint8 frames (N, H, W, 3), any size -> the encoder's input (N, 3, S, S): resize + rescale, the same
    in training, evaluation and the engine (the encoder normalises)."""
    return preprocessor.to_pixels(np.stack([preprocessor.resize(np.asarray(f)) for f in frames]), device, dtype)


def _triple(value, name: str, where: str) -> tuple[float, float, float]:
    values = [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != 3:
        raise PreprocessorError(f"{where}: {name} must have 3 values (RGB), got {value!r}")
    return tuple(values)


def base_preprocessor(config: SpaceVLLMConfig, base_dir: str | Path) -> ImagePreprocessor:
    """A base checkpoint's preprocessing: its preprocessor_config.json (checked against the model), else the rule."""
    path = Path(base_dir) / PREPROCESSOR_FILE
    if not path.is_file():
        log.warning("%s: no %s; using the %s defaults", base_dir, PREPROCESSOR_FILE, config.vision.kind)
        return ImagePreprocessor.for_config(config)
    return ImagePreprocessor.from_file(path).checked_against(config, str(path))


def preprocessor_for_model_dir(model_dir: str | Path) -> ImagePreprocessor:
    """What a model directory's model will read, from its config (and its base checkpoint's preprocessor_config.json)
    alone: no weights are read, nothing is built. The same answer as `preprocessor_of(load_model(model_dir))`."""
    try:
        md = open_model_dir(model_dir)
        if md.config.base_checkpoint:
            return base_preprocessor(md.config, md.base_dir())
    except CheckpointError as exc:
        raise PreprocessorError(str(exc)) from None
    return ImagePreprocessor.for_config(md.config)


def preprocessor_of(model) -> ImagePreprocessor:
    """A built model's preprocessing (its vision encoder holds it)."""
    pre = getattr(model.vision_tower, "preprocessor", None)
    return pre if pre is not None else ImagePreprocessor.for_config(model.config)
