"""Topics, payloads and discovery configs (pure), and the `mqtt` settings section with its environment."""
from __future__ import annotations

import json

import pytest

from engine.contracts.settings import ConfigError, MqttSettings, load_service_config
from engine.mqtt.broker import BrokerAddress
from engine.mqtt.topics import Topics, discovery_config, discovery_message, event_messages, removal_messages
from tests.api.events_helpers import make_event


def test_topics_when_ids_hold_dots_then_object_ids_use_only_what_home_assistant_allows():
    t = Topics("site/a", "ha")
    assert t.state("cam.1", "q-1") == "site/a/cam.1/q-1/state" and t.snapshot("c", "q") == "site/a/c/q/snapshot"
    assert t.object_id("cam.1", "q-1") == "site_a_cam_1_q-1"
    assert t.discovery("cam.1", "q-1") == "ha/binary_sensor/site_a_cam_1_q-1/config"
    assert (t.will().payload, t.will().retain, t.online().payload) == (b"offline", True, b"online")


def test_event_messages_when_new_then_the_event_json_unretained_and_the_state_retained():
    e = make_event(1)
    ev, state = event_messages(Topics(), e)
    assert (ev.topic, ev.payload, ev.retain) == ("spacevllm/events", e.to_json().encode(), False)
    assert (state.topic, state.payload, state.retain) == ("spacevllm/cam1/q1/state", b"ON", True)


def test_discovery_config_when_no_device_class_then_the_key_is_absent():
    config = discovery_config(Topics(), "cam1", "q1", "a person", None)
    assert "device_class" not in config and config["name"] == "a person"
    assert json.loads(discovery_message(Topics(), "cam1", "q1", config).payload) == config


def test_removal_messages_when_a_pair_goes_then_config_state_and_snapshot_are_cleared_retained():
    msgs = removal_messages(Topics(), "cam1", "q1")
    assert [m.topic for m in msgs] == ["homeassistant/binary_sensor/spacevllm_cam1_q1/config", "spacevllm/cam1/q1/state",
                                       "spacevllm/cam1/q1/snapshot"]
    assert all(m.payload == b"" and m.retain for m in msgs)


@pytest.mark.parametrize("url, host, port, tls, user, password", [
    ("mqtt://broker", "broker", 1883, False, None, None),
    ("mqtts://u:p%40ss@broker:8884", "broker", 8884, True, "u", "p@ss"),
    ("mqtts://broker", "broker", 8883, True, None, None),
])
def test_broker_address_when_parsed_then_defaults_by_scheme_and_credentials_decoded(url, host, port, tls, user, password):
    a = BrokerAddress.from_settings(MqttSettings(url=url))
    assert (a.host, a.port, a.tls, a.username, a.password) == (host, port, tls, user, password)
    assert password is None or password not in a.shown


@pytest.mark.parametrize("section, where", [
    ({"url": "http://broker"}, "mqtt.url"),
    ({"topic_prefix": "a/#"}, "mqtt.topic_prefix"),
    ({"topic_prefix": "/a"}, "mqtt.topic_prefix"),
    ({"qos": 2}, "mqtt.qos"),
])
def test_mqtt_settings_when_invalid_then_config_error_names_the_key(tmp_path, section, where):
    p = tmp_path / "c.yaml"
    p.write_text(json.dumps({"mqtt": section}))
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        load_service_config(p)


def test_mqtt_settings_when_the_environment_sets_them_then_they_win_and_the_password_never_shows(tmp_path, monkeypatch):
    p = tmp_path / "c.yaml"
    p.write_text("mqtt:\n  url: mqtt://yaml-broker\n")
    monkeypatch.setenv("SVL_MQTT_URL", "mqtt://env-broker:1884")
    monkeypatch.setenv("SVL_MQTT_USERNAME", "svl")
    monkeypatch.setenv("SVL_MQTT_PASSWORD", "env-Secret")
    cfg = load_service_config(p)
    a = BrokerAddress.from_settings(cfg.mqtt)
    assert (a.host, a.port, a.username, a.password) == ("env-broker", 1884, "svl", "env-Secret")
    assert "env-Secret" not in repr(cfg) and "env-Secret" not in cfg.model_dump_json()
    monkeypatch.setenv("SVL_MQTT_URL", "ftp://u:leaked@x")
    with pytest.raises(ConfigError) as err:
        load_service_config(p)
    assert "leaked" not in str(err.value) and "mqtt.url" in str(err.value)
