"""Abuse limits on the agent port: one agent certificate holds at most
``[ingest] max_streams_per_agent`` open streams (one more is refused with the reason),
and seqs an agent skips are counted on the seq-gap metrics."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from fleet.config import FleetConfig, IngestConfig, StoreConfig
from protos.liftwatch.v1 import gateway_pb2, gateway_pb2_grpc
from tests.fleet.factories import batch, hello, record
from tests.fleet.harness import Fleet, running_fleet
from tests.fleet.test_tls import Pki, first_frame
from tests.security.conftest import District, agent_channel, with_timeout
from tests.support import eventually

LIMIT = 2


def test_streams_per_agent_certificate_are_limited(pki: Pki, district: District) -> None:
    config = FleetConfig(
        store=StoreConfig(path=str(district.db)),
        tls=pki.tls,
        ingest=dataclasses.replace(IngestConfig(), max_streams_per_agent=LIMIT),
    )

    async def welcomed(fleet: Fleet, channel: Any) -> tuple[Any, gateway_pb2.FleetFrame]:
        call = gateway_pb2_grpc.AgentGatewayStub(channel).Connect()
        await call.write(hello("edge-1", "U1"))
        return call, await first_frame(call)

    async def main_() -> None:
        async with running_fleet(config, query_auth=True) as fleet:
            channel = agent_channel(fleet, pki, "edge-1")
            held = []
            for _ in range(LIMIT):
                call, frame = await welcomed(fleet, channel)
                assert frame.HasField("welcome"), frame
                held.append(call)
            _, frame = await welcomed(fleet, channel)
            assert frame.reject.code == gateway_pb2.REJECT_CODE_TOO_LARGE, frame
            assert f"the limit is {LIMIT} ([ingest] max_streams_per_agent)" in frame.reject.reason
            refused = fleet.metrics.value("liftwatch_fleet_agent_streams_refused_total")
            assert refused == 1
            # Another agent is not crowded out by edge-1's streams.
            async with agent_channel(fleet, pki, "edge-2") as other:
                call = gateway_pb2_grpc.AgentGatewayStub(other).Connect()
                await call.write(hello("edge-2", "U2"))
                assert (await first_frame(call)).HasField("welcome")
                await call.done_writing()
            # A stream that ends frees its place.
            held[0].cancel()

            async def try_again() -> gateway_pb2.FleetFrame:
                return (await welcomed(fleet, channel))[1]

            await eventually(try_again, lambda f: f.HasField("welcome"))
            await channel.close()

    asyncio.run(with_timeout(main_(), 60))


def test_seq_gaps_are_counted(tmp_path: Path) -> None:
    config = FleetConfig(store=StoreConfig(path=str(tmp_path / "fleet.db")))

    async def main_() -> tuple[float, float, float, float]:
        async with running_fleet(config) as fleet:
            call = await fleet.connect(hello("edge-1", "U1"), batch(record(1), record(2)))
            assert (await first_frame(call)).welcome.committed_seq == 0
            assert (await first_frame(call)).ack.up_to_seq == 2
            await call.write(batch(record(5), record(9)))
            assert (await first_frame(call)).ack.up_to_seq == 9
            await call.done_writing()
            gaps = fleet.metrics.value("liftwatch_fleet_seq_gaps_total")
            missing = fleet.metrics.value("liftwatch_fleet_seq_missing_total")
            # Resuming after Welcome (committed 9) at 10 leaves no gap; a replay neither.
            call = await fleet.connect(hello("edge-1", "U1"), batch(record(9), record(10)))
            assert (await first_frame(call)).welcome.committed_seq == 9
            assert (await first_frame(call)).ack.up_to_seq == 10
            await call.done_writing()
            after = (
                fleet.metrics.value("liftwatch_fleet_seq_gaps_total"),
                fleet.metrics.value("liftwatch_fleet_seq_missing_total"),
            )
            return gaps, missing, *after

    assert asyncio.run(with_timeout(main_())) == (2, 5, 2, 5)
