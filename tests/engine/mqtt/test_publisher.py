"""The MQTT publisher against a real mosquitto and a real Redis: events, retained state and snapshots, discovery
that follows the registries, at least once across a broker restart (and nothing twice), the last will."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engine.contracts.events import EventType
from engine.contracts.queries import QueryRegistry, validate_query
from engine.contracts.settings import MqttSettings
from engine.media.store import SNAPSHOT, MediaStore
from engine.mqtt.publisher import MqttPublisher
from engine.mqtt.topics import Topics
from stream.cameras import CameraRegistry
from stream.config import CameraSettings
from stream.keys import Keys
from tests.api.events_helpers import make_event, write_event
from tests.mqtt_broker import Subscriber, mosquitto, retained  # noqa: F401 (mosquitto: a fixture)
from tests.waiting import wait_for

KEYS = Keys()
ROOT = Path(__file__).resolve().parents[3]
TOPICS = Topics()


def settings(broker, **kw) -> MqttSettings:
    return MqttSettings(url=broker.url, block_ms=50, discovery_every_s=0.2, ack_timeout_s=3.0, keepalive_s=5, **kw)


class Running:
    """A publisher in a thread, stopped (cleanly) at the end."""

    def __init__(self, client, broker, media: MediaStore | None = None, **kw) -> None:
        self.stop = threading.Event()
        self.publisher = MqttPublisher(client, KEYS, settings(broker, **kw), self.stop, media)
        self.thread = threading.Thread(target=self.publisher.run, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive()


@pytest.fixture
def running(redis_client, mosquitto):
    made = []

    def start(**kw) -> Running:
        made.append(Running(redis_client, mosquitto, **kw))
        return made[-1]

    yield start
    for r in made:
        r.stop.set()
        r.thread.join(timeout=15)


def events_of(sub: Subscriber) -> list[dict]:
    return [json.loads(m.payload) for m in sub.on(TOPICS.events)]


def test_publisher_when_events_are_written_then_events_state_and_availability_are_published(redis_client, mosquitto, running):
    # given a subscriber, and a publisher running against the broker
    sub = Subscriber(mosquitto.port, ["spacevllm/#"])
    wait_for(sub.subscribed.is_set, 10, "the subscription")
    r = running()
    sub.wait_last(TOPICS.available, b"online")
    # when the engine writes new, update and end of one event
    written = [make_event(1, type_="new", event_id="e1"), make_event(2, type_="update", event_id="e1"),
               make_event(3, type_="end", event_id="e1")]
    for e in written:
        write_event(redis_client, KEYS, e)
    # then each event's JSON is published exactly as the API serves it, in order, once
    wait_for(lambda: len(events_of(sub)) >= 3, 20, "three events")
    assert [m.payload.decode() for m in sub.on(TOPICS.events)] == [e.to_json() for e in written]
    assert not any(m.retain for m in sub.on(TOPICS.events))
    # and the state went ON, ON, OFF, retained
    states = sub.on(TOPICS.state("cam1", "q1"))
    assert [m.payload for m in states] == [b"ON", b"ON", b"OFF"]
    assert retained(mosquitto.port, "spacevllm/cam1/q1/state") == {"spacevllm/cam1/q1/state": b"OFF"}
    # and the cursor moved past them; the delivery counter says so
    assert redis_client.get(KEYS.mqtt_cursor())
    assert float(redis_client.hget(KEYS.telemetry("mqtt"), "svl_mqtt_deliveries_total|result=published")) == 3
    # when it stops cleanly, then `offline` is retained
    r.close()
    sub.wait_last(TOPICS.available, b"offline")
    assert retained(mosquitto.port, TOPICS.available) == {TOPICS.available: b"offline"}
    sub.close()


def test_publisher_when_restarted_then_resumes_after_the_last_acknowledged_event(redis_client, mosquitto, running):
    sub = Subscriber(mosquitto.port, [TOPICS.events])
    wait_for(sub.subscribed.is_set, 10, "the subscription")
    r = running()
    write_event(redis_client, KEYS, make_event(1))
    wait_for(lambda: len(events_of(sub)) == 1, 20, "the first event")
    r.close()
    # events written while it is down are published once it is back, and nothing before them again
    write_event(redis_client, KEYS, make_event(2, event_id="e2"))
    write_event(redis_client, KEYS, make_event(3, event_id="e3"))
    running()
    wait_for(lambda: len(events_of(sub)) >= 3, 20, "the events written while it was down")
    assert [e["event_id"] for e in events_of(sub)] == ["e1", "e2", "e3"]
    sub.close()


def test_publisher_when_the_broker_restarts_mid_run_then_every_event_arrives_once(redis_client, mosquitto, running, caplog):
    # given a durable subscriber (the broker keeps its session and queue across its restart)
    sub = Subscriber(mosquitto.port, [TOPICS.events], client_id="durable-test-subscriber")
    wait_for(sub.subscribed.is_set, 10, "the subscription")
    running()
    for n in range(5):
        write_event(redis_client, KEYS, make_event(n, event_id=f"a{n}"))
    wait_for(lambda: len(events_of(sub)) == 5, 20, "the events before the restart")
    # when the broker goes away while events keep coming, and comes back
    mosquitto.stop()
    for n in range(5, 10):
        write_event(redis_client, KEYS, make_event(n, event_id=f"b{n}"))
    wait_for(lambda: any("MQTT broker unavailable" in r.getMessage() for r in caplog.records), 20, "the outage logged")
    mosquitto.start()
    # then every event arrives, in order, and none twice
    wait_for(lambda: len(events_of(sub)) >= 10, 40, "the events written during the outage")
    assert [e["event_id"] for e in events_of(sub)] == [f"a{n}" for n in range(5)] + [f"b{n}" for n in range(5, 10)]
    wait_for(lambda: any("MQTT broker is back" in r.getMessage() for r in caplog.records), 20, "the recovery logged")
    assert sum("MQTT broker unavailable" in r.getMessage() for r in caplog.records) == 1
    sub.close()


def test_publisher_when_media_has_a_snapshot_then_it_is_published_retained(redis_client, mosquitto, running, tmp_path):
    store = MediaStore(tmp_path / "media")
    running(media=store)
    e = make_event(1, event_id="snap1")
    write_event(redis_client, KEYS, e)
    # the media worker writes the snapshot a little after the event
    jpeg = b"\xff\xd8 a snapshot \xff\xd9"
    store.write("snap1", SNAPSHOT, jpeg)
    wait_for(lambda: retained(mosquitto.port, TOPICS.snapshot("cam1", "q1")).get(TOPICS.snapshot("cam1", "q1")) == jpeg,
             20, "the retained snapshot")


def test_publisher_when_media_is_off_then_no_snapshot_and_events_still_flow(redis_client, mosquitto, running):
    sub = Subscriber(mosquitto.port, ["spacevllm/#"])
    wait_for(sub.subscribed.is_set, 10, "the subscription")
    running(media=None)
    write_event(redis_client, KEYS, make_event(1))
    wait_for(lambda: sub.on(TOPICS.state("cam1", "q1")), 20, "the state")
    assert sub.on(TOPICS.snapshot("cam1", "q1")) == [] and len(events_of(sub)) == 1
    sub.close()


def discovery_topic(camera: str, query: str) -> str:
    return f"homeassistant/binary_sensor/spacevllm_{camera}_{query}/config"


def test_discovery_when_queries_and_cameras_come_and_go_then_configs_follow(redis_client, mosquitto, running):
    # given two cameras and a query on every camera and one on cam1 only
    cameras, queries = CameraRegistry(redis_client, KEYS), QueryRegistry(redis_client, KEYS)
    for cid in ("cam1", "cam2"):
        cameras.add(CameraSettings(id=cid, url="synthetic://x"))
    queries.add(validate_query({"id": "person", "text": "a person at the door"}))
    queries.add(validate_query({"id": "car", "text": "a red car", "cameras": ["cam1"]}))
    running()
    expected = {discovery_topic(c, q) for c, q in [("cam1", "person"), ("cam2", "person"), ("cam1", "car")]}
    # then one retained config per (camera, query) pair the queries apply to
    got = wait_for(lambda: (lambda r: r if set(r) == expected else None)(retained(mosquitto.port, "homeassistant/#")),
                   20, "three discovery configs")
    config = json.loads(got[discovery_topic("cam1", "car")])
    assert config["name"] == "a red car" and config["unique_id"] == "spacevllm_cam1_car"
    assert config["state_topic"] == "spacevllm/cam1/car/state" and config["availability_topic"] == "spacevllm/available"
    assert (config["payload_on"], config["payload_off"], config["device_class"]) == ("ON", "OFF", "motion")
    assert config["device"]["identifiers"] == ["spacevllm_cam1"] and config["device"]["manufacturer"] == "SpaceVLLM"
    # when the query on cam1 goes, and cam2 goes, then their configs are removed (and only theirs)
    queries.remove("car")
    cameras.remove("cam2")
    wait_for(lambda: set(retained(mosquitto.port, "homeassistant/#")) == {discovery_topic("cam1", "person")}, 20,
             "the removed pairs' configs gone")
    assert redis_client.hkeys(KEYS.mqtt_discovered()) == [b"cam1/person"]


def test_discovery_when_a_query_went_while_the_publisher_was_down_then_removed_on_start(redis_client, mosquitto, running):
    CameraRegistry(redis_client, KEYS).add(CameraSettings(id="cam1", url="synthetic://x"))
    queries = QueryRegistry(redis_client, KEYS)
    queries.add(validate_query({"id": "dog", "text": "a dog"}))
    r = running()
    wait_for(lambda: discovery_topic("cam1", "dog") in retained(mosquitto.port, "homeassistant/#"), 20, "the config")
    r.close()
    queries.remove("dog")
    running()
    wait_for(lambda: retained(mosquitto.port, "homeassistant/#") == {}, 20, "the config removed")


def test_mqtt_role_when_killed_then_the_broker_publishes_offline(redis_client, redis_url, mosquitto, tmp_path):
    # given `spacevllm mqtt` running as its own process (credentials in the URL: shown redacted)
    sub = Subscriber(mosquitto.port, [TOPICS.available])
    wait_for(sub.subscribed.is_set, 10, "the subscription")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "SVL_DATA_DIR": str(tmp_path / "data"),
           "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url,
           "SVL_MQTT_URL": f"mqtt://svl:broker-secret-pw@127.0.0.1:{mosquitto.port}"}
    log = tmp_path / "mqtt.log"
    proc = subprocess.Popen([sys.executable, "-m", "engine.app.cli", "mqtt"], env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        sub.wait_last(TOPICS.available, b"online", timeout_s=60)
        # when it is killed (no clean goodbye), then the broker sends its last will: offline, retained
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        sub.wait_last(TOPICS.available, b"offline", timeout_s=20)
        assert retained(mosquitto.port, TOPICS.available) == {TOPICS.available: b"offline"}
        out = log.read_text()
        assert "mqtt://svl:***@127.0.0.1" in out and "broker-secret-pw" not in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sub.close()


def test_event_type_end_is_the_only_off():
    from engine.mqtt.topics import event_messages

    for t, state in [("new", b"ON"), ("update", b"ON"), ("end", b"OFF")]:
        e = make_event(1, type_=t)
        assert e.type is EventType(t)
        assert event_messages(TOPICS, e)[1].payload == state
