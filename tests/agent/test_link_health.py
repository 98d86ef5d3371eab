"""Link health per unit: failures by kind, LinkStatus on change and periodically,
CONTROLLER_LINK_LOST raised after its threshold and cleared on recovery, implausible
values dropped and counted, extra sources merged."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from agent.bus.health import LinkStats
from agent.bus.link import LinkFault
from agent.bus.plan import Table
from agent.config import UnitConfig, parse_config
from agent.decode.decoder import Decoded
from agent.decode.model import Profile, Values
from agent.detect import link
from agent.detect.events import EventType, Phase
from agent.monitor import UnitMonitor
from agent.records import TimeBase
from protos.liftwatch.v1 import records_pb2

TIME = TimeBase(0.0, 1_700_000_000.0)
CONFIG = """
[agent]
id = "a"
[fleet]
insecure = true
[[bus]]
name = "b"
url = "rtu:///dev/ttyUSB0"
[[unit]]
id = "u1"
bus = "b"
slave = 1
[[unit.extra]]
slave = 9
profile = "io-module"
signals = ["door_lock_closed"]
"""


def unit() -> UnitConfig:
    return parse_config(tomllib.loads(CONFIG), Path()).units[0]


def good(**regs: int) -> dict[tuple[Table, int], int]:
    values = dict.fromkeys(((Table.HOLDING, i) for i in range(16)), 0)
    values[(Table.HOLDING, 0)] = 1
    values[(Table.HOLDING, 4)] = 1
    for name, value in regs.items():
        values[(Table.HOLDING, int(name.removeprefix("r")))] = value
    return values


def kinds(records: list[records_pb2.Record]) -> list[str]:
    return [str(r.WhichOneof("payload")) for r in records]


def monitor(stats: list[LinkStats] | None = None) -> UnitMonitor:
    return UnitMonitor(
        unit(),
        link_lost_after_s=5.0,
        state_interval_s=10.0,
        counters_interval_s=60.0,
        link_stats=stats,
    )


def test_link_lost_after_threshold_then_cleared_with_link_status_both_times() -> None:
    m = monitor()
    assert "link_status" in kinds(m.on_sample(0, good(), 0.0, TIME))  # first: periodic
    records: list[records_pb2.Record] = []
    for i in range(1, 13):
        records += m.on_failure(0, LinkFault.TIMEOUT, i * 0.5, TIME)
    events = [r.event for r in records if r.WhichOneof("payload") == "event"]
    assert [(e.type, e.phase) for e in events] == [
        (records_pb2.EVENT_TYPE_CONTROLLER_LINK_LOST, records_pb2.PHASE_RAISED)
    ]
    assert kinds(records).count("link_status") == 1
    assert not m.link_up
    back = m.on_sample(0, good(), 7.0, TIME)
    assert [r.event.phase for r in back if r.WhichOneof("payload") == "event"] == [
        records_pb2.PHASE_CLEARED
    ]
    status = [r.link_status for r in back if r.WhichOneof("payload") == "link_status"]
    assert status and status[0].up


def test_link_status_counts_each_kind() -> None:
    stats = [LinkStats(), LinkStats()]
    m = monitor(stats)
    stats[0].answered(0.02)
    for fault in (LinkFault.TIMEOUT, LinkFault.CRC, LinkFault.WRONG_SLAVE):
        stats[0].failed(fault)
    stats[1].failed(LinkFault.EXCEPTION_RESPONSE)
    s = m.link_status()
    assert (s.requests, s.responses, s.timeouts, s.crc_errors, s.exception_responses) == (
        5,
        1,
        1,
        2,
        1,
    )
    assert s.latency_ms_p50 == 20


def test_implausible_signal_is_none_and_counted_and_a_refused_sample_is_no_answer() -> None:
    m = monitor()
    m.on_sample(0, good(r5=50000), 0.0, TIME)
    assert m.last_sample is not None and m.last_sample.speed_mm_s is None
    assert m.implausible_values == 1
    records: list[records_pb2.Record] = []
    for i in range(1, 13):
        records += m.on_sample(0, good(r0=7), i * 0.5, TIME)  # wrong map version
    assert m.implausible_values == 13
    assert m.last_sample.t == 0.0  # nothing of the refused samples reached the detectors
    assert not m.link_up  # garbage for 5 s is a lost link, not a fault


def lock(m: UnitMonitor) -> bool | None:
    assert m.last_sample is not None
    return m.last_sample.door_lock_closed


def test_extra_source_signals_replace_the_primarys_and_vanish_when_it_fails() -> None:
    m = monitor()
    lock_open_on_module = {(Table.DISCRETE_INPUT, a): 0 for a in range(6)}
    m.on_sample(1, lock_open_on_module, 0.0, TIME)
    m.on_sample(0, good(r2=1 << 6), 0.05, TIME)  # controller says lock made
    assert lock(m) is False
    m.on_failure(1, LinkFault.TIMEOUT, 0.1, TIME)
    m.on_sample(0, good(r2=1 << 6), 0.15, TIME)
    assert lock(m) is True  # the module is silent: the primary's reading stands
    assert m.link_up  # only the primary decides link loss


def test_counters_are_carried_between_slow_reads_and_forgotten_on_failure() -> None:
    m = monitor()
    m.on_sample(0, good(r11=42), 0.0, TIME)
    fast = {k: v for k, v in good().items() if k[1] < 10}
    m.on_sample(0, fast, 0.1, TIME)
    assert m.last_sample is not None and m.last_sample.trips == 42
    m.on_failure(0, LinkFault.TIMEOUT, 0.2, TIME)
    m.on_sample(0, fast, 0.3, TIME)
    assert m.last_sample.trips is None  # never a stale value with a fresh timestamp


def test_detectable_follows_the_unit_signals() -> None:
    can, cannot = monitor().detectable()
    assert EventType.ENTRAPMENT in can and EventType.CONTROLLER_LINK_LOST in can
    assert EventType.OVERSPEED in cannot


def test_a_repeated_read_keeps_its_decoded_fields_and_implausible_ones_count_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import agent.monitor
    from agent.decode.decoder import decode as real_decode

    decoded = []

    def counting_decode(profile: Profile, values: Values) -> Decoded:
        decoded.append(profile.name)
        return real_decode(profile, values)

    monkeypatch.setattr(agent.monitor, "decode", counting_decode)
    m = monitor()
    for i in range(5):
        m.on_sample(0, good(r1=3), i * 0.1, TIME)  # a car standing at floor 3
    assert decoded == ["reference"]
    assert m.last_sample is not None and m.last_sample.floor == 3 and m.last_sample.t == 0.4
    m.on_sample(0, good(r1=4), 0.5, TIME)
    assert len(decoded) == 2 and m.last_sample.floor == 4
    m.on_sample(1, {(Table.DISCRETE_INPUT, a): 0 for a in range(6)}, 0.55, TIME)
    m.on_sample(0, good(r1=4), 0.6, TIME)  # the module's reading joins unchanged fields
    assert len(decoded) == 3 and lock(m) is False
    m.on_failure(0, LinkFault.TIMEOUT, 0.7, TIME)
    m.on_sample(0, good(r1=4), 0.8, TIME)  # after a failure: decoded afresh
    assert len(decoded) == 4
    for i in range(3):
        m.on_sample(0, good(r5=50000), 1.0 + i * 0.1, TIME)
    assert len(decoded) == 7 and m.implausible_values == 3  # counted on every read


def lost_events(records: list[records_pb2.Record]) -> list[records_pb2.Event]:
    return [
        r.event
        for r in records
        if r.WhichOneof("payload") == "event"
        and r.event.type == records_pb2.EVENT_TYPE_CONTROLLER_LINK_LOST
    ]


def test_link_lost_counts_from_the_last_valid_answer_whatever_the_back_off() -> None:
    # Last answer at 10.0; the next request times out at 10.6, and the backed-off retries
    # (1, 2, 4, then 2 s apart at most) fail at 10.8, 11.2, 12.0, 14.0, 16.0. Cycles end
    # every 0.1 s throughout.
    m = monitor()
    m.on_sample(0, good(), 10.0, TIME)
    failures = [10.6, 10.8, 11.2, 12.0, 14.0, 16.0]
    records: list[records_pb2.Record] = []
    raised_at = None
    for k in range(101, 170):
        t = k / 10
        if t in failures:
            records += m.on_failure(0, LinkFault.TIMEOUT, t, TIME)
        records += m.on_cycle_end(t, TIME)
        if raised_at is None and lost_events(records):
            raised_at = t
    (event,) = lost_events(records)
    assert raised_at == 15.0  # 5 s after the last answer, not at the 16.0 retry
    assert event.phase == records_pb2.PHASE_RAISED
    assert event.onset.ToDatetime().timestamp() == pytest.approx(1_700_000_010.0)
    assert "no valid answer for 5.0 s" in event.reason
    assert "5 failed requests" in event.reason
    # Where the car stood at its last valid sample, as every event says.
    assert m.last_sample is not None and m.last_sample.at_landing is not None
    assert event.HasField("at_landing") and event.at_landing == m.last_sample.at_landing


def test_a_stalled_poll_loop_is_not_a_lost_link() -> None:
    # No request failed: however long since the last answer, the controller is not silent.
    m = monitor()
    m.on_sample(0, good(), 0.0, TIME)
    assert lost_events(m.on_cycle_end(30.0, TIME)) == []
    assert m.link_up


def test_link_state_without_any_answer_counts_from_the_first_failure() -> None:
    state, events = link.step(link.LinkState(), False, 3.0, 5.0)
    assert events == []
    state, events = link.tick(state, 7.9, 5.0)
    assert events == []
    state, events = link.tick(state, 8.0, 5.0)
    assert [(e.phase, e.onset, e.at) for e in events] == [(Phase.RAISED, 3.0, 8.0)]
    assert link.tick(state, 9.0, 5.0) == (state, [])  # raised once
    state, events = link.step(state, True, 9.5, 5.0)
    assert [(e.phase, e.onset) for e in events] == [(Phase.CLEARED, 3.0)]
    assert not state.lost and state.last_ok == 9.5
