"""How the agent keeps records: a poll cycle's telemetry is committed in one transaction at
the cycle's end and offered to the uplink as lingering telemetry; an event is committed
and offered at once, with the telemetry kept before it, in order."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.app import Agent
from agent.bus.plan import Table
from agent.bus.scheduler import TurnKind
from agent.config import load_config
from protos.liftwatch.v1 import records_pb2

CONFIG = """
[agent]
id = "edge-1"
data_dir = "data"
[fleet]
insecure = true

[[bus]]
name = "line"
url = "tcp://127.0.0.1:5020"

[[unit]]
id = "car-1"
bus = "line"
slave = 1

[[unit]]
id = "car-2"
bus = "line"
slave = 2
"""

# Reference map: version 1, floor 3, status A = door zone, levelled, safety and lock
# circuits made, door closed, mains OK; normal mode.
REGISTERS = [1, 3, 0b1000_0001_0111_1000, 0, 1, 0, 0, 9000, 0, 0]


@pytest.fixture
def app(tmp_path: Path) -> Agent:
    path = tmp_path / "agent.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return Agent(load_config(path))


def record(kind: str) -> records_pb2.Record:
    r = records_pb2.Record(unit_id="car-1")
    if kind == "event":
        r.event.type = records_pb2.EVENT_TYPE_ENTRAPMENT
        r.event.phase = records_pb2.PHASE_RAISED
    else:
        r.car_state.floor = 3
    return r


def watch_notify(app: Agent) -> list[bool]:
    calls: list[bool] = []

    def notify(*, urgent: bool = True) -> None:
        calls.append(urgent)

    app.uplink.notify = notify  # type: ignore[method-assign]
    return calls


def kinds(app: Agent) -> list[str]:
    return [
        records_pb2.Record.FromString(p.payload).WhichOneof("payload") or ""
        for p in app.outbox.pending(0, 100)
    ]


def test_a_cycles_telemetry_is_one_commit_at_its_end(app: Agent) -> None:
    notified = watch_notify(app)
    sink = app.sink("line")
    values = {(Table.HOLDING, a): v for a, v in enumerate(REGISTERS)}
    try:
        sink.on_sample(1, values, TurnKind.FAST, 100.0)
        sink.on_sample(2, values, TurnKind.FAST, 100.01)
        assert app.outbox.depth() == 0 and notified == []  # held until the cycle ends
        sink.on_cycle_end(100.02)
        committed = app.outbox.pending(0, 100)
        assert {records_pb2.Record.FromString(p.payload).unit_id for p in committed} == {
            "car-1",
            "car-2",
        }
        assert "car_state" in kinds(app)
        assert notified == [False]  # telemetry may linger
        sink.on_cycle_end(100.1)  # nothing new: no commit, no notify
        assert notified == [False]
    finally:
        app.outbox.close()


def test_an_event_commits_at_once_after_the_telemetry_kept_before_it(app: Agent) -> None:
    notified = watch_notify(app)
    try:
        app._keep([record("car_state")])
        assert app.outbox.depth() == 0
        app._keep([record("event"), record("car_state")])
        assert kinds(app) == ["car_state", "event", "car_state"]
        assert notified == [True]  # sent at once
        app.on_cycle_end("line", 1.0)
        assert notified == [True]  # nothing was left to commit
    finally:
        app.outbox.close()
