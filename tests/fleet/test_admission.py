"""Reconnect storms (issue 18, item 4): the fleet admits new agent streams at
``[ingest] admit_streams_per_s``; above it a stream gets UNAVAILABLE with its own
``retry-after-ms`` slot, and real agent uplinks that were turned away come back and
connect, their records stored."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.outbox import Outbox
from agent.uplink import Backoff, Uplink
from fleet.config import FleetConfig, IngestConfig, StoreConfig
from fleet.ingest.admission import MAX_RETRY_AFTER_S, Admission
from protos.liftwatch.v1 import gateway_pb2, records_pb2
from tests.fleet import harness
from tests.fleet.factories import T0
from tests.fleet.harness import Fleet
from tests.support import eventually


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_second_worth_goes_at_once_then_each_gets_its_own_slot() -> None:
    clock = Ticks()
    admission = Admission(2, clock)
    assert [admission.admit(), admission.admit()] == [None, None]
    assert [admission.admit(), admission.admit(), admission.admit()] == [0.5, 1.0, 1.5]
    clock.now += 0.5  # the first slot has come: one token, taken by whoever asks first
    assert admission.admit() is None
    assert admission.admit() == pytest.approx(1.5)  # after the slots already promised


def test_no_slot_is_further_away_than_the_cap() -> None:
    admission = Admission(1, Ticks())
    waits = [admission.admit() for _ in range(200)]
    assert waits[0] is None
    assert max(w for w in waits if w is not None) == MAX_RETRY_AFTER_S


def test_a_rate_of_zero_is_no_admission_object() -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        Admission(0)


def _hello(agent_id: str) -> gateway_pb2.Hello:
    return gateway_pb2.Hello(
        agent_id=agent_id, units=[gateway_pb2.UnitDescriptor(unit_id=f"{agent_id}-car1")]
    )


def test_agents_turned_away_come_back_and_connect(tmp_path: Path) -> None:
    agents = [f"a{n}" for n in range(6)]
    config = FleetConfig(
        store=StoreConfig(path=str(tmp_path / "fleet.db")),
        ingest=IngestConfig(admit_streams_per_s=1),
    )

    async def scenario(fleet: Fleet) -> None:
        boxes = [Outbox(tmp_path / f"{a}.db", wall=lambda: 0.0) for a in agents]
        uplinks = [
            Uplink(
                box,
                lambda a=a: _hello(a),  # type: ignore[misc]
                [fleet.address],
                linger_s=0.0,
                # Without the fleet's hint they would hammer it every 10-20 ms.
                backoff=Backoff(initial_s=0.01, maximum_s=0.02),
            )
            for a, box in zip(agents, boxes, strict=True)
        ]
        for agent_id, box in zip(agents, boxes, strict=True):
            record = records_pb2.Record(unit_id=f"{agent_id}-car1")
            record.time.FromDatetime(T0)  # the fleet's (fake) clock
            record.car_state.floor = 2
            box.append([record])
        tasks = [asyncio.create_task(u.run()) for u in uplinks]
        try:
            await eventually(
                lambda: all(box.depth() == 0 for box in boxes),
                what="every agent connected and acked",
                deadline_s=25,
            )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for box in boxes:
                box.close()
        # Six calls at once against one a second: most waited for their slot.
        deferred = fleet.metrics.streams_deferred._value.get()
        assert deferred >= 1
        committed = fleet.metrics.records_committed._value.get()
        assert committed == len(agents)

    harness.run(config, scenario)
