"""The publisher's side of the broker: one paho client at a time, QoS 1, PUBACKs awaited, outages raised.

Why a fresh client after every outage (and paho's own reconnecting off): paho re-sends the QoS 1 messages it still
holds when it reconnects, while the publisher re-sends everything after its cursor; both would publish twice. With
one client per connection, what was not acknowledged is re-sent once, by the publisher, from its cursor.
"""
from __future__ import annotations

import logging
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from engine.contracts.settings import MqttSettings
from engine.mqtt.topics import Message
from stream.redis_link import RedisLink
from stream.urls import redact_url

log = logging.getLogger(__name__)

QOS = 1
CONNECT_TIMEOUT_S = 5.0


class BrokerDown(RuntimeError):
    """The broker cannot be reached, refused us, or did not acknowledge in time."""


class BrokerLink(RedisLink):
    """A broker outage, logged like a Redis one: one line when it goes, one when it is back; capped backoff."""

    service = "MQTT broker"


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None
    shown: str  # the URL, redacted

    @classmethod
    def from_settings(cls, s: MqttSettings) -> "BrokerAddress":
        if not s.url:
            raise ValueError("mqtt.url is not set")
        u = urlsplit(s.url)
        tls = u.scheme == "mqtts"
        username = s.username or (unquote(u.username) if u.username else None)
        password = s.password.get_secret_value() if s.password else (unquote(u.password) if u.password else None)
        return cls(u.hostname or "localhost", u.port or (8883 if tls else 1883), tls, username, password, redact_url(s.url))


class Broker:
    def __init__(self, address: BrokerAddress, client_id: str, will: Message, keepalive_s: int = 30,
                 ack_timeout_s: float = 10.0, ca_file: str | None = None) -> None:
        self.address = address
        self.client_id = client_id
        self.will = will
        self.keepalive_s = keepalive_s
        self.ack_timeout_s = ack_timeout_s
        self.ca_file = ca_file
        self.client: paho.Client | None = None
        self._connected = threading.Event()
        self._gone = threading.Event()
        self._refused = ""

    @property
    def connected(self) -> bool:
        return self.client is not None and self._connected.is_set() and not self._gone.is_set()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
            self._gone.set()
        else:
            self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._gone.set()

    def ensure(self) -> bool:
        """Connected (a new client when the last one is gone); True when this call connected. BrokerDown if not."""
        if self.connected:
            return False
        self.drop()
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True,
                        reconnect_on_failure=False)
        c.will_set(self.will.topic, self.will.payload, qos=QOS, retain=self.will.retain)
        if self.address.username is not None:
            c.username_pw_set(self.address.username, self.address.password)
        if self.address.tls:
            c.tls_set(ca_certs=self.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        c.connect_timeout = CONNECT_TIMEOUT_S
        c.on_connect, c.on_disconnect = self._on_connect, self._on_disconnect
        self._connected.clear()
        self._gone.clear()
        self._refused = ""
        self.client = c
        try:
            c.connect(self.address.host, self.address.port, keepalive=self.keepalive_s)
        except (OSError, ValueError) as exc:
            self.client = None
            raise BrokerDown(f"cannot connect to {self.address.shown}: {exc}") from None
        c.loop_start()
        deadline = time.monotonic() + self.ack_timeout_s
        while not self._connected.is_set() and not self._gone.is_set() and time.monotonic() < deadline:
            self._connected.wait(0.02)
        if not self.connected:
            self.drop()
            raise BrokerDown(f"{self.address.shown} refused the connection: {self._refused}" if self._refused
                             else f"no answer (CONNACK) from {self.address.shown} in {self.ack_timeout_s:.0f} s")
        return True

    def publish(self, m: Message) -> paho.MQTTMessageInfo:
        """Queue one QoS 1 message (see `wait`); BrokerDown when the connection is gone."""
        if not self.connected:
            raise BrokerDown(f"not connected to {self.address.shown}")
        info = self.client.publish(m.topic, m.payload, qos=QOS, retain=m.retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise BrokerDown(f"publish to {self.address.shown} failed: {paho.error_string(info.rc)}")
        return info

    def wait(self, infos: list[paho.MQTTMessageInfo]) -> None:
        """Until the broker acknowledged every message (PUBACK); BrokerDown when it goes or takes too long."""
        deadline = time.monotonic() + self.ack_timeout_s
        for info in infos:
            while not info.is_published():
                if self._gone.is_set():
                    raise BrokerDown(f"the connection to {self.address.shown} was lost")
                if time.monotonic() >= deadline:
                    raise BrokerDown(f"no PUBACK from {self.address.shown} in {self.ack_timeout_s:.0f} s")
                self._gone.wait(0.01)

    def send(self, messages: list[Message]) -> None:
        self.wait([self.publish(m) for m in messages])

    def drop(self) -> None:
        """Forget the client (its unacknowledged messages with it) without a goodbye."""
        c, self.client = self.client, None
        if c is not None:
            try:
                c.disconnect()
                c.loop_stop()
            except Exception as exc:  # a client already broken has nothing left to close
                log.debug("closing the MQTT client: %s", exc)

    def close(self, farewell: Message | None = None) -> None:
        """A clean stop: `farewell` (the availability's `offline`, which a clean DISCONNECT does not trigger as the
        will) sent and acknowledged when the broker is there, then the connection closed."""
        if farewell is not None and self.connected:
            try:
                self.send([farewell])
            except BrokerDown as exc:
                log.warning("MQTT: %s not published on stop: %s", farewell.topic, exc)
        self.drop()
