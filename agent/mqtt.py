"""Optional MQTT side output for sites that want one (aiomqtt, QoS 1).

Topics (``prefix`` defaults to ``liftwatch``):

===================================== ======== ===========================================
``{prefix}/agent/{agent_id}/status``  retained ``online`` while connected; the broker
                                               publishes the last will ``offline`` when
                                               the agent vanishes
``{prefix}/unit/{unit_id}/state``     retained the latest CarState as JSON
``{prefix}/unit/{unit_id}/event``     not      every event phase as JSON (type, phase,
                                               event_id, onset, floor, reason)
``{prefix}/unit/{unit_id}/counters``  retained trips, door cycles, run hours as JSON
===================================== ======== ===========================================

Never in the critical path: `MqttPublisher.offer` only puts on a bounded queue and never
waits. A broker that is down or slow fills the queue; when it is full the oldest message
is dropped and counted (the outbox, not MQTT, is the record of truth). The publishing
task reconnects with back-off by re-entering the client, as aiomqtt intends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import deque
from dataclasses import dataclass

import aiomqtt
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message as ProtoMessage

from agent.config import MqttSettings
from agent.metrics import AgentMetrics
from agent.uplink import Backoff
from protos.liftwatch.v1 import records_pb2

log = logging.getLogger(__name__)
# The same jittered exponential back-off as the fleet uplink.
RECONNECT = Backoff()


#: The publisher's settings are the ``[mqtt]`` section's, one class for both (its
#: defaults are the config's; an empty username or password means none).
MqttConfig = MqttSettings

#: Seconds between MQTT keep-alive pings; not a config key.
KEEPALIVE_S = 30


@dataclass(frozen=True, slots=True)
class MqttMessage:
    topic: str
    payload: bytes
    retain: bool


class MqttPublisher:
    """Publishes records to a broker from its own task; `offer` never blocks."""

    def __init__(
        self, config: MqttConfig, agent_id: str, metrics: AgentMetrics | None = None
    ) -> None:
        self.config = config
        self.agent_id = agent_id
        self._metrics = metrics
        self._queue: deque[MqttMessage] = deque()
        self._ready = asyncio.Event()
        self.dropped = 0
        self.published = 0
        self.connected = False

    @property
    def status_topic(self) -> str:
        """The agent's retained online/offline topic."""
        return f"{self.config.prefix}/agent/{self.agent_id}/status"

    def offer(self, record: records_pb2.Record) -> None:
        """Queue ``record`` for publishing if it has an MQTT form; never waits."""
        kind = record.WhichOneof("payload")
        unit = f"{self.config.prefix}/unit/{record.unit_id}"
        if kind == "car_state":
            message = MqttMessage(f"{unit}/state", _json(record, record.car_state), True)
        elif kind == "event":
            message = MqttMessage(f"{unit}/event", _json(record, record.event), False)
        elif kind == "counters":
            message = MqttMessage(f"{unit}/counters", _json(record, record.counters), True)
        else:
            return
        if len(self._queue) >= self.config.queue_size:
            self._queue.popleft()
            self.dropped += 1
            if self._metrics is not None:
                self._metrics.mqtt_failures.inc()
        self._queue.append(message)
        self._ready.set()

    async def run(self) -> None:
        """Connect, publish, reconnect; forever, until cancelled."""
        attempt = 0
        rng = random.Random()
        will = aiomqtt.Will(self.status_topic, b"offline", qos=1, retain=True)
        while True:
            try:
                async with aiomqtt.Client(
                    self.config.host,
                    self.config.port,
                    username=self.config.username or None,
                    password=self.config.password or None,
                    identifier=f"liftwatch-agent-{self.agent_id}",
                    will=will,
                    keepalive=KEEPALIVE_S,
                    timeout=10,
                ) as client:
                    await client.publish(self.status_topic, b"online", qos=1, retain=True)
                    self.connected = True
                    attempt = 0
                    log.info("MQTT connected to %s:%d", self.config.host, self.config.port)
                    await self._drain(client)
            except aiomqtt.MqttError as exc:
                log.warning("MQTT broker %s:%d: %s", self.config.host, self.config.port, exc)
            finally:
                self.connected = False
            delay = RECONNECT.delay(attempt, rng)
            attempt += 1
            await asyncio.sleep(delay)

    async def _drain(self, client: aiomqtt.Client) -> None:
        while True:
            if not self._queue:
                self._ready.clear()
                await self._ready.wait()
                continue
            message = self._queue[0]
            # QoS 1: publish returns once the broker has acknowledged it. Only then is the
            # message removed, so a broker restart mid-publish re-sends it after reconnect.
            await client.publish(message.topic, message.payload, qos=1, retain=message.retain)
            if self._queue and self._queue[0] is message:
                self._queue.popleft()
            self.published += 1


def _json(record: records_pb2.Record, body: ProtoMessage) -> bytes:
    document = MessageToDict(body, preserving_proto_field_name=True)
    document["unit_id"] = record.unit_id
    document["time"] = record.time.ToJsonString()
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
