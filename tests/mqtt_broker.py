"""A real MQTT broker for tests: Debian's mosquitto on 127.0.0.1 on a free port (its own config and persistence in a
temporary directory), and a paho subscriber that records what it receives.

Use the `mosquitto` fixture by importing it into a test module (`from tests.mqtt_broker import mosquitto`)."""
from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from stream.redis_server import free_port
from tests.waiting import stop_process, wait_for, wait_until

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Mosquitto:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = root / "mosquitto.log"
        self.conf = root / "mosquitto.conf"
        # persistence: a restart keeps retained messages and a durable subscriber's session, like a real deployment
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                             f"persistence_location {root}/\nautosave_interval 1\nlog_dest stderr\n")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def accepting(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def start(self) -> "Mosquitto":
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=self.log.open("a"))
        wait_for(lambda: self.accepting() or self.proc.poll() is not None, 10, "mosquitto to listen")
        if self.proc.poll() is not None:
            raise RuntimeError(f"mosquitto did not start: {self.log.read_text()[-2000:]}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 10)  # SIGTERM first: mosquitto saves its persistence file
        wait_until(lambda: not self.accepting(), 5)


@pytest.fixture
def mosquitto(tmp_path):
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto not installed (apt-get install mosquitto mosquitto-clients; .ci/run does)")
    broker = Mosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.stop()


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool


class Subscriber:
    """A paho client subscribed to `topics` (QoS 1) that keeps every message; with `client_id`, a durable session
    (clean_session off): the broker queues what is published while it is away, across a broker restart too."""

    def __init__(self, port: int, topics: list[str], client_id: str | None = None) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[Received] = []
        self.lock = threading.Lock()
        self.topics = topics
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or "",
                                  clean_session=client_id is None)
        self.client.on_message = lambda c, u, m: self._keep(Received(m.topic, m.payload, bool(m.retain)))
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in self.topics])
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _keep(self, m: Received) -> None:
        with self.lock:
            self.messages.append(m)

    def on(self, topic: str) -> list[Received]:
        with self.lock:
            return [m for m in self.messages if m.topic == topic]

    def last(self, topic: str) -> bytes | None:
        got = self.on(topic)
        return got[-1].payload if got else None

    def wait_last(self, topic: str, payload: bytes, timeout_s: float = 30.0) -> None:
        wait_for(lambda: self.last(topic) == payload, timeout_s, f"{payload!r} on {topic} (got {self.last(topic)!r})")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(port: int, topic_filter: str) -> dict[str, bytes]:
    """What the broker retains under `topic_filter` (non-empty payloads), as a fresh subscriber sees it. The broker
    sends the retained messages when it handles the SUBSCRIBE, before anything the subscriber publishes later: a
    marker published after the SUBACK arrives after all of them."""
    marker = f"test-barrier/{uuid.uuid4().hex}"
    sub = Subscriber(port, [topic_filter, marker])
    try:
        wait_for(sub.subscribed.is_set, 10, "the SUBACK")
        sub.client.publish(marker, b"end", qos=1)
        wait_for(lambda: sub.on(marker), 10, "the barrier message")
        return {m.topic: m.payload for m in sub.messages if m.retain and m.payload and m.topic != marker}
    finally:
        sub.close()
