"""ENTRAPMENT scenarios: sequences of samples with explicit times."""

from __future__ import annotations

import pytest

from agent.detect import entrapment
from agent.detect.engine import DetectionConfig, UnitDetectors
from agent.detect.events import Event, EventType, Phase
from agent.state import CarState, DoorState, ServiceMode
from tests.agent import detect_helpers
from tests.agent.detect_helpers import TRAPPED_AT_LANDING, TRAPPED_BETWEEN_FLOORS, at, spell


def entrapments(events: list[Event]) -> list[Event]:
    return [e for e in events if e.type is EventType.ENTRAPMENT]


def feed_all(samples: list[CarState], config: DetectionConfig | None = None) -> list[Event]:
    # A trapped car also trips other rules (stopped outside the door zone, alarm button);
    # these scenarios are about ENTRAPMENT alone.
    return entrapments(detect_helpers.feed_all(samples, config))


def test_trapped_between_floors_raises_exactly_t1_after_the_first_trapping_sample() -> None:
    riding = spell(TRAPPED_BETWEEN_FLOORS, 90.0, 99.5, 0.5, moving=True, speed_mm_s=1000)
    stopped = spell(TRAPPED_BETWEEN_FLOORS, 100.0, 140.0, 0.5)
    unit = UnitDetectors()
    decided = [(s.t, entrapments(unit.feed(s))) for s in riding + stopped]
    raised_at = [(t, events) for t, events in decided if events]
    assert len(raised_at) == 1
    t, events = raised_at[0]
    assert t == 130.0
    assert events == [
        Event(
            EventType.ENTRAPMENT,
            Phase.RAISED,
            onset=100.0,
            at=130.0,
            floor=3,
            reason=events[0].reason,
            at_landing=False,
        )
    ]
    assert "between floors" in events[0].reason


def test_trapped_at_a_landing_needs_t2() -> None:
    events = feed_all(spell(TRAPPED_AT_LANDING, 0.0, 59.5, 0.5))
    assert events == []
    events = feed_all(spell(TRAPPED_AT_LANDING, 0.0, 70.0, 0.5))
    assert [(e.phase, e.onset, e.at) for e in events] == [(Phase.RAISED, 0.0, 60.0)]
    assert "at a landing" in events[0].reason


def test_passenger_waiting_at_a_landing_less_than_t2_is_not_trapped() -> None:
    waiting = spell(TRAPPED_AT_LANDING, 0.0, 59.0)
    leaving = [
        at(TRAPPED_AT_LANDING, 59.5, door=DoorState.OPENING, door_lock_closed=False),
        at(TRAPPED_AT_LANDING, 61.0, door=DoorState.OPEN, door_lock_closed=False),
        at(TRAPPED_AT_LANDING, 70.0, door=DoorState.OPEN, door_lock_closed=False, occupied=False),
    ]
    assert feed_all(waiting + leaving) == []


def test_alarm_button_held_one_second_raises_early_with_the_trapping_onset() -> None:
    samples = spell(TRAPPED_BETWEEN_FLOORS, 0.0, 4.5, 0.5) + spell(
        TRAPPED_BETWEEN_FLOORS, 5.0, 8.0, 0.5, alarm_button=True
    )
    events = feed_all(samples)
    assert [(e.phase, e.onset, e.at) for e in events] == [(Phase.RAISED, 0.0, 6.0)]
    assert "alarm" in events[0].reason


def test_alarm_taps_shorter_than_the_debounce_do_not_raise() -> None:
    samples = [
        at(TRAPPED_BETWEEN_FLOORS, t, alarm_button=(int(t * 2) % 3 != 0))
        for t in (i * 0.5 for i in range(40))
    ]
    assert feed_all(samples) == []


def test_alarm_held_while_riding_counts_only_from_the_stop() -> None:
    riding = spell(TRAPPED_BETWEEN_FLOORS, 0.0, 5.0, 0.5, moving=True, alarm_button=True)
    stopped = spell(TRAPPED_BETWEEN_FLOORS, 5.5, 8.0, 0.5, alarm_button=True)
    events = feed_all(riding + stopped)
    assert [(e.phase, e.onset, e.at) for e in events] == [(Phase.RAISED, 5.5, 6.5)]


@pytest.mark.parametrize(
    "mode", [ServiceMode.INSPECTION, ServiceMode.FIREFIGHTER, ServiceMode.STOPPED]
)
def test_attended_and_out_of_service_modes_never_raise(mode: ServiceMode) -> None:
    samples = spell(TRAPPED_BETWEEN_FLOORS, 0.0, 600.0, 1.0, mode=mode, alarm_button=True)
    assert feed_all(samples) == []


@pytest.mark.parametrize(
    "mode",
    [
        ServiceMode.FIRE_RETURN,
        ServiceMode.EMERGENCY_POWER,
        ServiceMode.EARTHQUAKE,
        ServiceMode.UNKNOWN,
    ],
)
def test_failed_automatic_recovery_and_unknown_mode_still_raise(mode: ServiceMode) -> None:
    events = feed_all(spell(TRAPPED_BETWEEN_FLOORS, 0.0, 40.0, mode=mode))
    assert [(e.phase, e.at) for e in events] == [(Phase.RAISED, 30.0)]


def test_leaving_inspection_restarts_the_onset() -> None:
    inspection = spell(TRAPPED_BETWEEN_FLOORS, 0.0, 20.0, mode=ServiceMode.INSPECTION)
    normal = spell(TRAPPED_BETWEEN_FLOORS, 21.0, 60.0)
    events = feed_all(inspection + normal)
    assert [(e.onset, e.at) for e in events] == [(21.0, 51.0)]


def test_empty_car_never_raises() -> None:
    empty = spell(TRAPPED_BETWEEN_FLOORS, 0.0, 300.0, occupied=False, alarm_button=True)
    assert feed_all(empty) == []


def test_load_decides_occupancy_without_an_occupancy_sensor() -> None:
    light = spell(TRAPPED_BETWEEN_FLOORS, 0.0, 100.0, occupied=None, load_percent=5)
    assert feed_all(light) == []
    loaded = spell(TRAPPED_BETWEEN_FLOORS, 0.0, 100.0, occupied=None, load_percent=6)
    assert [e.at for e in feed_all(loaded)] == [30.0]


def test_undecidable_occupancy_raises_nothing() -> None:
    unknown = spell(TRAPPED_BETWEEN_FLOORS, 0.0, 300.0, occupied=None, load_percent=None)
    assert feed_all(unknown) == []


def test_occupancy_sensor_wins_over_load() -> None:
    sample = at(TRAPPED_BETWEEN_FLOORS, 0.0, occupied=False, load_percent=80)
    assert entrapment.occupancy(sample, 5.0) is False


def test_link_outage_resets_the_pending_onset_without_raising() -> None:
    unit = UnitDetectors()
    events: list[Event] = []
    for sample in spell(TRAPPED_BETWEEN_FLOORS, 0.0, 25.0):
        events += entrapments(unit.feed(sample))
    assert unit.blind(26.0) == []
    for sample in spell(TRAPPED_BETWEEN_FLOORS, 40.0, 69.0):
        events += entrapments(unit.feed(sample))
    assert events == []
    events += entrapments(unit.feed(at(TRAPPED_BETWEEN_FLOORS, 70.0)))
    assert [(e.phase, e.onset, e.at) for e in events] == [(Phase.RAISED, 40.0, 70.0)]


def test_link_outage_keeps_a_raised_entrapment_raised() -> None:
    unit = UnitDetectors()
    events: list[Event] = []
    for sample in spell(TRAPPED_BETWEEN_FLOORS, 0.0, 35.0):
        events += entrapments(unit.feed(sample))
    assert unit.blind(36.0) == []
    for sample in spell(TRAPPED_BETWEEN_FLOORS, 50.0, 200.0):
        events += entrapments(unit.feed(sample))
    assert [(e.phase, e.onset) for e in events] == [(Phase.RAISED, 0.0)]
    events += entrapments(unit.feed(at(TRAPPED_AT_LANDING, 201.0, door=DoorState.OPENING)))
    assert [(e.phase, e.onset) for e in events] == [(Phase.RAISED, 0.0), (Phase.CLEARED, 0.0)]


def test_raised_then_cleared_when_the_car_levels_and_opens_at_a_landing() -> None:
    stuck = spell(TRAPPED_BETWEEN_FLOORS, 0.0, 40.0)
    moving_shut = spell(TRAPPED_BETWEEN_FLOORS, 41.0, 45.0, moving=True, speed_mm_s=300)
    levelled_shut = spell(TRAPPED_AT_LANDING, 46.0, 47.0, floor=4)
    opening = [at(TRAPPED_AT_LANDING, 48.0, floor=4, door=DoorState.OPENING)]
    open_ = spell(TRAPPED_AT_LANDING, 49.0, 52.0, floor=4, door=DoorState.OPEN)
    events = feed_all(stuck + moving_shut + levelled_shut + opening + open_)
    assert [(e.type, e.phase, e.onset, e.at, e.floor) for e in events] == [
        (EventType.ENTRAPMENT, Phase.RAISED, 0.0, 30.0, 3),
        (EventType.ENTRAPMENT, Phase.CLEARED, 0.0, 48.0, 4),
    ]


def test_doors_opened_between_floors_do_not_clear_but_an_empty_car_does() -> None:
    stuck = spell(TRAPPED_BETWEEN_FLOORS, 0.0, 30.0)
    rescuers_open = spell(TRAPPED_BETWEEN_FLOORS, 31.0, 40.0, door=DoorState.OPEN)
    evacuated = [at(TRAPPED_BETWEEN_FLOORS, 41.0, door=DoorState.OPEN, occupied=False)]
    events = entrapments(feed_all(stuck + rescuers_open + evacuated))
    assert [(e.phase, e.at, e.reason) for e in events] == [
        (Phase.RAISED, 30.0, events[0].reason),
        (Phase.CLEARED, 41.0, "car empty"),
    ]


def test_a_new_occurrence_after_clearing_has_its_own_onset() -> None:
    first = spell(TRAPPED_BETWEEN_FLOORS, 0.0, 30.0)
    freed = [at(TRAPPED_AT_LANDING, 31.0, door=DoorState.OPEN)]
    second = spell(TRAPPED_BETWEEN_FLOORS, 32.0, 62.0)
    events = entrapments(feed_all(first + freed + second))
    assert [(e.phase, e.onset, e.at) for e in events] == [
        (Phase.RAISED, 0.0, 30.0),
        (Phase.CLEARED, 0.0, 31.0),
        (Phase.RAISED, 32.0, 62.0),
    ]


def test_door_lock_circuit_stands_in_for_missing_door_signals() -> None:
    shut = spell(TRAPPED_BETWEEN_FLOORS, 0.0, 30.0, door=DoorState.UNKNOWN)
    unlocked = [at(TRAPPED_AT_LANDING, 31.0, door=DoorState.UNKNOWN, door_lock_closed=False)]
    events = feed_all(shut + unlocked)
    assert [(e.phase, e.at) for e in events] == [(Phase.RAISED, 30.0), (Phase.CLEARED, 31.0)]
    no_door_signals = spell(
        TRAPPED_BETWEEN_FLOORS, 0.0, 300.0, door=DoorState.UNKNOWN, door_lock_closed=None
    )
    assert feed_all(no_door_signals) == []


def test_speed_stands_in_for_a_missing_moving_signal() -> None:
    still = spell(TRAPPED_BETWEEN_FLOORS, 0.0, 30.0, moving=None, speed_mm_s=0)
    assert [e.at for e in feed_all(still)] == [30.0]
    creeping = spell(TRAPPED_BETWEEN_FLOORS, 0.0, 300.0, moving=None, speed_mm_s=20)
    assert feed_all(creeping) == []
    unknown = spell(TRAPPED_BETWEEN_FLOORS, 0.0, 300.0, moving=None, speed_mm_s=None)
    assert feed_all(unknown) == []


def test_without_a_door_zone_signal_the_landing_threshold_applies() -> None:
    events = feed_all(spell(TRAPPED_BETWEEN_FLOORS, 0.0, 70.0, door_zone=None, levelled=None))
    assert [(e.onset, e.at) for e in events] == [(0.0, 60.0)]


def test_not_closed_doors_are_not_trapping() -> None:
    for door in (DoorState.OPEN, DoorState.OPENING, DoorState.CLOSING, DoorState.PARTLY_OPEN):
        samples = spell(TRAPPED_BETWEEN_FLOORS, 0.0, 300.0, door=door)
        assert feed_all(samples) == [], door


def test_thresholds_come_from_config() -> None:
    config = DetectionConfig.from_mapping(
        {"entrapment_between_floors_s": 3, "entrapment_at_landing_s": 7.5}
    )
    between = feed_all(spell(TRAPPED_BETWEEN_FLOORS, 10.0, 20.0, 0.5), config)
    assert [(e.onset, e.at) for e in between] == [(10.0, 13.0)]
    landing = feed_all(spell(TRAPPED_AT_LANDING, 10.0, 20.0, 0.5), config)
    assert [(e.onset, e.at) for e in landing] == [(10.0, 17.5)]


def test_float_rounding_of_sample_times_does_not_delay_the_raise() -> None:
    # 0.1 steps accumulate rounding: 0.1 * 300 is not exactly 30.0 after summing.
    samples: list[CarState] = []
    t = 0.0
    for _ in range(320):
        samples.append(at(TRAPPED_BETWEEN_FLOORS, t))
        t += 0.1
    events = feed_all(samples)
    assert len(events) == 1
    assert events[0].at == pytest.approx(30.0, abs=1e-6)


def test_step_returns_the_same_state_object_when_nothing_changes() -> None:
    config = entrapment.EntrapmentConfig()
    state, _ = entrapment.step(
        entrapment.EntrapmentState(), at(TRAPPED_BETWEEN_FLOORS, 0.0), 0.0, config
    )
    again, events = entrapment.step(state, at(TRAPPED_BETWEEN_FLOORS, 1.0), 1.0, config)
    assert again is state
    assert events == []
