"""MQTT side output against a real Mosquitto started by the test, including a restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import pytest

from agent.mqtt import MqttConfig, MqttPublisher
from protos.liftwatch.v1 import records_pb2
from tests.conftest import require_binary

DEADLINE_S = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """A throwaway Mosquitto on a loopback port; `restart` keeps the port."""

    def __init__(self, binary: str, work_dir: Path) -> None:
        self.binary = binary
        self.port = free_port()
        self.config = work_dir / "mosquitto.conf"
        # Persistence keeps a subscriber's session (and its queued QoS 1 messages) across
        # a restart, so the restart test cannot race the subscriber's reconnect.
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {work_dir}/\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(require_binary("mosquitto"), tmp_path)
    b.start()
    yield b
    b.stop()


@contextlib.asynccontextmanager
async def subscriber(
    port: int, topic: str, session: str | None = None
) -> AsyncIterator[aiomqtt.Client]:
    """A client subscribed to ``topic``, retrying while the broker is still starting.

    With ``session``, a persistent session of that name: messages published while it is
    away are queued by the broker for it.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while True:
        try:
            async with aiomqtt.Client(
                "127.0.0.1",
                port,
                timeout=5,
                identifier=session,
                clean_session=False if session else None,
            ) as client:
                await client.subscribe(topic, qos=1)
                yield client
                return
        except aiomqtt.MqttError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def next_message(client: aiomqtt.Client) -> aiomqtt.Message:
    async def first() -> aiomqtt.Message:
        async for message in client.messages:
            return message
        raise AssertionError("subscription ended")

    return await asyncio.wait_for(first(), DEADLINE_S)


def state(unit: str, floor: int) -> records_pb2.Record:
    record = records_pb2.Record(unit_id=unit)
    record.time.FromSeconds(1_700_000_000)
    record.car_state.floor = floor
    record.car_state.door = records_pb2.DOOR_STATE_CLOSED
    return record


def event(unit: str) -> records_pb2.Record:
    record = records_pb2.Record(unit_id=unit)
    record.time.FromSeconds(1_700_000_001)
    record.event.type = records_pb2.EVENT_TYPE_ENTRAPMENT
    record.event.phase = records_pb2.PHASE_RAISED
    record.event.event_id = "e-1"
    return record


def test_state_retained_events_not_and_status_online(broker: Broker) -> None:
    async def scenario() -> None:
        publisher = MqttPublisher(MqttConfig("127.0.0.1", broker.port), "edge-1")
        task = asyncio.create_task(publisher.run())
        try:
            async with subscriber(broker.port, "liftwatch/unit/U1/#") as live:
                publisher.offer(state("U1", 7))
                publisher.offer(event("U1"))
                got = [await next_message(live), await next_message(live)]
            assert [str(m.topic) for m in got] == [
                "liftwatch/unit/U1/state",
                "liftwatch/unit/U1/event",
            ]
            assert json.loads(got[0].payload)["floor"] == 7
            assert json.loads(got[1].payload)["type"] == "EVENT_TYPE_ENTRAPMENT"
            # A late subscriber gets the retained state and status, never the event.
            async with subscriber(broker.port, "liftwatch/#") as late:
                first = await next_message(late)
                second = await next_message(late)
            topics = {str(first.topic): first, str(second.topic): second}
            assert set(topics) == {"liftwatch/unit/U1/state", "liftwatch/agent/edge-1/status"}
            assert all(m.retain for m in topics.values())
            assert topics["liftwatch/agent/edge-1/status"].payload == b"online"
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(scenario())


def test_a_broker_restart_loses_no_queued_event_and_never_blocks_offer(broker: Broker) -> None:
    async def scenario() -> None:
        publisher = MqttPublisher(MqttConfig("127.0.0.1", broker.port), "edge-1")
        task = asyncio.create_task(publisher.run())
        loop = asyncio.get_running_loop()
        try:
            async with subscriber(broker.port, "liftwatch/unit/+/event", "watcher") as live:
                publisher.offer(event("U1"))
                await next_message(live)
            broker.stop()
            # While the broker is down, offer returns at once and the message waits.
            started = loop.time()
            for _ in range(100):
                publisher.offer(state("U1", 3))
            publisher.offer(event("U2"))
            assert loop.time() - started < 0.5
            broker.start()
            async with subscriber(broker.port, "liftwatch/unit/+/event", "watcher") as live:
                message = await next_message(live)
            assert json.loads(message.payload)["unit_id"] == "U2"
            assert publisher.dropped == 0
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(scenario())


def test_a_full_queue_drops_the_oldest_and_counts_it() -> None:
    async def scenario() -> MqttPublisher:
        publisher = MqttPublisher(MqttConfig("127.0.0.1", 1, queue_size=3), "edge-1")
        for floor in range(5):
            publisher.offer(state("U1", floor))
        return publisher

    publisher = asyncio.run(scenario())
    assert publisher.dropped == 2
