from __future__ import annotations

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.settings import ConfigError, load_service_config


def test_a_typo_fails_at_load_with_the_key_path(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("windows:\n  sample_fsp: 2\ncameras:\n  - {id: 'bad id', url: 'file:///x.mp4'}\n")
    with pytest.raises(ConfigError) as err:
        load_service_config(p)
    assert "windows.sample_fsp: Extra inputs are not permitted" in str(err.value)
    assert "cameras.0.id" in str(err.value)


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

    cfg = load_service_config(Path(__file__).resolve().parents[2] / "configs" / "service.yaml")
    assert [c.id for c in cfg.cameras] == ["demo"] and len(cfg.queries) == 4
