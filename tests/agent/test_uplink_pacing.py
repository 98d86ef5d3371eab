"""The uplink's pacing against an in-process fleet (issue 18, items 4 and 6): a heartbeat
is skipped when batches within the interval carried every unit of the Hello (and sent
when one unit was left out), and a fleet's UNAVAILABLE with a ``retry-after-ms`` hint
is waited out instead of the short back-off."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from agent.metrics import AgentMetrics
from agent.outbox import Outbox
from agent.uplink import RETRY_AFTER_KEY, Backoff, Uplink
from protos.liftwatch.v1 import gateway_pb2, gateway_pb2_grpc, records_pb2
from tests.support import eventually

HEARTBEAT_S = 2


class Fleet(gateway_pb2_grpc.AgentGatewayServicer):  # type: ignore[misc]
    """Counts heartbeats and acks batches; refuses the first ``refuse`` calls with an
    UNAVAILABLE carrying ``hint_ms`` (when set), noting when each call came."""

    def __init__(self, refuse: int = 0, hint_ms: int | None = None) -> None:
        self.heartbeats = 0
        self.batches = 0
        self.calls: list[float] = []
        self.refuse = refuse
        self.hint_ms = hint_ms

    async def Connect(  # noqa: N802 (the gRPC method's name)
        self, frames: AsyncIterator[gateway_pb2.AgentFrame], context: Any
    ) -> AsyncIterator[gateway_pb2.FleetFrame]:
        self.calls.append(time.monotonic())
        if len(self.calls) <= self.refuse:
            metadata = () if self.hint_ms is None else ((RETRY_AFTER_KEY, str(self.hint_ms)),)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "busy", trailing_metadata=metadata)
        async for frame in frames:
            kind = frame.WhichOneof("frame")
            if kind == "hello":
                yield gateway_pb2.FleetFrame(
                    welcome=gateway_pb2.Welcome(heartbeat_interval_s=HEARTBEAT_S)
                )
            elif kind == "heartbeat":
                self.heartbeats += 1
            elif kind == "batch":
                self.batches += 1
                seq = frame.batch.records[-1].seq
                yield gateway_pb2.FleetFrame(ack=gateway_pb2.Ack(up_to_seq=seq))


async def _serve(fleet: Fleet) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    gateway_pb2_grpc.add_AgentGatewayServicer_to_server(fleet, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def _hello(*units: str) -> gateway_pb2.Hello:
    return gateway_pb2.Hello(
        agent_id="a1", units=[gateway_pb2.UnitDescriptor(unit_id=u) for u in units]
    )


def _sample(unit: str) -> records_pb2.Record:
    record = records_pb2.Record(unit_id=unit)
    record.car_state.floor = 3
    return record


async def _beats_while_sending(tmp_path: Path, declared: tuple[str, ...]) -> tuple[Fleet, float]:
    """Send a sample of u1 every 0.2 s for three heartbeat intervals; the fleet's count
    of heartbeats and the agent's count of those it skipped."""
    fleet = Fleet()
    server, address = await _serve(fleet)
    box = Outbox(tmp_path / "outbox.db", wall=lambda: 0.0)
    metrics = AgentMetrics()
    uplink = Uplink(box, lambda: _hello(*declared), [address], linger_s=0.0, metrics=metrics)
    task = asyncio.create_task(uplink.run())
    try:
        await eventually(lambda: uplink.connected, what="connected", interval_s=0.01)
        for _ in range(int(3 * HEARTBEAT_S / 0.2)):
            box.append([_sample("u1")])
            uplink.notify()
            await asyncio.sleep(0.2)
        await eventually(lambda: box.depth() == 0, what="all acked", interval_s=0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.stop(None)
        box.close()
    return fleet, metrics.heartbeats_skipped._value.get()


def test_no_heartbeat_while_batches_carry_every_unit(tmp_path: Path) -> None:
    fleet, skipped = asyncio.run(_beats_while_sending(tmp_path, ("u1",)))
    assert fleet.batches >= 3 * HEARTBEAT_S / 0.2 / 2  # sent as kept, not lingering
    assert fleet.heartbeats == 0
    assert skipped >= 2


def test_a_unit_no_batch_carried_still_gets_its_heartbeat(tmp_path: Path) -> None:
    fleet, skipped = asyncio.run(_beats_while_sending(tmp_path, ("u1", "u2")))
    assert fleet.heartbeats >= 2
    assert skipped == 0


async def _connect_calls(tmp_path: Path, fleet: Fleet) -> list[float]:
    """Run an uplink with a 10-20 ms back-off until it connects to ``fleet``; when each
    of its calls came."""
    server, address = await _serve(fleet)
    box = Outbox(tmp_path / "outbox.db", wall=lambda: 0.0)
    uplink = Uplink(
        box,
        lambda: _hello("u1"),
        [address],
        backoff=Backoff(initial_s=0.01, maximum_s=0.02),
        rng=random.Random(7),
    )
    task = asyncio.create_task(uplink.run())
    try:
        await eventually(lambda: uplink.connected, what="connected", interval_s=0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.stop(None)
        box.close()
    return fleet.calls


def test_a_retry_hint_is_waited_out(tmp_path: Path) -> None:
    calls = asyncio.run(_connect_calls(tmp_path, Fleet(refuse=1, hint_ms=1500)))
    assert len(calls) == 2
    # Without the hint the agent would have been back within 20 ms.
    assert calls[1] - calls[0] >= 1.5


def test_without_a_hint_the_back_off_applies(tmp_path: Path) -> None:
    calls = asyncio.run(_connect_calls(tmp_path, Fleet(refuse=3)))
    assert len(calls) == 4
