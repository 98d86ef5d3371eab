"""One record the fleet refuses as malformed never blocks the outbox: against a real
in-process fleet, a record whose time is far ahead of the fleet's clock is refused
(MALFORMED, naming its seq), moved into the outbox's quarantine with the fleet's reason,
and every record after it is delivered."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from agent.metrics import AgentMetrics
from agent.outbox import Outbox
from agent.uplink import Backoff, FleetRejectedError, Uplink
from fleet.config import FleetConfig, StoreConfig
from protos.liftwatch.v1 import gateway_pb2, query_pb2, records_pb2
from tests.fleet.factories import T0
from tests.fleet.harness import running_fleet
from tests.support import eventually


def entrapment(event_id: str, at: dt.datetime) -> records_pb2.Record:
    record = records_pb2.Record(unit_id="U1")
    record.time.FromDatetime(at)
    record.event.event_id = event_id
    record.event.type = records_pb2.EVENT_TYPE_ENTRAPMENT
    record.event.phase = records_pb2.PHASE_RAISED
    record.event.onset.FromDatetime(at)
    return record


def hello() -> gateway_pb2.Hello:
    hello = gateway_pb2.Hello(agent_id="a1", agent_version="0.1.0")
    hello.units.add(unit_id="U1").controller.profile = "reference"
    return hello


def test_a_record_refused_for_its_time_is_set_aside_and_the_rest_delivered(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        config = FleetConfig(store=StoreConfig(path=str(tmp_path / "fleet.db")))
        async with running_fleet(config) as fleet:
            box = Outbox(tmp_path / "outbox.db", wall=lambda: 0.0)
            # A clock jumped a year ahead for one record (no RTC, a bad NTP answer).
            box.append([entrapment("good-1", T0)])
            box.append([entrapment("bad", T0 + dt.timedelta(days=365))])
            box.append([entrapment("good-2", T0 + dt.timedelta(seconds=1))])
            metrics = AgentMetrics()
            uplink = Uplink(
                box,
                hello,
                [fleet.address],
                linger_s=0.0,
                backoff=Backoff(initial_s=0.01, maximum_s=0.05),
                metrics=metrics,
            )
            task = asyncio.create_task(uplink.run())
            try:
                await eventually(lambda: asyncio.sleep(0, box.depth()), lambda d: d == 0)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            ((seq, reason, record),) = box.quarantined()
            assert seq == 2 and record.event.event_id == "bad"
            assert reason.startswith("record seq 2 time ") and "ahead" in reason
            assert (
                metrics.registry.get_sample_value(
                    "liftwatch_agent_fleet_rejects_total", {"code": "MALFORMED"}
                )
                == 1
            )
            events = (await fleet.query.ListEvents(query_pb2.ListEventsRequest())).events
            assert sorted(e.event.event_id for e in events) == ["good-1", "good-2"]
            box.close()

    asyncio.run(main())


def test_only_a_malformed_reject_naming_a_record_names_one() -> None:
    named = FleetRejectedError("x", "MALFORMED", "record seq 17 time 2031-01-01T00:00:00Z is")
    assert named.record_seq() == 17
    assert FleetRejectedError("x", "MALFORMED", "empty RecordBatch").record_seq() is None
    # Out of order or not permitted is the agent's or the registry's fault, not the record's.
    assert FleetRejectedError("x", "OUT_OF_ORDER", "record seq 3 follows").record_seq() is None
