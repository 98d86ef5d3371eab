"""Every string an agent sends is bounded (probe ``string_limits``): Hellos with huge
strings are refused as MALFORMED naming the field and leave the database as it was; a
ControllerInfo record or event id over its limit is refused naming the record; an
event's reason is clipped, the event kept."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest

from fleet.config import FleetConfig, StoreConfig
from fleet.ingest.gateway import MAX_REASON_LENGTH
from fleet.store.base import EventQuery
from fleet.store.sqlite import SqliteStore
from protos.liftwatch.v1 import gateway_pb2, records_pb2
from tests.fleet.factories import batch, hello, record
from tests.fleet.harness import Fleet, running_fleet

HUGE = 300_000  # characters: ten such Hellos are 3 MB, under the message limit each
# What ten refused Hellos may add at most: nothing is written for them, but the fleet's
# own bookkeeping (the sweep, gauges) may touch a page or two meanwhile.
GROWTH_BOUND = 256 * 1024
FIELDS = ("agent_version", "vendor", "model", "firmware", "serial", "profile")


def _huge_hello(field: str, n: int) -> gateway_pb2.AgentFrame:
    frame = hello("edge-1", "U1")
    text = chr(ord("a") + n % 26) * HUGE
    if field == "agent_version":
        frame.hello.agent_version = text
    else:
        setattr(frame.hello.units[0].controller, field, text)
    return frame


def _db_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))


async def _first(call: Any) -> gateway_pb2.FleetFrame:
    frame = await asyncio.wait_for(call.read(), 20)
    assert frame is not grpc.aio.EOF, "stream ended without a frame"
    assert isinstance(frame, gateway_pb2.FleetFrame)
    return frame


def _run(db: Path, scenario: Any) -> Any:
    config = FleetConfig(store=StoreConfig(path=str(db)))

    async def main_() -> Any:
        async with running_fleet(config) as fleet:
            return await asyncio.wait_for(scenario(fleet), 60)

    return asyncio.run(main_())


def test_huge_hellos_are_refused_and_do_not_grow_the_database(tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"

    async def scenario(fleet: Fleet) -> list[str]:
        # A sound Hello first: the unit exists, the database has its working size.
        call = await fleet.connect(hello("edge-1", "U1"))
        assert (await _first(call)).HasField("welcome")
        await call.done_writing()
        before = _db_bytes(db)
        reasons = []
        for n in range(10):
            field = FIELDS[n % len(FIELDS)]
            call = await fleet.connect(_huge_hello(field, n))
            reject = (await _first(call)).reject
            assert reject.code == gateway_pb2.REJECT_CODE_MALFORMED, reject
            assert f"{field} is {HUGE} characters long" in reject.reason, reject.reason
            reasons.append(reject.reason)
        growth = _db_bytes(db) - before
        assert growth < GROWTH_BOUND, f"the database grew by {growth} bytes"
        return reasons

    reasons = _run(db, scenario)
    assert "Hello unit 'U1' controller.firmware" in " ".join(reasons)
    store = SqliteStore.open(str(db))
    try:
        unit = store.get_unit("U1")
        assert unit is not None and unit.controller.firmware == "3.1.2"
    finally:
        store.close()


@pytest.mark.parametrize(
    ("build", "named"),
    [
        (lambda: record(1, firmware="9" * 129), "record seq 1 controller_info.firmware"),
        (
            lambda: record(1, event=records_pb2.EVENT_TYPE_ENTRAPMENT, event_id="e" * 129),
            "record seq 1 event.event_id",
        ),
    ],
    ids=["controller_info", "event_id"],
)
def test_a_record_string_over_its_limit_is_malformed(
    tmp_path: Path, build: Any, named: str
) -> None:
    async def scenario(fleet: Fleet) -> gateway_pb2.Reject:
        call = await fleet.connect(hello("edge-1", "U1"), batch(build()))
        assert (await _first(call)).HasField("welcome")
        return (await _first(call)).reject

    reject = _run(tmp_path / "fleet.db", scenario)
    assert reject.code == gateway_pb2.REJECT_CODE_MALFORMED
    assert reject.reason.startswith(named), reject.reason


def test_a_long_event_reason_is_clipped_and_the_event_kept(tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"
    entrapment = record(1, event=records_pb2.EVENT_TYPE_ENTRAPMENT, event_id="e1")
    entrapment.event.reason = "x" * 50_000

    async def scenario(fleet: Fleet) -> int:
        call = await fleet.connect(hello("edge-1", "U1"), batch(entrapment))
        assert (await _first(call)).HasField("welcome")
        ack = (await _first(call)).ack.up_to_seq
        await call.done_writing()
        return ack

    assert _run(db, scenario) == 1
    store = SqliteStore.open(str(db))
    try:
        (event,) = store.list_events(EventQuery(unit_id="U1"))
    finally:
        store.close()
    assert len(event.reason) == MAX_REASON_LENGTH
    assert event.reason.endswith("…")
