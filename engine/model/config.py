"""Model configuration: frozen dataclasses, one per part, nested in `SpaceVLLMConfig`.

Only `build_*` functions read these; modules take explicit arguments.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import yaml


DECODER_MAX_PAIRS = 256  # (question, frame) pairs per space-decoder call; the exported graphs' batch limit


class ScoreMode(str, Enum):
    """What a grounding's match score is (thresholded by standing queries and the evaluation)."""

    ANSWER = "answer"  # 1 - P(`none`) at the first answer token
    # geometric mean of that and the space decoder's highest per-frame target presence in the answer's
    # span: two views of "is it there", the LLM's over the whole window and the decoder's per frame
    ANSWER_AND_PRESENCE = "answer_and_presence"
    # the match head (`engine.model.match_head`): each caption word read against what the decoder found in the
    # span (appearance under the box, the box's trajectory) plus both scores above; trained on frozen outputs
    MATCH_HEAD = "match_head"


class PromptOrder(str, Enum):
    """Where the question sits relative to the video in the LLM sequence."""

    VIDEO_FIRST = "video_first"  # one window prefix serves every question (the default)
    QUESTION_FIRST = "question_first"  # the paper's order; the window must be recomputed per question


@dataclass(frozen=True)
class VisionConfig:
    kind: str = "conv"  # "conv" (tiny, trained from scratch) or "siglip" (transformers' SiglipVisionModel)
    image_size: int = 64
    channels: int = 96  # conv width (conv) / hidden size (siglip)
    grid: int = 8  # patch grid side before pooling: 64 px / stride 8
    # SigLIP-only fields (ignored by the conv encoder)
    patch_size: int = 14
    num_layers: int = 27
    num_heads: int = 16
    intermediate_size: int = 4304


@dataclass(frozen=True)
class LLMConfig:
    hidden_size: int = 160
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 480
    vocab_size: int = 0  # 0: taken from the tokenizer at build time
    max_position_embeddings: int = 2048
    rope_theta: float = 10000.0


@dataclass(frozen=True)
class DecoderConfig:
    width: int = 128
    num_layers: int = 2
    num_heads: int = 4
    # read the vision encoder's full patch grid (8x8 for tiny) instead of the LLM's pooled tokens:
    # finer boxes for small objects; the frame cache then holds the full grid and pools for the LLM
    full_grid: bool = False


@dataclass(frozen=True)
class LossConfig:
    lm: float = 1.0
    l1: float = 5.0  # DETR's weights for L1 and GIoU
    giou: float = 2.0
    presence: float = 1.0  # auxiliary: is the target present in this frame
    heatmap: float = 1.0  # auxiliary: which visual token holds the target's centre
    answer_presence: float = 0.0  # auxiliary: the answer position's state tells which frames hold the target
    first_answer_token: float = 0.0  # extra weight on the first answer token (`none` or `from`)
    time_tokens: float = 0.0  # extra weight on the answer's time tokens (the span's start and end)
    box_motion: float = 0.0  # L1 between the predicted and true box change from one span frame to the next
    time_sigma_s: float = 0.3  # soft targets over neighbouring time tokens (seconds)


@dataclass(frozen=True)
class SpaceVLLMConfig:
    name: str = "tiny"
    vision: VisionConfig = field(default_factory=VisionConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    pooled_grid: int = 4  # 2x2 bilinear pooling: 8x8 -> 4x4 = 16 tokens per frame
    max_frames: int = 16
    max_time_s: float = 60.0  # time tokens 0.0 .. max_time_s in 0.1 s steps (word-level tokenizer)
    prompt_order: PromptOrder = PromptOrder.VIDEO_FIRST
    max_question_tokens: int = 48
    default_threshold: float = 0.5  # match score threshold, calibrated on held-out samples after training
    score: ScoreMode = ScoreMode.ANSWER  # chosen by calibration (the mode that separates matches best)
    # at most this many (question, frame) space-decoder runs per window (0: no limit): past it, the decoder
    # runs on every 2nd, 3rd, ... frame of each span (always its first and last) and boxes in between are
    # interpolated in time. Few queries get every frame; many queries keep a bounded cost on a CPU
    decoder_pair_budget: int = 0
    base_checkpoint: str | None = None  # 7B: local LLaVA-OneVision directory (transformers format)

    @property
    def tokens_per_frame(self) -> int:
        """Visual tokens per frame in the LLM sequence."""
        return self.pooled_grid * self.pooled_grid

    @property
    def frame_grid(self) -> int:
        """Side of the token grid the vision encoder hands out (and the frame cache and space decoder hold)."""
        return self.vision.grid if self.decoder.full_grid else self.pooled_grid

    @property
    def frame_tokens(self) -> int:
        return self.frame_grid * self.frame_grid

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["prompt_order"] = self.prompt_order.value
        out["score"] = self.score.value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SpaceVLLMConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        data = dict(data)
        sections = {"vision": VisionConfig, "llm": LLMConfig, "decoder": DecoderConfig, "loss": LossConfig}
        for key, section_cls in sections.items():
            if key in data:
                section_known = {f.name for f in dataclasses.fields(section_cls)}
                bad = set(data[key]) - section_known
                if bad:
                    raise ValueError(f"unknown keys in model config section {key!r}: {sorted(bad)}")
                data[key] = section_cls(**data[key])
        if "prompt_order" in data:
            data["prompt_order"] = PromptOrder(data["prompt_order"])
        if int(data.get("decoder_pair_budget", 0)) < 0:
            raise ValueError(f"decoder_pair_budget must be >= 0, got {data['decoder_pair_budget']}")
        if "score" in data:
            try:
                data["score"] = ScoreMode(data["score"])
            except ValueError:
                raise ValueError(f"unknown score mode {data['score']!r} (expected one of {[m.value for m in ScoreMode]})") from None
        return cls(**data)


def load_config(path: str | Path) -> SpaceVLLMConfig:
    """Read a model config from YAML or JSON."""
    path = Path(path)
    text = path.read_text()
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a model config must be a mapping, got {type(data).__name__}")
    return SpaceVLLMConfig.from_dict(data)


def save_config(config: SpaceVLLMConfig, path: str | Path) -> None:
    Path(path).write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
