"""Vision encoders: a frame batch (N, 3, H, W) in [0, 1] -> patch features (N, grid*grid, C)."""
from __future__ import annotations

import torch
from torch import nn

from engine.model.config import VisionConfig
from engine.model.preprocess import ImagePreprocessor

# SigLIP normalises pixels to [-1, 1] (mean 0.5, std 0.5); the tiny conv encoder uses the same, fixed (its rule:
# `ImagePreprocessor.tiny`). A SigLIP encoder normalises with its checkpoint's preprocessor_config.json values.
PIXEL_MEAN = 0.5
PIXEL_STD = 0.5


class ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
        self.norm = nn.GroupNorm(8, c_out)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a = ConvBlock(c, c, 1)
        self.b = nn.Conv2d(c, c, 3, padding=1)
        self.norm = nn.GroupNorm(8, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(x + self.norm(self.b(self.a(x))))


class ConvEncoder(nn.Module):
    """Tiny encoder trained from scratch: three stride-2 stages, then a learned 2-D position embedding.

    The position embedding is added per patch so that location survives pooling, the LLM and
    the space decoder (a conv net alone is translation-equivariant).
    """

    def __init__(self, image_size: int, channels: int, grid: int) -> None:
        super().__init__()
        assert image_size % grid == 0, "image_size must be a multiple of grid"
        n_stages = (image_size // grid).bit_length() - 1
        assert grid << n_stages == image_size, "image_size / grid must be a power of two"
        widths = [max(8, channels * (i + 1) // n_stages // 8 * 8) for i in range(n_stages - 1)] + [channels]
        stages, c = [], 3
        for w in widths:
            stages.append(ConvBlock(c, w, 2))
            c = w
        self.stages = nn.Sequential(*stages, ResBlock(channels), ResBlock(channels))
        self.pos = nn.Parameter(torch.randn(1, grid * grid, channels) * 0.02)
        self.grid = grid
        self.out_channels = channels
        self.preprocessor = ImagePreprocessor.tiny(image_size)  # what it was trained on (not a parameter)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels - PIXEL_MEAN) / PIXEL_STD
        x = self.stages(x)  # (N, C, g, g)
        x = x.flatten(2).transpose(1, 2)  # (N, g*g, C)
        return x + self.pos


class SiglipEncoder(nn.Module):
    """transformers' SiglipVisionModel. Like LLaVA-OneVision (vision_feature_layer=-1, strategy
    "full"), the features are the encoder's last hidden states before the post-layernorm:
    the patch grid, 27x27 at 384/14."""

    def __init__(self, model: nn.Module, feature_layer: int = -1, preprocessor: ImagePreprocessor | None = None) -> None:
        super().__init__()
        self.model = model
        self.feature_layer = feature_layer
        cfg = model.config
        self.grid = cfg.image_size // cfg.patch_size
        self.out_channels = cfg.hidden_size
        # size, filter, mean/std: the checkpoint's preprocessor_config.json, else SigLIP's defaults
        self.preprocessor = preprocessor or ImagePreprocessor.siglip(cfg.image_size)
        assert self.preprocessor.size == cfg.image_size, "the preprocessor's size is the encoder's image size"

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.preprocessor.normalize(pixels)
        out = self.model(pixel_values=x, output_hidden_states=True)
        return out.hidden_states[self.feature_layer]  # (N, g*g, C)


def build_vision_encoder(cfg: VisionConfig) -> nn.Module:
    if cfg.kind == "conv":
        return ConvEncoder(cfg.image_size, cfg.channels, cfg.grid)
    if cfg.kind == "siglip":
        from transformers import SiglipVisionConfig, SiglipVisionModel

        vcfg = SiglipVisionConfig(
            hidden_size=cfg.channels, image_size=cfg.image_size, patch_size=cfg.patch_size,
            num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
            intermediate_size=cfg.intermediate_size, vision_use_head=False,
        )
        return SiglipEncoder(SiglipVisionModel(vcfg))
    raise ValueError(f"unknown vision encoder kind {cfg.kind!r} (expected 'conv' or 'siglip')")
