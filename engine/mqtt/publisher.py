"""The MQTT publisher: follows the event feed and publishes it where integrators already are (engine/mqtt/topics.py
lists the topics).

A role like the media worker (`spacevllm mqtt`; `up` runs it as a thread when `mqtt.url` is set; a compose
service), one per deployment. At least once, and in the normal case exactly once: an event's messages are
published with QoS 1 and the feed cursor (`Keys.mqtt_cursor`, in Redis) moves past the event only once the broker
acknowledged all of them (PUBACK), so a restart resumes after the last acknowledged event, and a broker outage
(logged once when it goes and once when it is back, retried with capped backoff) re-sends only what was not
acknowledged. The broker holds `<prefix>/available` = `offline` as our last will: a publisher that dies says so.

Home Assistant discovery follows the query and camera registries: a retained config per (camera, query) pair the
queries apply to, removed when the query or the camera goes; which configs are on the broker is kept in Redis
(`Keys.mqtt_discovered`), so a removal made while the publisher was down is still carried out.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

import redis

from engine.contracts.feed import Cursor, EventFeed, FeedEntry, FeedFollower
from engine.contracts.queries import QueryRegistry
from engine.contracts.settings import MqttSettings
from engine.contracts.telemetry import RedisCounters, field_name
from engine.media.store import SNAPSHOT, MediaStore
from engine.mqtt.broker import Broker, BrokerAddress, BrokerDown, BrokerLink
from engine.mqtt.topics import Message, Topics, discovery_config, discovery_message, event_messages, removal_messages
from stream.cameras import CameraRegistry
from stream.keys import Keys
from stream.redis_link import text_fields
from stream.role import Heartbeat, Isolated, RoleLoop, isolate, require_client

log = logging.getLogger(__name__)

LOOKBACK_S = 60.0  # a first start (no stored cursor) publishes the events of the last minute
DELIVERIES = "svl_mqtt_deliveries_total"  # by result: published (every message acknowledged) or gave_up (skipped)


class MqttPublisher:
    def __init__(self, client: redis.Redis, keys: Keys, settings: MqttSettings, stop: threading.Event,
                 media: MediaStore | None = None, now: Callable[[], float] = time.time, worker_id: str | None = None,
                 broker: Broker | None = None, finish: threading.Event | None = None) -> None:
        self.client = require_client(client, "MqttPublisher")
        self.keys = keys
        self.settings = settings
        self.stop = stop
        self.finish = finish or threading.Event()  # set: publish what the feed holds, then stop (up's shutdown)
        self.media = media  # None: media is off, no snapshots
        self.now = now
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.topics = Topics(settings.topic_prefix, settings.discovery_prefix)
        self.broker = broker or Broker(BrokerAddress.from_settings(settings), settings.client_id or f"spacevllm-{self.worker_id}",
                                       self.topics.will(), settings.keepalive_s, settings.ack_timeout_s, settings.ca_file)
        self.link = BrokerLink("mqtt publisher", max_s=10.0)
        self.follower = FeedFollower(EventFeed(client, keys), keys.mqtt_cursor(), count=100,
                                     start_at=lambda feed: Cursor.at_time(keys.shards, self.now() - LOOKBACK_S))
        self.counters = RedisCounters(client, keys.telemetry("mqtt"))
        self.cameras = CameraRegistry(client, keys)
        self.failed = Isolated()
        self.published = 0
        self.snapshots: dict[tuple[str, str], tuple[str, float]] = {}  # (camera, query) -> (event id, look until)
        self.sent_snapshots: dict[tuple[str, str], tuple[str, int]] = {}  # (camera, query) -> (event id, file mtime)
        self._discovery_due = float("-inf")  # monotonic
        self.loop = RoleLoop("mqtt publisher", stop, Heartbeat(client, keys, "mqtt", self.worker_id, settings.heartbeat_s))

    # ---- loop ----------------------------------------------------------------------------
    def run(self, max_seconds: float | None = None) -> None:
        log.info("mqtt publisher %s: broker %s, topics %s/...", self.worker_id, self.broker.address.shown, self.topics.prefix)
        self.loop.run(self.step, stats=lambda: {"broker": "up" if self.link.up else "down", "published": self.published,
                                                "failed": self.failed.total},
                      teardown=lambda: self.broker.close(self.topics.will()), max_seconds=max_seconds)

    def step(self) -> bool | str:
        """Connected (online announced, discovery re-sent), discovery kept in step with the registries, the events
        after the cursor published, their snapshots as they appear. A broker outage is waited out here."""
        try:
            if self.broker.ensure():
                self.broker.send([self.topics.online()])
                self.sync_discovery(force=True)  # a broker that restarted without persistence lost the retained configs
            self.sync_discovery()
            finishing = self.finish.is_set()  # read before the feed: what was written before `finish` is read now
            entries = self.follower.read(block_ms=self.settings.block_ms)
            self.publish(entries)
            self.publish_snapshots()
        except BrokerDown as exc:
            self.broker.drop()
            self.stop.wait(self.link.failed(exc))
            return False
        self.link.ok()
        if finishing and not entries:
            self.stop.set()
            return "stop"
        return bool(entries)

    def _isolated(self, what: str, kind: str, fn: Callable[[], object]) -> object | None:
        """`isolate` for one item, except that a broker outage is the loop's business, like a Redis one."""
        def run():
            try:
                return fn()
            except BrokerDown as exc:
                return exc
        out = isolate(what, kind, run, self.failed)
        if isinstance(out, BrokerDown):
            raise out
        return out

    # ---- events --------------------------------------------------------------------------
    def publish(self, entries: list[FeedEntry]) -> None:
        """Every entry's messages queued at once, then, in feed order, the cursor moved past each entry whose
        messages were all acknowledged: an outage mid-batch re-sends only the unacknowledged ones."""
        queued = []
        for entry in entries:
            e = entry.event
            infos = self._isolated(f"event {e.event_id} (camera {e.camera_id}): mqtt", "event",
                                   lambda e=e: [self.broker.publish(m) for m in event_messages(self.topics, e)])
            queued.append((entry, infos))
        counts = {"published": 0, "gave_up": 0}
        try:
            for entry, infos in queued:
                if infos is None:  # logged and counted by isolate: skipped, never retried forever
                    counts["gave_up"] += 1
                else:
                    self.broker.wait(infos)
                    counts["published"] += 1
                    self.published += 1
                    self._watch_snapshot(entry.event.camera_id, entry.event.query_id, entry.event.event_id)
                self.follower.commit(entry)
            if entries:
                self.follower.commit()  # past unreadable entries too
        finally:
            if any(counts.values()):
                self.counters.update({field_name(DELIVERIES, {"result": k}): v for k, v in counts.items() if v})

    # ---- snapshots -----------------------------------------------------------------------
    def _watch_snapshot(self, camera_id: str, query_id: str, event_id: str) -> None:
        # the media worker renders the snapshot after the event is written: look for it for a while
        if self.media is not None:
            self.snapshots[(camera_id, query_id)] = (event_id, self.now() + self.settings.snapshot_wait_s)

    def publish_snapshots(self) -> None:
        """The newest snapshot of each watched (camera, query), retained, once per version of the file."""
        for pair, (event_id, until) in list(self.snapshots.items()):
            self._isolated(f"event {event_id} (camera {pair[0]}): mqtt snapshot", "snapshot",
                           lambda pair=pair, event_id=event_id: self._publish_snapshot(pair, event_id))
            if self.now() >= until:
                self.snapshots.pop(pair, None)

    def _publish_snapshot(self, pair: tuple[str, str], event_id: str) -> None:
        path = self.media.path(event_id, SNAPSHOT)
        try:
            version = (event_id, path.stat().st_mtime_ns)
        except FileNotFoundError:
            return
        if self.sent_snapshots.get(pair) != version:
            self.broker.send([Message(self.topics.snapshot(*pair), path.read_bytes(), retain=True)])
            self.sent_snapshots[pair] = version

    # ---- Home Assistant discovery --------------------------------------------------------
    def sync_discovery(self, force: bool = False) -> None:
        """Every `discovery_every_s` (or `force`): a config per (camera, query) pair the queries apply to, sent when
        new or changed (`force`: all of them), and the pairs gone removed; Redis records what the broker holds."""
        if not self.settings.discovery or (not force and time.monotonic() < self._discovery_due):
            return
        self._discovery_due = time.monotonic() + self.settings.discovery_every_s
        cameras = [c.id for c in self.cameras.all()]
        want = {f"{cam}/{q.id}": json.dumps(discovery_config(self.topics, cam, q.id, q.text, self.settings.device_class),
                                            sort_keys=True, separators=(",", ":"))
                for q in QueryRegistry(self.client, self.keys).all() for cam in cameras if q.applies_to(cam)}
        have = text_fields(self.client.hgetall(self.keys.mqtt_discovered()))
        changed = {pair: config for pair, config in want.items() if force or have.get(pair) != config}
        gone = [pair for pair in have if pair not in want]
        messages = [discovery_message(self.topics, *pair.split("/", 1), json.loads(config)) for pair, config in changed.items()]
        for pair in gone:
            camera_id, query_id = pair.split("/", 1)
            messages += removal_messages(self.topics, camera_id, query_id)
            self.snapshots.pop((camera_id, query_id), None)
            self.sent_snapshots.pop((camera_id, query_id), None)
        if not messages:
            return
        self.broker.send(messages)
        pipe = self.client.pipeline(transaction=False)
        if changed:
            pipe.hset(self.keys.mqtt_discovered(), mapping=changed)
        if gone:
            pipe.hdel(self.keys.mqtt_discovered(), *gone)
        pipe.execute()
        if gone or len(changed) != len(want) or not have:
            log.info("mqtt discovery: %d sensors (%d sent, %d removed)", len(want), len(changed), len(gone))
