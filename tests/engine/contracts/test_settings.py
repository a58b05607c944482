from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from engine.app.cli import main
from engine.contracts.settings import ConfigError, load_service_config


def test_a_typo_fails_at_load_with_the_key_path(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("windows:\n  sample_fsp: 2\ncameras:\n  - {id: 'bad id', url: 'file:///x.mp4'}\n")
    with pytest.raises(ConfigError) as err:
        load_service_config(p)
    assert "windows.sample_fsp: unknown field" in str(err.value)
    assert "cameras.0.id" in str(err.value)


def test_svl_engine_backend_when_set_overrides_and_when_unknown_names_the_choices(monkeypatch):
    monkeypatch.setenv("SVL_ENGINE_BACKEND", "torch")
    assert load_service_config(None).engine.backend == "torch"
    monkeypatch.setenv("SVL_ENGINE_BACKEND", "tpu")
    with pytest.raises(ConfigError, match="SVL_ENGINE_BACKEND must be auto, torch, onnxruntime or tensorrt, got 'tpu'"):
        load_service_config(None)


def test_ingest_sections_are_reexported_so_roles_load_every_section_from_settings():
    import stream.config
    from engine.contracts import settings

    for name in ("CameraSettings", "IngestSettings", "RedisSettings", "WindowSettings"):
        assert getattr(settings, name) is getattr(stream.config, name) and name in settings.__all__


def test_redis_url_comes_from_the_environment_at_load_time(tmp_path, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6390/2")
    assert load_service_config(None).redis.url == "redis://127.0.0.1:6390/2"


def test_validate_config_command_says_ok_or_what_is_wrong(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("cameras:\n  - {id: cam1, url: 'synthetic://demo'}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("engine:\n  backend: tpu\n")
    r = CliRunner().invoke(main, ["validate-config", str(good)])
    assert r.exit_code == 0 and "OK (1 cameras" in r.output
    r = CliRunner().invoke(main, ["validate-config", str(bad)])
    assert r.exit_code == 1 and "engine.backend" in r.output and "Traceback" not in r.output


def test_the_shipped_service_config_is_valid():
    from pathlib import Path

    cfg = load_service_config(Path(__file__).resolve().parents[3] / "configs" / "service.yaml")
    assert [c.id for c in cfg.cameras] == ["demo"] and len(cfg.queries) == 4


@pytest.mark.parametrize("env,expected", [("1", True), ("0", False), ("", False)])
def test_redis_cluster_is_a_setting_the_environment_may_override(tmp_path, monkeypatch, env, expected):
    p = tmp_path / "s.yaml"
    p.write_text("redis:\n  url: redis://10.0.0.1:7000/0\n  cluster: false\n  shards: 16\n")
    monkeypatch.setenv("REDIS_CLUSTER", env)
    cfg = load_service_config(p)
    assert cfg.redis.cluster is expected and cfg.redis.keys().shards == 16


def test_redis_cluster_values_are_validated(tmp_path, monkeypatch):
    monkeypatch.setenv("REDIS_CLUSTER", "yes")
    with pytest.raises(ConfigError, match="REDIS_CLUSTER must be 1 or 0"):
        load_service_config(None)
    monkeypatch.setenv("REDIS_CLUSTER", "1")
    with pytest.raises(ConfigError, match="redis.cluster needs redis.url"):
        load_service_config(None)  # the embedded Redis is standalone
    p = tmp_path / "s.yaml"
    p.write_text("redis:\n  shards: 0\n")
    monkeypatch.delenv("REDIS_CLUSTER")
    with pytest.raises(ConfigError, match="redis.shards"):
        load_service_config(p)


def test_the_data_dir_defaults_to_svl_data_dir_then_the_user_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SVL_DATA_DIR", str(tmp_path / "state"))
    assert load_service_config(None).data_dir == str(tmp_path / "state")
    monkeypatch.delenv("SVL_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert load_service_config(None).data_dir == str(tmp_path / "xdg" / "spacevllm")


@pytest.mark.parametrize("engine, message", [
    ("{device: gpu}", "engine.device: must be auto, cpu, cuda or cuda:N"),
    ("{dtype: float64}", "engine.dtype: Input should be 'float32', 'float16' or 'bfloat16'"),
    ("{device: cpu, dtype: float16}", "engine.dtype float16 needs a CUDA device"),
])
def test_engine_device_and_dtype_when_they_cannot_work_fail_at_load_with_the_reason(tmp_path, engine, message):
    p = tmp_path / "s.yaml"
    p.write_text(f"engine: {engine}\n")
    with pytest.raises(ConfigError, match=message):
        load_service_config(p)


def test_engine_device_and_dtype_when_valid_are_kept(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("engine: {device: 'cuda:1', dtype: bfloat16}\n")
    cfg = load_service_config(p).engine
    assert (cfg.device, cfg.dtype) == ("cuda:1", "bfloat16")
    assert (load_service_config(None).engine.device, load_service_config(None).engine.dtype) == ("auto", "float32")


def test_model_windows_when_input_size_is_unset_takes_the_models_and_when_it_disagrees_refuses(tmp_path):
    from engine.app.service import ServiceError, model_windows

    # given the shipped tiny model (64 px, area)
    cfg = load_service_config(None)
    # when ingest's window settings are resolved, then the model's size and filter are filled in
    w = model_windows(cfg)
    assert (w.input_size, w.input_resample) == (64, "area")
    # and a setting that repeats them is fine; one that disagrees (here, or on a camera) is refused naming both
    p = tmp_path / "s.yaml"
    p.write_text("windows: {input_size: 64}\n")
    assert model_windows(load_service_config(p)).input_size == 64
    for text, where in [("windows: {input_size: 32}\n", "windows.input_size is 32"),
                        ("cameras: [{id: c, url: 'synthetic://demo', windows: {input_resample: bicubic}}]\n",
                         "cameras[c].windows.input_resample is 'bicubic'")]:
        p.write_text(text)
        with pytest.raises(ServiceError, match=re.escape(where) + ".*the model .* reads"):
            model_windows(load_service_config(p))


@pytest.mark.parametrize("yaml_text, key", [
    ("windows:\n  frame_ttl_seconds: .inf\n", "windows.frame_ttl_seconds"),  # passed validation and killed ingest
    ("windows:\n  sample_fps: .nan\n", "windows.sample_fps"),
    ("engine:\n  retry_backoff_s: 1.0e308\n", "engine.retry_backoff_s"),
    ("cameras:\n  - id: c\n    url: synthetic://demo\n    open_timeout_s: .inf\n", "cameras.0.open_timeout_s"),
])
def test_load_when_a_number_is_infinite_nan_or_huge_then_refused_naming_the_key(tmp_path, yaml_text, key):
    cfg = tmp_path / "service.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_service_config(cfg)
