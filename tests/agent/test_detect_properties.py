"""Properties of every detector over generated sample sequences with increasing times."""

from __future__ import annotations

from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.detect.engine import DetectionConfig, UnitDetectors
from agent.detect.entrapment import ENTRAPMENT_MODES
from agent.detect.events import Event, EventType, Phase
from agent.state import CarState, Direction, DoorState, ServiceMode

# Short thresholds so generated spells often run long enough to raise and clear.
CONFIG = DetectionConfig.from_mapping(
    {
        "entrapment_between_floors_s": 3,
        "entrapment_at_landing_s": 6,
        "entrapment_alarm_debounce_s": 0.5,
        "door_close_failure_s": 2,
        "door_open_failure_s": 1.5,
    }
)


def maybe(strategy: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.none() | strategy


car_states = st.builds(
    CarState,
    t=st.just(0.0),
    floor=maybe(st.integers(-3, 40)),
    position_mm=maybe(st.integers(0, 200_000)),
    speed_mm_s=maybe(st.sampled_from([0, 0, 5, 1000])),
    direction=st.sampled_from(Direction),
    moving=maybe(st.booleans()),
    door_zone=maybe(st.booleans()),
    levelled=maybe(st.booleans()),
    door=st.sampled_from(DoorState),
    door_lock_closed=maybe(st.booleans()),
    safety_circuit_closed=maybe(st.booleans()),
    occupied=maybe(st.booleans()),
    load_percent=maybe(st.sampled_from([0, 5, 6, 40, 120])),
    alarm_button=maybe(st.booleans()),
    overload=maybe(st.booleans()),
    mode=st.sampled_from(ServiceMode),
    fault_code=maybe(st.integers(0, 255)),
    mains_ok=maybe(st.booleans()),
    reopen_active=maybe(st.booleans()),
    door_open_command=maybe(st.booleans()),
    door_close_command=maybe(st.booleans()),
)

# Mostly-trapping states (and the ways out of them), so ENTRAPMENT raises and clears often;
# uniform states almost never hold a trapping spell long enough.
near_trapped_states = st.builds(
    CarState,
    t=st.just(0.0),
    floor=maybe(st.integers(0, 5)),
    moving=st.sampled_from([False, False, False, True, None]),
    speed_mm_s=st.sampled_from([0, 0, 300, None]),
    door_zone=maybe(st.booleans()),
    levelled=maybe(st.booleans()),
    door=st.sampled_from(
        [DoorState.CLOSED, DoorState.CLOSED, DoorState.UNKNOWN, DoorState.OPENING, DoorState.OPEN]
    ),
    door_lock_closed=st.sampled_from([True, True, False, None]),
    occupied=st.sampled_from([True, True, None, False]),
    load_percent=maybe(st.sampled_from([0, 40])),
    alarm_button=maybe(st.booleans()),
    mode=st.sampled_from(
        [ServiceMode.NORMAL, ServiceMode.NORMAL, ServiceMode.UNKNOWN, ServiceMode.INSPECTION]
    ),
    door_open_command=maybe(st.booleans()),
    door_close_command=maybe(st.booleans()),
)


@dataclass(frozen=True)
class Blind:
    """The link drops at this point of the sequence."""


# A spell: one car state held for several samples at a steady step, or a link outage.
spells = st.one_of(
    st.tuples(
        car_states | near_trapped_states,
        st.integers(1, 12),
        st.sampled_from([0.0, 0.1, 0.5, 1.0, 2.5]),
    ),
    st.just(Blind()),
)


@st.composite
def timelines(draw: st.DrawFn) -> list[CarState | float]:
    """Samples with non-decreasing times, and blind calls as bare times."""
    t = draw(st.floats(0.0, 1e6, allow_nan=False))
    out: list[CarState | float] = []
    for spell in draw(st.lists(spells, max_size=25)):
        if isinstance(spell, Blind):
            out.append(t)
            continue
        template, count, step = spell
        for _ in range(count):
            t += step
            out.append(replace(template, t=t))
    return out


def run(timeline: list[CarState | float]) -> list[tuple[float, Event]]:
    unit = UnitDetectors(CONFIG)
    decided: list[tuple[float, Event]] = []
    for item in timeline:
        if isinstance(item, CarState):
            decided += [(item.t, e) for e in unit.feed(item)]
        else:
            assert unit.blind(item) == [], "blind must never emit"
    return decided


@settings(max_examples=400, deadline=None)
@given(timelines())
def test_occurrences_are_well_formed(timeline: list[CarState | float]) -> None:
    open_onsets: dict[EventType, float] = {}
    sample_times = {item.t for item in timeline if isinstance(item, CarState)}
    for t, event in run(timeline):
        assert event.at == t, "events are decided at the sample's time"
        assert event.onset <= event.at
        assert event.onset in sample_times, "onset is the time of a sample"
        if event.phase is Phase.RAISED:
            assert event.type not in open_onsets, "at most one open occurrence per type"
            open_onsets[event.type] = event.onset
        else:
            assert open_onsets.pop(event.type) == event.onset, "CLEARED matches its RAISED"


@settings(max_examples=300, deadline=None)
@given(timelines())
def test_entrapment_raises_only_on_a_trapping_sample_after_its_threshold(
    timeline: list[CarState | float],
) -> None:
    by_time = {item.t: item for item in timeline if isinstance(item, CarState)}
    for t, event in run(timeline):
        if event.type is not EventType.ENTRAPMENT or event.phase is not Phase.RAISED:
            continue
        sample = by_time[t]
        assert sample.mode in ENTRAPMENT_MODES
        assert sample.occupied is True or (
            sample.occupied is None and (sample.load_percent or 0) > 5
        )
        shortest = CONFIG.entrapment_between_floors_s - 1e-6
        assert sample.alarm_button or event.at - event.onset >= shortest


@settings(max_examples=200, deadline=None)
@given(timelines())
def test_inspection_never_starts_anything(timeline: list[CarState | float]) -> None:
    inspected = [
        replace(item, mode=ServiceMode.INSPECTION) if isinstance(item, CarState) else item
        for item in timeline
    ]
    assert run(inspected) == []
