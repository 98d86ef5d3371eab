"""Properties of every detector over generated sample sequences with increasing times."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.detect.engine import DetectionConfig, UnitDetectors
from agent.detect.entrapment import ENTRAPMENT_MODES
from agent.detect.events import Event, EventType, Phase
from agent.state import CarState, Direction, DoorState, ServiceMode
from tests.agent.detect_traffic import normal_operation

# Short thresholds so generated spells often run long enough to raise and clear.
CONFIG = DetectionConfig.from_mapping(
    {
        "entrapment_between_floors_s": 3,
        "entrapment_at_landing_s": 6,
        "entrapment_alarm_debounce_s": 0.5,
        "door_close_failure_s": 2,
        "door_open_failure_s": 1.5,
        "door_held_open_s": 4,
        "door_reopen_loop_s": 3,
        "door_reopen_loop_reopenings": 2,
        "door_slowing_min_cycles": 2,
        "door_slowing_cycles": 1,
        "nuisance_dedup_s": 3,
        "nuisance_daily_cap": 3,
        "stopped_outside_door_zone_s": 2,
        "run_time_limit_s": 5,
        "rated_speed_mm_s": 800,
        "top_landing": 5,
        "bottom_landing": 0,
        "door_lock_bypass_s": 0.5,
        "alarm_button_debounce_s": 0.5,
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
    up_final_limit=maybe(st.booleans()),
    down_final_limit=maybe(st.booleans()),
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


def run_with_samples(timeline: list[CarState | float]) -> list[tuple[CarState, Event]]:
    """Every event with the sample it was decided on (times may repeat: a 0 s step)."""
    unit = UnitDetectors(CONFIG)
    decided: list[tuple[CarState, Event]] = []
    for item in timeline:
        if isinstance(item, CarState):
            decided += [(item, e) for e in unit.feed(item)]
        else:
            assert unit.blind(item) == [], "blind must never emit"
    unit.health  # noqa: B018  # the snapshot must be computable after any sequence
    return decided


def run(timeline: list[CarState | float]) -> list[tuple[float, Event]]:
    return [(sample.t, e) for sample, e in run_with_samples(timeline)]


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
    # Samples are paired with their events directly: with a 0 s step several samples share
    # a time, so looking a sample up by time (as this test once did) finds the wrong one.
    for sample, event in run_with_samples(timeline):
        if event.type is not EventType.ENTRAPMENT or event.phase is not Phase.RAISED:
            continue
        assert sample.mode in ENTRAPMENT_MODES
        assert sample.occupied is True or (
            sample.occupied is None and (sample.load_percent or 0) > 5
        )
        shortest = CONFIG.entrapment_between_floors_s - 1e-6
        assert sample.alarm_button or event.at - event.onset >= shortest


@settings(max_examples=200, deadline=None)
@given(timelines())
def test_inspection_starts_only_the_rules_that_say_so(timeline: list[CarState | float]) -> None:
    inspected = [
        replace(item, mode=ServiceMode.INSPECTION) if isinstance(item, CarState) else item
        for item in timeline
    ]
    # Watched in inspection by their documented rules: the mode itself, mains, the alarm.
    allowed = {EventType.MODE_CHANGE, EventType.POWER_FAILURE, EventType.ALARM_BUTTON}
    assert {e.type for _, e in run(inspected)} <= allowed


@settings(max_examples=200, deadline=None)
@given(timelines())
def test_no_occurrence_starts_before_a_link_outage(timeline: list[CarState | float]) -> None:
    # blind forgets every pending onset, so anything raised after an outage began after it.
    unit = UnitDetectors(CONFIG)
    last_blind = float("-inf")
    for item in timeline:
        if isinstance(item, CarState):
            for event in unit.feed(item):
                if event.phase is Phase.RAISED:
                    assert event.onset >= last_blind, event
        else:
            unit.blind(item)
            last_blind = item


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(200, 3000))
def test_normal_operation_raises_nothing(rng: random.Random, samples: int) -> None:
    # Default thresholds, with the unit facts that arm every rule.
    config = DetectionConfig.from_mapping(
        {"rated_speed_mm_s": 1000, "top_landing": 9, "bottom_landing": 0}
    )
    unit = UnitDetectors(config)
    for sample in normal_operation(rng, samples):
        assert unit.feed(sample) == [], sample
    health = unit.health
    assert health.trips >= 0 and health.door_cycles >= 1
