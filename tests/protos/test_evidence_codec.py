"""The Evidence codec (protos/evidence.py): round trips, absent columns and values,
link-down samples, malformed records named, and the bytes a sample costs on the wire."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protos.evidence import (
    COLUMNS,
    FLAGS,
    EvidenceError,
    EvidenceSample,
    decode_samples,
    encode_columns,
    encode_samples,
    pack_state,
)
from protos.liftwatch.v1 import records_pb2

T0_US = 1_796_000_000_000_000  # 2026-12-01, a whole millisecond
MM_PER_FLOOR = 3000


def sample(time_us: int, **fields: object) -> EvidenceSample:
    """A link-up sample of a car standing level at floor 1, doors closed, with overrides."""
    values: dict[str, object] = {
        "time_us": time_us,
        "link_up": True,
        "position_mm": 0,
        "speed_mm_s": 0,
        "load_percent": 10,
        "floor": 1,
        "fault_code": 0,
        "door": records_pb2.DOOR_STATE_CLOSED,
        "direction": records_pb2.DIRECTION_NONE,
        "mode": records_pb2.SERVICE_MODE_NORMAL,
        "moving": False,
        "door_zone": True,
        "levelled": True,
        "door_lock_closed": True,
        "safety_circuit_closed": True,
        "occupied": False,
        "alarm_button": False,
        "overload": False,
        "mains_ok": True,
        "reopen_active": False,
    }
    values.update(fields)
    return EvidenceSample(**values)  # type: ignore[arg-type]


def link_down(time_us: int) -> EvidenceSample:
    """A sample of a controller that did not answer: nothing known but that."""
    return EvidenceSample(time_us, False, None, None, None, None, None, 0, 0, 0, *([None] * 10))


def round_trip(samples: list[EvidenceSample]) -> tuple[list[EvidenceSample], int]:
    """The samples back through the wire bytes, and the Evidence's size in bytes."""
    evidence = records_pb2.Evidence(event_id="e1", pre_s=60, post_s=30)
    encode_samples(samples, evidence)
    wire = evidence.SerializeToString()
    parsed = records_pb2.Evidence.FromString(wire)
    return decode_samples(parsed), len(wire)


def moving_trace(seconds: int, hz: int = 10) -> list[EvidenceSample]:
    """A car running up and down between floors 1 and 6 at 1 m/s with 100 ms jitter-free
    polls, load changing at the stops: the costliest realistic samples (every number
    changes every poll)."""
    out = []
    position = 0
    step = 1000 // hz  # mm per poll at 1 m/s
    up = True
    for i in range(seconds * hz):
        position += step if up else -step
        if position >= 5 * MM_PER_FLOOR or position <= 0:
            up = not up
        out.append(
            sample(
                T0_US + i * 1_000_000 // hz,
                position_mm=position,
                speed_mm_s=1000 + (i % 7) - 3,  # the encoder's speed wobbles a little
                floor=1 + position // MM_PER_FLOOR,
                load_percent=10 + (i // 300) % 5,
                direction=records_pb2.DIRECTION_UP if up else records_pb2.DIRECTION_DOWN,
                moving=True,
                door_zone=position % MM_PER_FLOOR < 150,
                levelled=False,
            )
        )
    return out


def test_round_trip_keeps_every_field() -> None:
    samples = moving_trace(30)
    back, _ = round_trip(samples)
    assert back == samples


def test_round_trip_of_no_samples_is_empty() -> None:
    evidence = records_pb2.Evidence()
    encode_samples([], evidence)
    assert evidence.samples == 0
    assert not evidence.HasField("start")
    assert decode_samples(evidence) == []


def test_encode_replaces_what_the_message_held_and_keeps_the_rest() -> None:
    evidence = records_pb2.Evidence(event_id="e7", end=records_pb2.EVIDENCE_END_RAISE)
    encode_samples(moving_trace(5), evidence)
    short = [sample(T0_US), sample(T0_US + 100_000, floor=2)]
    encode_samples(short, evidence)
    assert decode_samples(evidence) == short
    assert evidence.event_id == "e7" and evidence.end == records_pb2.EVIDENCE_END_RAISE


def test_times_are_kept_to_the_millisecond() -> None:
    samples = [sample(T0_US + 123), sample(T0_US + 100_456), sample(T0_US + 100_999)]
    back, _ = round_trip(samples)
    assert [s.time_us for s in back] == [T0_US, T0_US + 100_000, T0_US + 100_000]


def test_a_column_no_sample_has_is_left_out() -> None:
    # A profile without load or fault code: those columns are absent, not zero.
    samples = [sample(T0_US + i * 100_000, load_percent=None, fault_code=None) for i in range(10)]
    evidence = records_pb2.Evidence()
    encode_samples(samples, evidence)
    assert evidence.present == 0b01011
    assert len(evidence.load_percent_delta) == 0 and len(evidence.fault_code_delta) == 0
    back, _ = round_trip(samples)
    assert back == samples
    assert all(s.load_percent is None and s.fault_code is None for s in back)


def test_a_value_missing_in_one_sample_of_a_filled_column_stays_missing() -> None:
    # The decoder refused an implausible position for one poll: None there, not 0 and
    # not the previous value; the running value carries on after it.
    samples = [
        sample(T0_US, position_mm=4000),
        sample(T0_US + 100_000, position_mm=None),
        sample(T0_US + 200_000, position_mm=4100),
    ]
    back, _ = round_trip(samples)
    assert [s.position_mm for s in back] == [4000, None, 4100]
    assert back == samples


def test_unknown_flags_stay_unknown() -> None:
    samples = [sample(T0_US, occupied=None, mains_ok=None, door=0, mode=0, direction=0)]
    back, _ = round_trip(samples)
    assert back == samples
    assert back[0].occupied is None and back[0].mains_ok is None and back[0].moving is False


def test_link_down_samples_carry_nothing_but_the_gap() -> None:
    samples = [sample(T0_US, position_mm=1500)]
    samples += [link_down(T0_US + i * 100_000) for i in range(1, 20)]
    samples.append(sample(T0_US + 2_000_000, position_mm=1600))
    back, _ = round_trip(samples)
    assert back == samples
    down = back[1:-1]
    assert all(not s.link_up for s in down)
    assert all(s.position_mm is None and s.occupied is None and s.door == 0 for s in down)
    assert back[-1].position_mm == 1600


def test_every_sample_link_down() -> None:
    samples = [link_down(T0_US + i * 100_000) for i in range(5)]
    evidence = records_pb2.Evidence()
    encode_samples(samples, evidence)
    assert evidence.present == 0
    assert decode_samples(evidence) == samples


_flag = st.none() | st.booleans()


@st.composite
def samples_strategy(draw: st.DrawFn) -> list[EvidenceSample]:
    """Any samples the recorder could hold: times oldest first, values in range."""
    n = draw(st.integers(0, 40))
    time_us = draw(st.integers(0, 2**42))
    out = []
    for _ in range(n):
        time_us += draw(st.integers(0, 10_000_000))
        up = draw(st.booleans())
        if not up:
            out.append(link_down(time_us))
            continue
        out.append(
            EvidenceSample(
                time_us,
                True,
                draw(st.none() | st.integers(-(2**30), 2**30)),
                draw(st.none() | st.integers(0, 2**31 - 1)),
                draw(st.none() | st.integers(0, 300)),
                draw(st.none() | st.integers(-5, 200)),
                draw(st.none() | st.integers(0, 2**31 - 1)),
                draw(st.sampled_from(records_pb2.DoorState.values())),
                draw(st.sampled_from(records_pb2.Direction.values())),
                draw(st.sampled_from(records_pb2.ServiceMode.values())),
                *[draw(_flag) for _ in range(10)],
            )
        )
    return out


@given(samples_strategy())
@settings(max_examples=200, deadline=None)
def test_round_trip_of_any_samples(samples: list[EvidenceSample]) -> None:
    back, _ = round_trip(samples)
    # Times come back to the millisecond: compare the samples at that resolution.
    assert back == [dataclasses.replace(s, time_us=s.time_us // 1000 * 1000) for s in samples]


# --- encode refuses what it could not give back ----------------------------------------


def test_encode_refuses_samples_going_back_in_time() -> None:
    with pytest.raises(EvidenceError, match="time_us of sample 1"):
        encode_samples([sample(T0_US), sample(T0_US - 1000)], records_pb2.Evidence())


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("door", 9, "door of sample 0"),
        ("mode", 16, "mode of sample 0"),
        ("direction", 4, "direction of sample 0"),
        ("speed_mm_s", -1, "speed_mm_s of sample 0"),
        ("position_mm", 2**31, "position_mm of sample 0"),
    ],
)
def test_encode_names_a_value_out_of_range(field: str, value: int, named: str) -> None:
    with pytest.raises(EvidenceError, match=named):
        encode_samples([sample(T0_US, **{field: value})], records_pb2.Evidence())


def test_encode_names_a_jump_the_delta_cannot_carry() -> None:
    samples = [sample(T0_US, fault_code=0), sample(T0_US + 1000, fault_code=2**32 - 1)]
    with pytest.raises(EvidenceError, match="fault_code of sample 1 changes by"):
        encode_samples(samples, records_pb2.Evidence())


# --- decode names a malformed record -------------------------------------------------


def encoded(samples: list[EvidenceSample] | None = None) -> records_pb2.Evidence:
    evidence = records_pb2.Evidence()
    encode_samples(samples if samples is not None else moving_trace(2), evidence)
    return evidence


def test_decode_names_a_short_time_column() -> None:
    evidence = encoded()
    del evidence.time_delta_ms[-1]
    with pytest.raises(EvidenceError, match="time_delta_ms has 19 values for 20 samples"):
        decode_samples(evidence)


def test_decode_names_a_short_numeric_column() -> None:
    evidence = encoded()
    evidence.speed_mm_s_delta.append(5)
    with pytest.raises(EvidenceError, match="speed_mm_s_delta has 21 values for 20 samples"):
        decode_samples(evidence)


def test_decode_names_values_in_a_column_present_does_not_fill() -> None:
    evidence = encoded()
    evidence.present &= ~0b100
    with pytest.raises(EvidenceError, match="load_percent_delta has 20 values but present"):
        decode_samples(evidence)


def test_decode_names_state_runs_that_do_not_add_up() -> None:
    evidence = encoded()
    evidence.state_run[0] += 1
    with pytest.raises(EvidenceError, match="state_run adds up to 21 samples, not 20"):
        decode_samples(evidence)


def test_decode_names_runs_and_values_of_different_lengths() -> None:
    evidence = encoded()
    evidence.state_value.append(0)
    with pytest.raises(EvidenceError, match=r"state_run has \d+ runs but state_value"):
        decode_samples(evidence)


def test_decode_names_an_empty_run() -> None:
    evidence = encoded()
    evidence.state_run.append(0)
    evidence.state_value.append(evidence.state_value[-1])
    with pytest.raises(EvidenceError, match="a run of 0 samples"):
        decode_samples(evidence)


def test_decode_names_an_undefined_enum_value() -> None:
    evidence = encoded([sample(T0_US)])
    evidence.state_value[0] |= 0b111  # door 7: DoorState ends at 5
    with pytest.raises(EvidenceError, match=r"state_value\[0\] holds door 7"):
        decode_samples(evidence)


def test_decode_names_a_value_out_of_its_range() -> None:
    evidence = encoded([sample(T0_US, speed_mm_s=0), sample(T0_US + 1, speed_mm_s=0)])
    evidence.speed_mm_s_delta[1] = -5
    with pytest.raises(EvidenceError, match="speed_mm_s_delta gives speed_mm_s -5 at sample 1"):
        decode_samples(evidence)


def test_decode_names_link_status_missing() -> None:
    evidence = encoded([sample(T0_US)])
    evidence.state_value[0] = 0
    with pytest.raises(EvidenceError, match="link_up unknown"):
        decode_samples(evidence)


def test_a_malformed_record_from_the_wire_is_an_evidence_error_never_a_crash() -> None:
    evidence = encoded()
    evidence.samples = 4_000_000_000
    with pytest.raises(EvidenceError):
        decode_samples(records_pb2.Evidence.FromString(evidence.SerializeToString()))


# --- bytes per sample ------------------------------------------------------------------


def bytes_per_sample(samples: list[EvidenceSample]) -> float:
    _, size = round_trip(samples)
    return size / len(samples)


def test_bytes_per_sample_of_a_moving_car() -> None:
    # Every number changes every poll: measured 7.4 bytes a sample (time 1, position 2,
    # speed 1, floor, load and fault 1 each, and a state run at each door-zone edge). The
    # recorder's bound (agent/recorder.py) is sized on this worst case.
    per_sample = bytes_per_sample(moving_trace(600))
    assert per_sample <= 7.5, per_sample


def test_bytes_per_sample_of_a_car_standing_still() -> None:
    # A trapped car: nothing but the time moves, yet a zero delta is still a byte per
    # column: measured 6.0 bytes a sample (time 1, five columns 1 each).
    samples = [
        sample(T0_US + i * 100_000, position_mm=4500, floor=2, door_zone=False, occupied=True)
        for i in range(6000)
    ]
    per_sample = bytes_per_sample(samples)
    assert per_sample <= 6.1, per_sample


def test_encode_columns_gives_what_encode_samples_gives() -> None:
    # The recorder's path: columns with packed states; a column no sample fills is left
    # out, whatever its placeholder values.
    samples = moving_trace(3)
    samples[4] = dataclasses.replace(samples[4], position_mm=None)
    samples = [dataclasses.replace(s, fault_code=None) for s in samples]
    from_samples = records_pb2.Evidence()
    encode_samples(samples, from_samples)
    absent = [(s.position_mm is None) | (s.fault_code is None) << 4 for s in samples]
    from_columns = records_pb2.Evidence()
    encode_columns(
        [s.time_us for s in samples],
        [[getattr(s, name) or 0 for s in samples] for name, _, _, _ in COLUMNS],
        [
            pack_state(s.door, s.direction, s.mode, s.link_up, [getattr(s, f) for f in FLAGS], a)
            for s, a in zip(samples, absent, strict=True)
        ],
        from_columns,
    )
    assert from_columns == from_samples
    assert from_columns.present == 0b01111
    assert decode_samples(from_columns) == samples
