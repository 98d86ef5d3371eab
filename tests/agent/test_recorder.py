"""The flight recorder (agent/recorder.py): the ring, its stated memory, and the evidence
windows around an event (raise, post, clear, max, shutdown) and on demand."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace
from pathlib import Path

import pytest

from agent.config import ConfigError, parse_config
from agent.detect.config import DetectionConfig
from agent.detect.events import Event, EventType, Phase
from agent.recorder import (
    RING_BYTES_PER_SAMPLE,
    Recorder,
    RecorderConfig,
    RequestError,
    onset_lag_s,
    window_problems,
)
from agent.records import TimeBase, event_record
from agent.state import CarState, Direction, DoorState, ServiceMode
from protos.evidence import decode_samples
from protos.liftwatch.v1 import records_pb2

T0_S = 1_796_000_000.0  # UTC seconds of monotonic 0
HZ = 10
TIME = TimeBase(0.0, T0_S)


def us(t: float) -> int:
    return round((T0_S + t) * 1e6)


def car(t: float, **fields: object) -> CarState:
    """A car standing level at floor 2, doors closed, occupied unknown; with overrides."""
    values: dict[str, object] = {
        "floor": 2,
        "position_mm": 3000,
        "speed_mm_s": 0,
        "direction": Direction.NONE,
        "moving": False,
        "door_zone": True,
        "levelled": True,
        "door": DoorState.CLOSED,
        "door_lock_closed": True,
        "safety_circuit_closed": True,
        "mode": ServiceMode.NORMAL,
        "load_percent": 0,
    }
    values.update(fields)
    return CarState(t, **values)  # type: ignore[arg-type]


def raised(event_id: str, onset: float, at: float) -> records_pb2.Record:
    event = Event(EventType.ENTRAPMENT, Phase.RAISED, onset, at)
    return event_record("U1", event, event_id, TIME)


def cleared(event_id: str, onset: float, at: float) -> records_pb2.Record:
    event = Event(EventType.ENTRAPMENT, Phase.CLEARED, onset, at)
    return event_record("U1", event, event_id, TIME)


def feed(
    recorder: Recorder, start: float, end: float, **fields: object
) -> list[records_pb2.Record]:
    """Samples at HZ from ``start`` (included) to ``end`` (excluded); the evidence they close."""
    out: list[records_pb2.Record] = []
    for i in range(round((end - start) * HZ)):
        t = start + i / HZ
        out += recorder.record(us(t), car(t, **fields))
    return out


def recorder(config: RecorderConfig | None = None, lag_s: float = 60.0) -> Recorder:
    return Recorder("U1", config or RecorderConfig(), lag_s=lag_s, poll_hz=HZ)


def window(record: records_pb2.Record) -> tuple[float, float]:
    """First and last sample time of an evidence record, as monotonic seconds."""
    samples = decode_samples(record.evidence)
    return samples[0].time_us / 1e6 - T0_S, samples[-1].time_us / 1e6 - T0_S


# --- memory ---------------------------------------------------------------------------


def test_ring_bytes_per_car_are_stated_and_measured() -> None:
    # Defaults at 10 Hz with the default detection thresholds (longest 60 s): the ring
    # covers (60 + 60 + 600) s x 10 Hz x 1.25 = 9,000 samples of 36 bytes.
    lag = onset_lag_s(DetectionConfig())
    assert lag == 60.0
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    r = recorder(lag_s=lag)
    feed(r, 0, 1000)  # more than the ring holds: it wraps, allocating nothing more
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    # What the recorder's own code allocated (the arrays are attributed to it).
    mine = [tracemalloc.Filter(True, "*/agent/recorder.py")]
    grown = sum(
        s.size_diff
        for s in after.filter_traces(mine).compare_to(before.filter_traces(mine), "filename")
    )
    assert r.capacity == 9_000
    assert r.ring_bytes == 9_000 * RING_BYTES_PER_SAMPLE == 324_000
    # The ring plus the recorder's few objects and its state cache: measured 928 bytes more.
    assert r.ring_bytes <= grown <= r.ring_bytes + 4_096, grown


# --- windows of an event -------------------------------------------------------------


def test_raise_writes_the_window_from_pre_s_before_the_onset_to_the_raise() -> None:
    r = recorder()
    feed(r, 0, 200)
    feed(r, 200, 260.1, floor=None, door_zone=False, levelled=False, occupied=True)
    # Onset at 230 s, raised at 260 s (entrapment between floors, T1 = 30 s).
    [evidence] = r.on_event(raised("e1", 230.0, 260.0))
    e = evidence.evidence
    assert evidence.unit_id == "U1" and e.event_id == "e1"
    assert e.end == records_pb2.EVIDENCE_END_RAISE
    assert not e.truncated
    assert (e.pre_s, e.post_s, e.max_s) == (60, 30, 600)
    assert e.onset.ToMicroseconds() == us(230) and e.raised.ToMicroseconds() == us(260)
    first, last = window(evidence)
    assert first == pytest.approx(170.0) and last == pytest.approx(260.0)
    assert e.samples == 901
    samples = decode_samples(e)
    before_onset = [s for s in samples if s.time_us < us(230)]
    assert before_onset[-1].occupied is True and before_onset[-1].door_zone is False
    assert before_onset[0].occupied is None and before_onset[0].floor == 2


def test_post_then_clear_within_max_s_extends_to_the_clear() -> None:
    r = recorder()
    feed(r, 0, 100)
    r.on_event(raised("e1", 70.0, 100.0))
    closed = feed(r, 100, 200)
    [post] = closed
    assert post.evidence.end == records_pb2.EVIDENCE_END_POST
    assert window(post) == pytest.approx((10.0, 130.0))
    assert feed(r, 200, 400) == []
    [done] = r.on_event(cleared("e1", 70.0, 400.0))
    assert done.evidence.end == records_pb2.EVIDENCE_END_CLEARED
    assert done.evidence.cleared.ToMicroseconds() == us(400)
    assert window(done) == pytest.approx((10.0, 399.9))
    assert feed(r, 400, 1000) == []  # the window is closed


def test_an_early_clear_still_records_post_s_after_the_raise() -> None:
    r = recorder()
    feed(r, 0, 100)
    r.on_event(raised("e1", 95.0, 100.0))
    feed(r, 100, 105)
    assert r.on_event(cleared("e1", 95.0, 105.0)) == []
    [done] = feed(r, 105, 140)
    assert done.evidence.end == records_pb2.EVIDENCE_END_CLEARED
    assert window(done) == pytest.approx((35.0, 130.0))


def test_still_raised_at_max_s_closes_with_max() -> None:
    config = RecorderConfig(pre_s=10, post_s=5, max_s=20)
    r = recorder(config)
    feed(r, 0, 50)
    r.on_event(raised("e1", 45.0, 50.0))
    ends = [e.evidence.end for e in feed(r, 50, 100)]
    assert ends == [records_pb2.EVIDENCE_END_POST, records_pb2.EVIDENCE_END_MAX]
    assert r.on_event(cleared("e1", 45.0, 100.0)) == []  # after max_s: no more evidence


def test_shutdown_writes_every_open_window() -> None:
    r = recorder()
    feed(r, 0, 50)
    r.on_event(raised("e1", 45.0, 50.0))
    r.on_event(raised("e2", 48.0, 50.0))
    feed(r, 50, 60)
    out = r.shutdown(us(60))
    assert sorted(e.evidence.event_id for e in out) == ["e1", "e2"]
    assert all(e.evidence.end == records_pb2.EVIDENCE_END_SHUTDOWN for e in out)
    assert r.shutdown(us(61)) == []


def test_the_ring_reaches_back_for_an_onset_a_threshold_before_the_raise() -> None:
    # Running long (the ring has wrapped many times), an event whose onset is the longest
    # threshold (60 s) before the raise, still raised at max_s: the window from pre_s
    # before the onset is whole.
    r = recorder()
    feed(r, 0, 3000)
    r.on_event(raised("e1", 2940.0, 3000.0))
    ends = feed(r, 3000, 3601)
    assert [e.evidence.end for e in ends] == [
        records_pb2.EVIDENCE_END_POST,
        records_pb2.EVIDENCE_END_MAX,
    ]
    last = ends[-1]
    assert not last.evidence.truncated
    assert window(last) == pytest.approx((2880.0, 3600.0))


def test_a_window_reaching_before_the_first_sample_is_truncated() -> None:
    r = recorder()
    feed(r, 0, 20)  # the agent just started
    [evidence] = r.on_event(raised("e1", 10.0, 20.0))
    assert evidence.evidence.truncated
    assert window(evidence)[0] == pytest.approx(0.0)


def test_link_down_samples_are_in_the_evidence() -> None:
    r = recorder()
    feed(r, 0, 10)
    for i in range(30):
        r.record_link_down(us(10 + i / HZ))
    feed(r, 13, 14)
    [evidence] = r.on_event(raised("e1", 10.0, 14.0))
    samples = decode_samples(evidence.evidence)
    down = [s for s in samples if not s.link_up]
    assert len(down) == 30
    assert all(s.position_mm is None and s.door_lock_closed is None for s in down)
    assert samples[-1].link_up and samples[-1].position_mm == 3000


def test_a_wall_clock_stepped_back_keeps_the_ring_in_order() -> None:
    r = recorder()
    r.record(us(10), car(10))
    r.record(us(5), car(5, floor=3))  # NTP stepped the clock back 5 s
    [evidence] = r.on_event(raised("e1", 9.0, 10.0))
    times = [s.time_us for s in decode_samples(evidence.evidence)]
    assert times == sorted(times) and len(times) == 2


def test_default_evidence_of_a_moving_car_stays_under_64_kb() -> None:
    # The worst case the bound is sized on: the longest default window, every number
    # changing every poll.
    r = recorder()
    out: list[records_pb2.Record] = []
    for i in range(800 * HZ):
        t = i / HZ
        position = (i * 100) % 15_000
        out += r.record(
            us(t),
            car(
                t,
                position_mm=position,
                speed_mm_s=1000 + i % 5,
                floor=1 + position // 3000,
                moving=True,
                door_zone=position % 3000 < 150,
                direction=Direction.UP,
            ),
        )
        if i == 120 * HZ:
            r.on_event(raised("e1", 60.0, 120.0))
    final = out[-1]
    assert final.evidence.end == records_pb2.EVIDENCE_END_MAX
    assert final.evidence.samples == 7_201
    assert final.ByteSize() < 64 * 1024, final.ByteSize()


# --- on demand ------------------------------------------------------------------------


def test_a_request_answers_the_last_seconds() -> None:
    r = recorder()
    feed(r, 0, 100)
    answer = r.request("req-1", 30, us(100))
    e = answer.evidence
    assert e.request_id == "req-1" and e.event_id == ""
    assert e.end == records_pb2.EVIDENCE_END_REQUEST
    assert window(answer) == pytest.approx((70.0, 99.9))
    assert not e.truncated


@pytest.mark.parametrize("seconds", [0, 901, -5])
def test_a_request_for_seconds_out_of_reach_is_refused(seconds: int) -> None:
    r = recorder()
    assert r.ring_seconds == 900
    with pytest.raises(RequestError, match=r"seconds must be 1\.\.900"):
        r.request("req-1", seconds, us(0))


# --- configuration ---------------------------------------------------------------------


def test_default_windows_are_within_the_bound() -> None:
    assert window_problems(RecorderConfig(), onset_lag_s(DetectionConfig())) == []


def test_a_window_past_64_kb_at_10_hz_is_refused_naming_max_s() -> None:
    [(key, message)] = window_problems(RecorderConfig(max_s=900), 60.0)
    assert key == "max_s"
    assert "max_s <= 750" in message and "64 kB" in message


def test_post_s_longer_than_max_s_is_refused() -> None:
    [(key, _)] = window_problems(RecorderConfig(post_s=120, max_s=60), 60.0)
    assert key == "post_s"


def test_a_longer_threshold_makes_the_ring_reach_further() -> None:
    detect = DetectionConfig(door_held_open_s=300.0)
    assert onset_lag_s(detect) == 300.0
    assert recorder(lag_s=300.0).capacity == round((60 + 300 + 600) * HZ * 1.25)


def test_a_rated_speed_is_no_time_threshold() -> None:
    # rated_speed_mm_s = 1600 (mm/s) was read as a 1600 s lag: every unit with a rated
    # speed had its default windows refused (the rig's overspeed scenario could not start).
    detect = DetectionConfig(rated_speed_mm_s=1600.0)
    assert onset_lag_s(detect) == onset_lag_s(DetectionConfig())
    assert window_problems(RecorderConfig(), onset_lag_s(detect)) == []


def test_the_agent_config_takes_windows_per_unit_and_check_config_names_bad_ones(
    tmp_path: Path,
) -> None:
    base = {
        "agent": {"id": "edge-1"},
        "fleet": {"insecure": True},
        "recorder": {"pre_s": 30},
        "bus": [{"name": "line", "url": "tcp://127.0.0.1:5020"}],
        "unit": [
            {"id": "u1", "bus": "line", "slave": 1},
            {"id": "u2", "bus": "line", "slave": 2, "recorder": {"post_s": 10, "max_s": 120}},
        ],
    }
    config = parse_config(base, tmp_path)
    assert config.units[0].recorder == RecorderConfig(pre_s=30)
    assert config.units[1].recorder == RecorderConfig(pre_s=30, post_s=10, max_s=120)
    bad = {
        **base,
        "unit": [
            {"id": "u1", "bus": "line", "slave": 1, "recorder": {"max_s": 900, "pre_s": -1}},
            {"id": "u2", "bus": "line", "slave": 2, "recorder": {"post_s": 200, "max_s": 100}},
        ],
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(bad, tmp_path)
    keys = [p.key for p in caught.value.problems]
    assert keys == ["unit[0].recorder.pre_s", "unit[0].recorder.max_s", "unit[1].recorder.post_s"]


def test_a_long_threshold_fits_the_default_max_s_but_refuses_a_given_one(
    tmp_path: Path,
) -> None:
    # A site that lengthens a threshold (300 s for stopped-outside-the-zone) must not find
    # its agent refusing to start over a recorder default it never set: the unset max_s is
    # lowered to what keeps the window under 64 kB. A max_s set by hand is checked as given.
    base = {
        "agent": {"id": "edge-1"},
        "fleet": {"insecure": True},
        "detect": {"stopped_outside_door_zone_s": 300.0},
        "bus": [{"name": "line", "url": "tcp://127.0.0.1:5020"}],
        "unit": [{"id": "u1", "bus": "line", "slave": 1}],
    }
    config = parse_config(base, tmp_path)
    recorder = config.units[0].recorder
    lag = onset_lag_s(config.units[0].detect)
    assert lag == 300.0
    assert 30 <= recorder.max_s < 600
    assert window_problems(recorder, lag) == []
    assert window_problems(replace(recorder, max_s=recorder.max_s + 1), lag) != []
    for given in ({"recorder": {"max_s": 600}}, {}):
        unit = {"id": "u1", "bus": "line", "slave": 1, **given}
        top = {**base, "unit": [unit]}
        if not given:
            top["recorder"] = {"max_s": 600}
        with pytest.raises(ConfigError) as caught:
            parse_config(top, tmp_path)
        assert [p.key for p in caught.value.problems] == ["unit[0].recorder.max_s"]
