"""Bytes that are no AgentFrame, sent over a real gRPC channel to the agent port, are
answered with a MALFORMED Reject saying so, not gRPC's bare INTERNAL; the fleet serves
the next stream as before."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest

from fleet.config import FleetConfig, StoreConfig
from fleet.ingest.gateway import AGENT_GATEWAY
from protos.liftwatch.v1 import gateway_pb2
from tests.fleet.factories import hello
from tests.fleet.harness import running_fleet

CORRUPT = b"\xff\xff\xff"
BAD_UTF8 = (
    gateway_pb2.AgentFrame(hello=gateway_pb2.Hello(agent_id="Q"))
    .SerializeToString()
    .replace(b"Q", b"\xff")
)


def _raw_call(channel: Any) -> Any:
    """A Connect stream that sends bytes as they are (no serializer)."""
    connect = channel.stream_stream(
        f"/{AGENT_GATEWAY}/Connect",
        request_serializer=None,
        response_deserializer=gateway_pb2.FleetFrame.FromString,
    )
    return connect()


@pytest.mark.parametrize(
    ("frames", "where", "why"),
    [
        ([CORRUPT], "the first frame (3 bytes)", "Wire format was corrupt"),
        ([BAD_UTF8], "the first frame", "bad UTF-8"),
        (
            [hello("edge-1", "U1").SerializeToString(), CORRUPT],
            "a frame after Hello (3 bytes)",
            "Wire format was corrupt",
        ),
    ],
    ids=["corrupt-first", "bad-utf8-first", "corrupt-after-hello"],
)
def test_an_unparsable_frame_gets_a_malformed_reject(
    tmp_path: Path, frames: list[bytes], where: str, why: str
) -> None:
    config = FleetConfig(store=StoreConfig(path=str(tmp_path / "fleet.db")))

    async def main_() -> tuple[list[gateway_pb2.FleetFrame], grpc.StatusCode, float]:
        async with running_fleet(config) as fleet:
            call = _raw_call(fleet.channel)
            for frame in frames:
                await call.write(frame)
            got = []
            while (reply := await asyncio.wait_for(call.read(), 20)) is not grpc.aio.EOF:
                got.append(reply)
            code = await call.code()
            # The fleet goes on: a sound agent is welcomed after.
            sound = await fleet.connect(hello("edge-1", "U1"))
            assert (await asyncio.wait_for(sound.read(), 20)).HasField("welcome")
            await sound.done_writing()
            unparsable = fleet.metrics.value("liftwatch_fleet_frames_total", {"kind": "unparsable"})
            return got, code, unparsable

    got, code, unparsable = asyncio.run(main_())
    reject = got[-1].reject
    assert reject.code == gateway_pb2.REJECT_CODE_MALFORMED
    assert reject.reason.startswith(where), reject.reason
    assert "does not parse as an AgentFrame" in reject.reason and why in reject.reason
    assert code == grpc.StatusCode.OK
    assert unparsable == 1
    assert [f.WhichOneof("frame") for f in got[:-1]] == (["welcome"] if len(frames) == 2 else [])
