"""The flight recorder inside the agent: an event's RAISE evidence is committed with the
event (a kill -9 after the raise loses nothing before the onset), evidence ranks with
events in the outbox, held back from a fleet that does not take it and released to one
that does, and on-demand requests are answered from the ring (never the bus)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.app import Agent
from agent.bus.link import LinkFault
from agent.bus.plan import Table
from agent.bus.scheduler import TurnKind
from agent.config import load_config
from agent.outbox import Outbox, OutboxFullError
from agent.uplink import Uplink
from protos.evidence import decode_samples
from protos.liftwatch.v1 import gateway_pb2, gateway_pb2_grpc, records_pb2
from tests.agent.test_agent_commits import CONFIG, REGISTERS
from tests.agent.test_outbox_disk_full import fill, free_bytes, mounted_tmpfs
from tests.support import eventually

T0 = 1_796_000_000.0  # UTC of monotonic 0


class Clock:
    """The test's monotonic clock (set by `poll`) and the wall clock that follows it."""

    now = 0.0


@pytest.fixture
def app(tmp_path: Path) -> Agent:
    path = tmp_path / "agent.toml"
    path.write_text(CONFIG, encoding="utf-8")
    Clock.now = 0.0
    return Agent(load_config(path), monotonic=lambda: Clock.now, wall=lambda: T0 + Clock.now)


def committed(app: Agent) -> list[records_pb2.Record]:
    return [records_pb2.Record.FromString(p.payload) for p in app.outbox.pending(0, 100_000)]


def metric(app: Agent, name: str, **labels: str) -> float:
    return app.metrics.registry.get_sample_value(f"liftwatch_agent_{name}", labels) or 0.0


def poll(app: Agent, start: float, end: float, *, answer: bool = True) -> None:
    """Polls of car-1 at 10 Hz from ``start`` to ``end`` (monotonic s); each cycle ends."""
    sink = app.sink("line")
    values = {(Table.HOLDING, a): v for a, v in enumerate(REGISTERS)}
    for i in range(round((end - start) * 10)):
        t = Clock.now = start + i / 10
        if answer:
            sink.on_sample(1, values, TurnKind.FAST, t)
        else:
            sink.on_failure(1, LinkFault.TIMEOUT, t)
        sink.on_cycle_end(t)


def test_the_raise_commits_its_evidence_with_the_event(app: Agent) -> None:
    try:
        poll(app, 0, 100)
        # The controller falls silent at 100 s: CONTROLLER_LINK_LOST after 5 s.
        poll(app, 100, 106, answer=False)
        records = committed(app)
        kinds = [r.WhichOneof("payload") for r in records]
        at = kinds.index("event")
        # The evidence follows its event, committed in the same transaction (the event's
        # commit is synced: a kill -9 after it keeps both).
        assert kinds[at + 1] == "evidence"
        event, evidence = records[at].event, records[at + 1].evidence
        assert event.type == records_pb2.EVENT_TYPE_CONTROLLER_LINK_LOST
        assert evidence.event_id == event.event_id
        assert evidence.end == records_pb2.EVIDENCE_END_RAISE
        samples = decode_samples(evidence)
        onset_us = event.onset.ToMicroseconds()
        # From pre_s (60 s) before the onset, the car standing at floor 3, then silence.
        assert samples[0].time_us <= onset_us - 59_900_000
        assert samples[0].floor == 3 and samples[0].link_up
        assert not samples[-1].link_up
        assert metric(app, "evidence_windows_total", end="raise") == 1
        assert metric(app, "evidence_bytes_total") == records[at + 1].ByteSize()
        assert metric(app, "recorder_ring_bytes") == 2 * 324_000  # two cars, 10 Hz
    finally:
        app.outbox.close()


def test_the_post_window_follows_and_the_hello_says_the_agent_records(app: Agent) -> None:
    try:
        assert app.hello().records_evidence
        poll(app, 0, 20)
        poll(app, 20, 60, answer=False)  # raised at 25 s, post_s 30 s later: 55 s
        ends = [r.evidence.end for r in committed(app) if r.WhichOneof("payload") == "evidence"]
        assert ends == [records_pb2.EVIDENCE_END_RAISE, records_pb2.EVIDENCE_END_POST]
    finally:
        app.outbox.close()


def test_an_evidence_request_is_answered_from_the_ring(app: Agent) -> None:
    try:
        poll(app, 0, 100)
        app.on_evidence_request(
            gateway_pb2.EvidenceRequest(request_id="r1", unit_id="car-1", seconds=30)
        )
        [answer] = [r for r in committed(app) if r.WhichOneof("payload") == "evidence"]
        e = answer.evidence
        assert answer.unit_id == "car-1" and e.request_id == "r1"
        assert e.end == records_pb2.EVIDENCE_END_REQUEST
        assert 299 <= e.samples <= 301
        assert metric(app, "evidence_requests_total", outcome="answered") == 1
    finally:
        app.outbox.close()


def test_a_request_for_an_unknown_unit_or_bad_seconds_is_counted_not_a_crash(
    app: Agent, caplog: pytest.LogCaptureFixture
) -> None:
    try:
        poll(app, 0, 5)
        before = app.outbox.depth()
        app.on_evidence_request(
            gateway_pb2.EvidenceRequest(request_id="r2", unit_id="car-9", seconds=30)
        )
        app.on_evidence_request(
            gateway_pb2.EvidenceRequest(request_id="r3", unit_id="car-1", seconds=0)
        )
        app.on_evidence_request(
            gateway_pb2.EvidenceRequest(request_id="r4", unit_id="car-1", seconds=100_000)
        )
        assert app.outbox.depth() == before
        assert metric(app, "evidence_requests_total", outcome="unknown_unit") == 1
        assert metric(app, "evidence_requests_total", outcome="bad_seconds") == 2
        assert "no unit 'car-9' on this agent" in caplog.text
        assert "seconds must be 1..900" in caplog.text
    finally:
        app.outbox.close()


# --- the outbox and the uplink ---------------------------------------------------------


def evidence(event_id: str) -> records_pb2.Record:
    record = records_pb2.Record(unit_id="u1")
    record.evidence.event_id = event_id
    record.evidence.end = records_pb2.EVIDENCE_END_RAISE
    return record


def sample(floor: int) -> records_pb2.Record:
    record = records_pb2.Record(unit_id="u1")
    record.car_state.floor = floor
    return record


def test_evidence_is_kept_like_an_event_never_thinned(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", max_bytes=64 * 1024, reserve_bytes=0)
    try:
        box.append([evidence("e1")])
        box.append([sample(i % 7) for i in range(5000)])  # far past max_bytes: thinned
        assert box.thinned > 0
        kinds = [
            records_pb2.Record.FromString(p.payload).WhichOneof("payload")
            for p in box.pending(0, 10_000)
        ]
        assert kinds.count("evidence") == 1
    finally:
        box.close()


class Fleet(gateway_pb2_grpc.AgentGatewayServicer):  # type: ignore[misc]
    """A fleet that says whether it takes evidence, keeps every record it is sent, and
    may ask for evidence once the agent has said hello."""

    def __init__(self, accepts: bool, committed: int = 0, ask: bool = False) -> None:
        self.accepts = accepts
        self.committed = committed
        self.ask = ask
        self.records: list[records_pb2.Record] = []
        self.hellos: list[gateway_pb2.Hello] = []

    async def Connect(  # noqa: N802 (the gRPC method's name)
        self, frames: AsyncIterator[gateway_pb2.AgentFrame], context: Any
    ) -> AsyncIterator[gateway_pb2.FleetFrame]:
        async for frame in frames:
            kind = frame.WhichOneof("frame")
            if kind == "hello":
                self.hellos.append(frame.hello)
                yield gateway_pb2.FleetFrame(
                    welcome=gateway_pb2.Welcome(
                        committed_seq=self.committed,
                        heartbeat_interval_s=30,
                        accepts_evidence=self.accepts,
                    )
                )
                if self.ask:
                    yield gateway_pb2.FleetFrame(
                        evidence_request=gateway_pb2.EvidenceRequest(
                            request_id="r1", unit_id="u1", seconds=10
                        )
                    )
            elif kind == "batch":
                if not self.accepts:
                    # An older fleet rejects a payload it does not know.
                    assert all(r.WhichOneof("payload") != "evidence" for r in frame.batch.records)
                self.records.extend(frame.batch.records)
                self.committed = frame.batch.records[-1].seq
                yield gateway_pb2.FleetFrame(ack=gateway_pb2.Ack(up_to_seq=self.committed))


async def session(
    fleet: Fleet, box: Outbox, records: list[records_pb2.Record], requests: list[Any]
) -> None:
    server = grpc.aio.server()
    gateway_pb2_grpc.add_AgentGatewayServicer_to_server(fleet, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    uplink = Uplink(
        box,
        lambda: gateway_pb2.Hello(agent_id="a1", records_evidence=True),
        [f"127.0.0.1:{port}"],
        linger_s=0.0,
        on_evidence_request=requests.append,
    )
    task = asyncio.create_task(uplink.run())
    try:
        await eventually(lambda: uplink.connected, what="connected", interval_s=0.01)
        if records:
            box.append(records)
            uplink.notify(urgent=True)
        await eventually(
            lambda: box.depth() == 0, what="every record acked or held", interval_s=0.01
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.stop(None)


def test_evidence_is_held_back_from_an_older_fleet_and_sent_to_one_that_takes_it(
    tmp_path: Path,
) -> None:
    box = Outbox(tmp_path / "outbox.db", wall=time.time)
    try:
        old = Fleet(accepts=False)
        records = [sample(1), evidence("e1"), sample(2), evidence("e2"), sample(3)]
        asyncio.run(session(old, box, records, []))
        # The older fleet got the rest, nothing waited for the evidence.
        assert [r.WhichOneof("payload") for r in old.records] == ["car_state"] * 3
        assert box.held_count() == 2
        first_seqs = [r.seq for r in old.records]

        new = Fleet(accepts=True, committed=old.committed)
        asyncio.run(session(new, box, [], []))
        got = [(r.evidence.event_id, r.seq) for r in new.records]
        assert [event_id for event_id, _ in got] == ["e1", "e2"]
        # New seqs, above what the fleet had committed (the old ones would be duplicates).
        assert all(seq > max(first_seqs) for _, seq in got)
        assert box.held_count() == 0 and box.depth() == 0
    finally:
        box.close()


def test_the_uplink_hands_an_evidence_request_to_the_agent(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", wall=time.time)
    requests: list[gateway_pb2.EvidenceRequest] = []
    try:
        fleet = Fleet(accepts=True, ask=True)
        asyncio.run(session(fleet, box, [sample(1)], requests))
        assert [(r.request_id, r.unit_id, r.seconds) for r in requests] == [("r1", "u1", 10)]
        assert fleet.hellos[0].records_evidence
    finally:
        box.close()


def test_evidence_takes_the_reserve_on_a_full_disk_as_an_event_does(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "disk", 2 * 1024 * 1024) as disk:
        box = Outbox(disk / "outbox.db", reserve_bytes=256 * 1024, wall=lambda: 0.0)
        try:
            box.append([sample(floor) for floor in range(20)])
            fill(disk)
            assert free_bytes(disk) < 4096
            with pytest.raises(OutboxFullError):
                box.append([sample(99) for _ in range(500)])
            assert box.reserve_held()
            # Evidence alone (an on-demand answer, a window closing after its event) is
            # kept as an event is: the reserve makes the room.
            (seq,) = box.append([evidence("e1")])
            assert not box.reserve_held()
            assert [p.seq for p in box.pending(seq - 1, 10)] == [seq]
        finally:
            box.close()
