"""The ingest stream end to end: `serve` on a loopback port, a real grpc.aio client."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from fleet.config import FleetConfig, IngestConfig, StoreConfig
from fleet.ingest.gateway import check_batch, check_hello
from fleet.store.base import EventQuery
from fleet.store.sqlite import SqliteStore
from protos.liftwatch.v1 import (
    gateway_pb2,
    query_pb2,
    records_pb2,
)
from tests.fleet import harness
from tests.fleet.factories import T0, batch, hello, record
from tests.fleet.harness import Fleet

LIMITS = IngestConfig(max_batch_records=5, max_batch_bytes=4096, heartbeat_interval_s=7)
ENTRAPMENT = records_pb2.EVENT_TYPE_ENTRAPMENT


def run(db: Path, scenario: Callable[[Fleet], Awaitable[None]]) -> None:
    config = FleetConfig(store=StoreConfig(path=str(db)), ingest=LIMITS)
    harness.run(config, scenario)


async def read(call: Any) -> gateway_pb2.FleetFrame:
    frame = await call.read()
    assert frame is not grpc.aio.EOF, "stream ended"
    assert isinstance(frame, gateway_pb2.FleetFrame)
    return frame


async def assert_ends(call: Any) -> None:
    assert await call.read() is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK


def test_hello_batches_acks_reconnect_and_replay(tmp_path: Path) -> None:
    first = [
        record(1, firmware="3.2.0"),
        record(2, event=ENTRAPMENT, event_id="e1"),
        record(3, "U2", link_up=False),
    ]

    async def scenario(fleet: Fleet) -> None:
        call = await fleet.connect(hello("a1", "U1", "U2"))
        welcome = (await read(call)).welcome
        assert (welcome.committed_seq, welcome.max_batch_records) == (0, 5)
        assert (welcome.max_batch_bytes, welcome.heartbeat_interval_s) == (4096, 7)
        await call.write(batch(*first))
        assert (await read(call)).ack.up_to_seq == 3
        await call.done_writing()
        await assert_ends(call)

        fleet.clock.now = T0 + dt.timedelta(seconds=10)
        call = await fleet.connect(hello("a1", "U1", "U2", firmware="3.2.0"))
        assert (await read(call)).welcome.committed_seq == 3
        # The agent never saw the ack: it resends 1..3, then a new record.
        await call.write(batch(*first))
        assert (await read(call)).ack.up_to_seq == 3
        cleared = record(4, event=ENTRAPMENT, phase=records_pb2.PHASE_CLEARED, event_id="e1")
        await call.write(batch(cleared))
        assert (await read(call)).ack.up_to_seq == 4
        await call.write(gateway_pb2.AgentFrame(heartbeat=gateway_pb2.Heartbeat()))
        await call.done_writing()
        await assert_ends(call)

        events = (await fleet.query.ListEvents(query_pb2.ListEventsRequest())).events
        assert [(e.seq, e.event.phase) for e in events] == [
            (2, records_pb2.PHASE_RAISED),
            (4, records_pb2.PHASE_CLEARED),
        ]
        unit = await fleet.query.GetUnit(query_pb2.GetUnitRequest(unit_id="U1"))
        assert (unit.controller.firmware, unit.agent_id, unit.registered) == ("3.2.0", "a1", False)
        assert unit.status == query_pb2.UNIT_STATUS_ONLINE
        u2 = await fleet.query.GetUnit(query_pb2.GetUnitRequest(unit_id="U2"))
        assert u2.status == query_pb2.UNIT_STATUS_BLIND
        cover = await fleet.query.Coverage(query_pb2.CoverageRequest())
        assert (cover.monitored, cover.online, cover.blind, cover.unregistered_reporting) == (
            2,
            1,
            1,
            2,
        )
        blind = await fleet.query.ListUnits(
            query_pb2.ListUnitsRequest(status=query_pb2.UNIT_STATUS_BLIND)
        )
        assert [u.unit_id for u in blind.units] == ["U2"]
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await fleet.query.GetUnit(query_pb2.GetUnitRequest(unit_id="nope"))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert fleet.metrics.value("liftwatch_fleet_records_committed_total") == 4
        assert fleet.metrics.value("liftwatch_fleet_frames_total", {"kind": "batch"}) == 3
        assert fleet.metrics.value("liftwatch_fleet_frames_total", {"kind": "heartbeat"}) == 1

    db = tmp_path / "fleet.db"
    run(db, scenario)
    store = SqliteStore.open(str(db), readonly=True)
    assert store.committed_seq("a1") == 4
    assert len(store.list_events(EventQuery())) == 2
    store.close()


def test_record_for_a_unit_not_in_hello_is_rejected_and_not_stored(tmp_path: Path) -> None:
    async def scenario(fleet: Fleet) -> None:
        call = await fleet.connect(hello("a1", "U1"))
        await read(call)
        await call.write(batch(record(1), record(2, "U9")))
        reject = (await read(call)).reject
        assert reject.code == gateway_pb2.REJECT_CODE_UNIT_NOT_PERMITTED
        assert "U9" in reject.reason
        await assert_ends(call)

        call = await fleet.connect(hello("a1", "U1"))
        assert (await read(call)).welcome.committed_seq == 0  # the whole batch was refused
        await call.done_writing()
        code = {"code": "UNIT_NOT_PERMITTED"}
        assert fleet.metrics.value("liftwatch_fleet_rejects_total", code) == 1

    run(tmp_path / "fleet.db", scenario)


def test_a_first_frame_that_is_not_hello_is_a_protocol_reject(tmp_path: Path) -> None:
    async def scenario(fleet: Fleet) -> None:
        call = await fleet.connect(batch(record(1)))
        reject = (await read(call)).reject
        assert reject.code == gateway_pb2.REJECT_CODE_PROTOCOL
        assert "Hello" in reject.reason
        await assert_ends(call)

        call = await fleet.connect(hello("a1", "U1"), hello("a1", "U1"))
        await read(call)
        assert (await read(call)).reject.code == gateway_pb2.REJECT_CODE_PROTOCOL
        await assert_ends(call)

        call = await fleet.connect(gateway_pb2.AgentFrame(hello=gateway_pb2.Hello()))
        assert (await read(call)).reject.code == gateway_pb2.REJECT_CODE_MALFORMED
        await assert_ends(call)
        # The server survived all of it.
        call = await fleet.connect(hello("a2", "U1"))
        assert (await read(call)).welcome.committed_seq == 0
        await call.done_writing()

    run(tmp_path / "fleet.db", scenario)


PERMITTED = frozenset({"U1"})


def _code(*records: records_pb2.Record) -> str:
    problem = check_batch(gateway_pb2.RecordBatch(records=list(records)), PERMITTED, LIMITS)
    return "ok" if problem is None else gateway_pb2.RejectCode.Name(problem.code)


def test_batch_validation_rules() -> None:
    untimed = records_pb2.Record(seq=1, unit_id="U1", car_state=records_pb2.CarState())
    empty = records_pb2.Record(seq=1, unit_id="U1")
    empty.time.FromDatetime(T0)
    big = record(1)
    big.event.reason = "x" * 5000
    assert _code(record(1), record(2)) == "ok"
    assert _code() == "REJECT_CODE_MALFORMED"
    assert _code(record(0)) == "REJECT_CODE_MALFORMED"
    assert _code(record(2**63)) == "REJECT_CODE_MALFORMED"
    assert _code(empty) == "REJECT_CODE_MALFORMED"
    assert _code(untimed) == "REJECT_CODE_MALFORMED"
    assert _code(record(2), record(2)) == "REJECT_CODE_OUT_OF_ORDER"
    assert _code(record(3), record(1)) == "REJECT_CODE_OUT_OF_ORDER"
    assert _code(*(record(i) for i in range(1, 7))) == "REJECT_CODE_TOO_LARGE"
    assert _code(big) == "REJECT_CODE_TOO_LARGE"
    assert _code(record(1, "U9")) == "REJECT_CODE_UNIT_NOT_PERMITTED"
    # Across batches of one stream, seqs keep increasing.
    later = check_batch(gateway_pb2.RecordBatch(records=[record(3)]), PERMITTED, LIMITS, 3)
    assert later is not None
    assert (later.code, later.reason) == (
        gateway_pb2.REJECT_CODE_OUT_OF_ORDER,
        "record seq 3 follows seq 3 on this stream",
    )


@pytest.mark.parametrize(
    ("agent_id", "units", "reason"),
    [
        ("", ["U1"], "agent_id is empty"),
        ("a 1", ["U1"], "agent_id contains whitespace"),
        ("a" * 129, ["U1"], "longer than 128"),
        ("a1", ["U1", ""], "unit #1 id is empty"),
        ("a1", ["U1", "U1"], "declares unit 'U1' twice"),
        ("a1", [f"U{i}" for i in range(65)], "the limit is 64"),
    ],
)
def test_hello_validation_rules(agent_id: str, units: list[str], reason: str) -> None:
    frame = gateway_pb2.Hello(
        agent_id=agent_id, units=[gateway_pb2.UnitDescriptor(unit_id=u) for u in units]
    )
    problem = check_hello(frame)
    assert problem is not None
    assert problem.code == gateway_pb2.REJECT_CODE_MALFORMED
    assert reason in problem.reason
