"""Image preprocessing from the model directory: the tiny model's pixels exactly as before, a base checkpoint's
preprocessor_config.json as transformers reads it (compared with SiglipImageProcessor on real decoded frames)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.model.config import SpaceVLLMConfig, VisionConfig, save_config
from engine.model.preprocess import (ImagePreprocessor, PreprocessorError, Resample, frames_to_pixels,
                                     preprocessor_for_model_dir, preprocessor_of, to_model_pixels)

SHIPPED = Path(__file__).resolve().parents[3] / "models" / "tiny"

# what a LLaVA-OneVision checkpoint ships (SigLIP so400m @ 384)
LLAVA_ONEVISION = {"image_processor_type": "LlavaOnevisionImageProcessor", "do_resize": True,
                   "size": {"height": 384, "width": 384}, "resample": 3, "do_rescale": True,
                   "rescale_factor": 0.00392156862745098, "do_normalize": True, "image_mean": [0.5, 0.5, 0.5],
                   "image_std": [0.5, 0.5, 0.5], "do_convert_rgb": True}
CLIP_LIKE = {**LLAVA_ONEVISION, "size": {"height": 224, "width": 224}, "resample": 2,
             "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}
# our float32 x / 255 then (x - mean) / std against transformers' float64 rescale and float32 normalise: rounding only
HF_ATOL = 1e-5


def _frames(path, count: int = 6) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for _, f in zip(range(count), c.decode(video=0))]


def test_from_hf_when_given_llava_onevision_config_reads_size_filter_mean_std_and_rescale():
    pre = ImagePreprocessor.from_hf(LLAVA_ONEVISION)
    assert pre == ImagePreprocessor(384, Resample.BICUBIC, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 1 / 255)


@pytest.mark.parametrize("change, message", [
    ({"size": {"shortest_edge": 384}}, "not supported"),
    ({"size": {"height": 384, "width": 512}}, "not square"),
    ({"resample": 7}, "resample"),
    ({"do_center_crop": True, "crop_size": {"height": 336, "width": 336}}, "centre crop"),
    ({"image_mean": [0.5, 0.5]}, "3 values"),
])
def test_from_hf_when_the_config_cannot_be_followed_faithfully_refuses_naming_the_field(change, message):
    with pytest.raises(PreprocessorError, match=message):
        ImagePreprocessor.from_hf({**LLAVA_ONEVISION, **change})


@pytest.mark.parametrize("config", [LLAVA_ONEVISION, CLIP_LIKE], ids=["siglip-384-bicubic", "clip-224-bilinear"])
def test_our_preprocessing_when_compared_with_transformers_on_real_decoded_frames_agrees_within_1e_5(h264_file, config):
    from transformers import SiglipImageProcessor

    # given real frames decoded from an H.264 file, and transformers' processor built from the same config dict
    frames = _frames(h264_file)
    hf = SiglipImageProcessor(**{k: v for k, v in config.items() if k != "image_processor_type"})
    pre = ImagePreprocessor.from_hf(config)
    # when both preprocess them (ours: resize + rescale as ingest and the engine do, then the encoder's normalise)
    ours = pre.normalize(to_model_pixels(frames, pre))
    theirs = hf(frames, return_tensors="pt")["pixel_values"]
    # then they agree within float rounding (the resized uint8 frames are identical)
    assert ours.shape == theirs.shape == (len(frames), 3, pre.size, pre.size)
    assert (ours - theirs).abs().max().item() < HF_ATOL


def test_to_pixels_when_the_tiny_rule_keeps_the_pixels_bit_for_bit_as_before(h264_file):
    # given stored frames at the model's size and at another size (the engine resizes those itself)
    pre = preprocessor_for_model_dir(SHIPPED)
    assert pre == ImagePreprocessor.tiny(64)
    frames = _frames(h264_file, 3)
    from stream.imagecodec import resize

    for size in (64, 32):
        stored = np.stack([resize(f, size) for f in frames])
        # when they become pixels
        px = pre.to_pixels(stored)
        # then exactly what the engine computed before (x / 255, area-interpolated when not 64 px)
        before = torch.from_numpy(stored).permute(0, 3, 1, 2).float() / 255.0
        if size != 64:
            before = torch.nn.functional.interpolate(before, size=(64, 64), mode="area")
        assert torch.equal(px, before)
    # and the conv encoder normalises exactly as it did
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(pre.normalize(x), (x - 0.5) / 0.5)


@pytest.mark.parametrize("shape, channels_first", [((3, 16, 16, 3), (0, 3, 1, 2)), ((2, 3, 16, 16, 3), (0, 1, 4, 2, 3))],
                         ids=["frames", "batch-of-clips"])
def test_frames_to_pixels_when_given_model_sized_frames_is_x_over_255_bit_for_bit_with_the_same_layout(shape, channels_first):
    # given uint8 frames (N, S, S, 3), or a batch of clips (B, F, S, S, 3) as training collates them
    frames = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    # when they become pixels
    px = frames_to_pixels(frames)
    # then exactly what training and the export's parity check computed before (values and strides: a conv's
    # result can depend on its input's memory layout)
    before = torch.from_numpy(frames).permute(*channels_first).float() / 255.0
    assert torch.equal(px, before) and px.stride() == before.stride()


def test_to_pixels_when_a_device_and_dtype_are_given_builds_them_there():
    pre = ImagePreprocessor.tiny(16)
    px = pre.to_pixels(np.zeros((2, 16, 16, 3), np.uint8) + 255, "cpu", torch.bfloat16)
    assert px.dtype == torch.bfloat16 and px.shape == (2, 3, 16, 16) and float(px.max()) == 1.0


def _base_model_dir(tmp_path, preprocessor: dict | None, image_size: int = 384):
    base = tmp_path / "base"
    base.mkdir()
    if preprocessor is not None:
        (base / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    heads = tmp_path / "heads"
    heads.mkdir()
    save_config(SpaceVLLMConfig(name="7b-like", vision=VisionConfig(kind="siglip", image_size=image_size, patch_size=14, grid=27),
                                base_checkpoint="../base"), heads / "config.json")
    return heads


def test_preprocessor_for_model_dir_when_the_base_has_a_preprocessor_config_reads_it(tmp_path):
    assert preprocessor_for_model_dir(_base_model_dir(tmp_path, LLAVA_ONEVISION)) == ImagePreprocessor.from_hf(LLAVA_ONEVISION)


def test_preprocessor_for_model_dir_when_the_base_has_none_uses_siglip_defaults(tmp_path):
    assert preprocessor_for_model_dir(_base_model_dir(tmp_path, None)) == ImagePreprocessor.siglip(384)


def test_preprocessor_for_model_dir_when_the_size_disagrees_with_the_vision_encoder_refuses_naming_both(tmp_path):
    with pytest.raises(PreprocessorError, match="frames of 224 px, but the model's vision encoder reads 384 px"):
        preprocessor_for_model_dir(_base_model_dir(tmp_path, CLIP_LIKE))


def test_preprocessor_of_when_given_a_built_model_answers_as_its_directory(tiny_model, tiny_model_dir):
    size = tiny_model.config.vision.image_size
    assert preprocessor_of(tiny_model) == preprocessor_for_model_dir(tiny_model_dir) == ImagePreprocessor.tiny(size)
