"""Scenarios for the motion, circuit, controller and nuisance door rules: each at its
threshold, and the near misses that must stay quiet."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from agent.detect import circuits, controller, doors, motion
from agent.detect.engine import DetectionConfig, UnitDetectors
from agent.detect.events import Event, EventType, Phase
from agent.state import CarState, Direction, DoorState, ServiceMode
from tests.agent.detect_helpers import TRAPPED_BETWEEN_FLOORS, at, feed_all, spell

# An empty car standing level at floor 2, doors closed and locked, in service.
IDLE = CarState(
    t=0.0,
    floor=2,
    position_mm=6000,
    speed_mm_s=0,
    direction=Direction.NONE,
    moving=False,
    door_zone=True,
    levelled=True,
    door=DoorState.CLOSED,
    door_lock_closed=True,
    safety_circuit_closed=True,
    occupied=False,
    load_percent=0,
    alarm_button=False,
    overload=False,
    mode=ServiceMode.NORMAL,
    fault_code=0,
    mains_ok=True,
    door_open_command=False,
    door_close_command=False,
    up_final_limit=False,
    down_final_limit=False,
)
RUNNING = replace(IDLE, moving=True, speed_mm_s=1000, direction=Direction.UP, door_zone=False)
OPEN = replace(IDLE, door=DoorState.OPEN, door_lock_closed=False)
BETWEEN = replace(IDLE, door_zone=False, levelled=False)
CONFIGURED = DetectionConfig.from_mapping(
    {"rated_speed_mm_s": 1000, "top_landing": 9, "bottom_landing": 0}
)


def of(events: list[Event], event_type: EventType) -> list[tuple[Phase, float, float]]:
    return [(e.phase, e.onset, e.at) for e in events if e.type is event_type]


def run(*parts: list[CarState], config: DetectionConfig | None = None) -> list[Event]:
    return feed_all([s for part in parts for s in part], config)


def held(base: CarState, start: float, stop: float, step: float = 0.1, **kw: Any) -> list[CarState]:
    return spell(base, start, stop, step, **kw)


# --- motion -------------------------------------------------------------------------------


def test_stopped_outside_the_door_zone_raises_at_15_s_and_clears_on_levelling() -> None:
    events = run(held(BETWEEN, 0.0, 14.9), [at(IDLE, 15.0)])
    assert of(events, EventType.STOPPED_OUTSIDE_DOOR_ZONE) == []
    events = run(held(BETWEEN, 0.0, 15.0), [at(IDLE, 16.0)])
    assert of(events, EventType.STOPPED_OUTSIDE_DOOR_ZONE) == [
        (Phase.RAISED, 0.0, 15.0),
        (Phase.CLEARED, 0.0, 16.0),
    ]


def test_empty_car_parked_between_floors_in_inspection_raises_no_fault() -> None:
    parked = held(BETWEEN, 0.0, 600.0, 1.0, mode=ServiceMode.INSPECTION)
    events = run(parked)
    assert [(e.type, e.phase) for e in events] == [(EventType.MODE_CHANGE, Phase.RAISED)]
    assert events[0].reason == "inspection"


def test_unintended_movement_needs_two_samples_outside_the_zone_with_doors_open() -> None:
    in_zone = held(OPEN, 0.0, 1.0)
    one = [at(OPEN, 1.1, door_zone=False, levelled=False)]
    back = [at(OPEN, 1.2)]
    assert of(run(in_zone, one, back), EventType.UNINTENDED_MOVEMENT) == []
    two = [at(OPEN, 1.1, door_zone=False), at(OPEN, 1.2, door_zone=False)]
    closed = [at(IDLE, 1.3, door_zone=False)]
    assert of(run(in_zone, two, closed), EventType.UNINTENDED_MOVEMENT) == [
        (Phase.RAISED, 1.1, 1.2),
        (Phase.CLEARED, 1.1, 1.3),
    ]


def test_unintended_movement_is_not_rescuers_opening_doors_between_floors() -> None:
    rescue = held(BETWEEN, 0.0, 5.0, door=DoorState.OPEN, door_lock_closed=False)
    assert of(run(rescue), EventType.UNINTENDED_MOVEMENT) == []


def test_unintended_movement_is_watched_out_of_service_but_not_in_inspection() -> None:
    moves = [at(OPEN, 0.0), at(OPEN, 0.1, door_zone=False), at(OPEN, 0.2, door_zone=False)]
    stopped = [replace(s, mode=ServiceMode.STOPPED) for s in moves]
    inspection = [replace(s, mode=ServiceMode.INSPECTION) for s in moves]
    assert len(of(run(stopped), EventType.UNINTENDED_MOVEMENT)) == 1
    assert of(run(inspection), EventType.UNINTENDED_MOVEMENT) == []


def test_run_time_exceeded_at_60_s_of_running() -> None:
    assert of(run(held(RUNNING, 0.0, 59.9)), EventType.RUN_TIME_EXCEEDED) == []
    events = run(held(RUNNING, 0.0, 60.0), [at(IDLE, 61.0)])
    assert of(events, EventType.RUN_TIME_EXCEEDED) == [
        (Phase.RAISED, 0.0, 60.0),
        (Phase.CLEARED, 0.0, 61.0),
    ]


def test_overspeed_needs_the_rated_speed_and_100_ms_above_115_percent() -> None:
    fast = held(RUNNING, 0.0, 1.0, speed_mm_s=1300)
    assert of(run(fast), EventType.OVERSPEED) == []  # no rated speed configured
    at_limit = held(RUNNING, 0.0, 1.0, speed_mm_s=1150)
    assert of(run(at_limit, config=CONFIGURED), EventType.OVERSPEED) == []
    blip = [at(RUNNING, 0.0, speed_mm_s=1200), at(RUNNING, 0.05, speed_mm_s=1000)]
    assert of(run(blip, config=CONFIGURED), EventType.OVERSPEED) == []
    over = [at(RUNNING, 0.0, speed_mm_s=1151), at(RUNNING, 0.1, speed_mm_s=1200)]
    slowed = [at(RUNNING, 0.2, speed_mm_s=1100), at(RUNNING, 0.3, speed_mm_s=1000)]
    assert of(run(over, slowed, config=CONFIGURED), EventType.OVERSPEED) == [
        (Phase.RAISED, 0.0, 0.1),
        (Phase.CLEARED, 0.0, 0.3),
    ]


def test_overtravel_from_the_final_limits_at_once() -> None:
    top = [at(RUNNING, 0.0, up_final_limit=True), at(IDLE, 5.0, floor=9)]
    assert of(run(top), EventType.OVERTRAVEL_TOP) == [
        (Phase.RAISED, 0.0, 0.0),
        (Phase.CLEARED, 0.0, 5.0),
    ]
    bottom = [at(RUNNING, 0.0, down_final_limit=True, direction=Direction.DOWN)]
    assert of(run(bottom), EventType.OVERTRAVEL_BOTTOM) == [(Phase.RAISED, 0.0, 0.0)]
    inspection = [replace(s, mode=ServiceMode.INSPECTION) for s in top]
    assert of(run(inspection), EventType.OVERTRAVEL_TOP) == []


def test_overtravel_beyond_the_terminal_landing_by_position() -> None:
    level_top = at(IDLE, 0.0, floor=9, position_mm=27000)
    above = at(level_top, 0.1, door_zone=False, levelled=False, position_mm=27200)
    below = at(level_top, 0.1, door_zone=False, levelled=False, position_mm=26800)
    assert of(run([level_top, above], config=CONFIGURED), EventType.OVERTRAVEL_TOP) == [
        (Phase.RAISED, 0.1, 0.1)
    ]
    # Leaving the top landing downwards is ordinary service.
    assert of(run([level_top, below], config=CONFIGURED), EventType.OVERTRAVEL_TOP) == []
    # Approaching the top landing from below is not overtravel either.
    approach = at(BETWEEN, 0.0, floor=9, position_mm=26800, direction=Direction.UP)
    assert of(run([approach], config=CONFIGURED), EventType.OVERTRAVEL_TOP) == []
    level_bottom = at(IDLE, 0.0, floor=0, position_mm=0)
    sinking = at(level_bottom, 0.1, door_zone=False, position_mm=None, direction=Direction.DOWN)
    assert of(run([level_bottom, sinking], config=CONFIGURED), EventType.OVERTRAVEL_BOTTOM) == [
        (Phase.RAISED, 0.1, 0.1)
    ]


def test_position_lost_on_an_impossible_floor() -> None:
    samples = [at(IDLE, 0.0), at(IDLE, 1.0, floor=12), at(IDLE, 2.0, floor=3)]
    assert of(run(samples, config=CONFIGURED), EventType.POSITION_LOST) == [
        (Phase.RAISED, 1.0, 1.0),
        (Phase.CLEARED, 1.0, 2.0),
    ]
    assert of(run(samples), EventType.POSITION_LOST) == []  # landings not configured


# --- circuits -----------------------------------------------------------------------------


def test_safety_circuit_open_while_running_after_150_ms() -> None:
    trip = [at(RUNNING, 0.0, safety_circuit_closed=False)]
    stopped = held(IDLE, 0.1, 0.2, safety_circuit_closed=False)
    assert of(run(trip, stopped[:1], [at(IDLE, 0.15)]), EventType.SAFETY_CIRCUIT_OPEN) == []
    assert of(run(trip, stopped, [at(IDLE, 1.0)]), EventType.SAFETY_CIRCUIT_OPEN) == [
        (Phase.RAISED, 0.0, 0.2),
        (Phase.CLEARED, 0.0, 1.0),
    ]
    # Opened while parked (a mechanic's stop switch) is not "while running".
    parked = held(IDLE, 0.0, 5.0, safety_circuit_closed=False)
    assert of(run(parked), EventType.SAFETY_CIRCUIT_OPEN) == []


def test_door_open_while_moving_outside_the_zone_only() -> None:
    opened = held(RUNNING, 0.0, 0.1, door_lock_closed=False, door=DoorState.PARTLY_OPEN)
    shut = [at(RUNNING, -0.1)]  # the run had its doors closed and locked
    assert of(run(shut, opened, [at(IDLE, 1.0)]), EventType.DOOR_OPEN_WHILE_MOVING) == [
        (Phase.RAISED, 0.0, 0.1),
        (Phase.CLEARED, 0.0, 1.0),
    ]
    # Doors starting to open while the car levels inside the door zone are allowed.
    levelling = held(RUNNING, 0.0, 1.0, door_zone=True, speed_mm_s=50, door=DoorState.OPENING)
    assert of(run(levelling), EventType.DOOR_OPEN_WHILE_MOVING) == []


def test_door_lock_bypass_after_2_s_and_cleared_only_by_an_unlocked_open_door() -> None:
    jumpered = held(OPEN, 0.0, 1.9, door_lock_closed=True)
    assert of(run(jumpered, [at(IDLE, 2.0)]), EventType.DOOR_LOCK_BYPASS) == []
    jumpered = held(OPEN, 0.0, 2.0, door_lock_closed=True)
    closed = [at(IDLE, 3.0)]
    again = [at(OPEN, 10.0, door_lock_closed=True)]
    fixed = [at(OPEN, 20.0)]
    events = run(jumpered, closed, again, fixed)
    assert of(events, EventType.DOOR_LOCK_BYPASS) == [
        (Phase.RAISED, 0.0, 2.0),
        (Phase.CLEARED, 0.0, 20.0),
    ]


# --- controller ---------------------------------------------------------------------------


def test_restart_prevented_per_fault_code() -> None:
    samples = [at(IDLE, 0.0), at(IDLE, 1.0, fault_code=35), at(IDLE, 2.0, fault_code=36)]
    samples += [at(IDLE, 3.0, fault_code=36), at(IDLE, 4.0, fault_code=0)]
    events = [e for e in run(samples) if e.type is EventType.RESTART_PREVENTED]
    assert [(e.phase, e.onset, e.at, e.reason) for e in events] == [
        (Phase.RAISED, 1.0, 1.0, "controller fault code 35"),
        (Phase.CLEARED, 1.0, 2.0, "fault code now 36"),
        (Phase.RAISED, 2.0, 2.0, "controller fault code 36"),
        (Phase.CLEARED, 2.0, 4.0, "fault code cleared"),
    ]


def test_restart_prevented_is_watched_out_of_service_not_in_inspection() -> None:
    stopped = [at(IDLE, 0.0, fault_code=7, mode=ServiceMode.STOPPED)]
    inspection = [at(IDLE, 0.0, fault_code=7, mode=ServiceMode.INSPECTION)]
    assert len(of(run(stopped), EventType.RESTART_PREVENTED)) == 1
    assert of(run(inspection), EventType.RESTART_PREVENTED) == []


def test_mains_failure_with_nobody_inside_is_power_failure_not_entrapment() -> None:
    outage = held(BETWEEN, 0.0, 300.0, 1.0, mains_ok=False)
    events = run(outage, [at(BETWEEN, 301.0)])
    assert of(events, EventType.POWER_FAILURE) == [
        (Phase.RAISED, 0.0, 0.0),
        (Phase.CLEARED, 0.0, 301.0),
    ]
    assert of(events, EventType.ENTRAPMENT) == []
    occupied = run(held(TRAPPED_BETWEEN_FLOORS, 0.0, 30.0, 1.0, mains_ok=False))
    assert [e.phase for e in occupied if e.type is EventType.ENTRAPMENT] == [Phase.RAISED]


def test_mode_change_names_the_mode_and_clears_back_in_normal() -> None:
    samples = [
        at(IDLE, 0.0),
        at(IDLE, 1.0, mode=ServiceMode.INSPECTION),
        at(IDLE, 2.0, mode=ServiceMode.UNKNOWN),  # no information: nothing happens
        at(IDLE, 3.0, mode=ServiceMode.FIRE_RETURN),
        at(IDLE, 4.0),
    ]
    events = [e for e in run(samples) if e.type is EventType.MODE_CHANGE]
    assert [(e.phase, e.onset, e.at, e.reason) for e in events] == [
        (Phase.RAISED, 1.0, 1.0, "inspection"),
        (Phase.CLEARED, 1.0, 3.0, "now fire return"),
        (Phase.RAISED, 3.0, 3.0, "fire return"),
        (Phase.CLEARED, 3.0, 4.0, "back to normal"),
    ]


@pytest.mark.parametrize("mode", [ServiceMode.NORMAL, ServiceMode.INSPECTION])
def test_alarm_button_held_one_second_in_any_mode(mode: ServiceMode) -> None:
    base = replace(IDLE, mode=mode)
    tap = held(base, 0.0, 0.9, alarm_button=True)
    assert of(run(tap, [at(base, 1.0)]), EventType.ALARM_BUTTON) == []
    press = held(base, 0.0, 1.0, alarm_button=True)
    assert of(run(press, [at(base, 1.5)]), EventType.ALARM_BUTTON) == [
        (Phase.RAISED, 0.0, 1.0),
        (Phase.CLEARED, 0.0, 1.5),
    ]


# --- nuisance door events -----------------------------------------------------------------


def test_passenger_holding_the_door_for_15_s_is_not_held_open() -> None:
    holding = held(OPEN, 0.0, 15.0, 0.5, reopen_active=True)
    assert of(run(holding, [at(IDLE, 17.0)]), EventType.DOOR_HELD_OPEN) == []


def test_long_lobby_dwell_below_the_threshold_then_at_it() -> None:
    lobby = replace(OPEN, floor=0)
    assert of(run(held(lobby, 0.0, 59.5, 0.5), [at(IDLE, 60.0)]), EventType.DOOR_HELD_OPEN) == []
    events = run(held(lobby, 0.0, 60.0, 0.5), [at(IDLE, 61.0)])
    assert of(events, EventType.DOOR_HELD_OPEN) == [
        (Phase.RAISED, 0.0, 60.0),
        (Phase.CLEARED, 0.0, 61.0),
    ]


def test_held_open_is_only_watched_in_normal_service() -> None:
    for mode in (ServiceMode.FIRE_RETURN, ServiceMode.INSPECTION, ServiceMode.EMERGENCY_POWER):
        assert of(run(held(OPEN, 0.0, 300.0, 1.0, mode=mode)), EventType.DOOR_HELD_OPEN) == []


def reopenings(count: int, start: float = 0.0, base: CarState = OPEN) -> list[CarState]:
    samples = [at(base, start)]
    t = start
    for _ in range(count):
        samples.append(at(base, t + 0.5, door=DoorState.CLOSING))
        samples.append(at(base, t + 1.0, door=DoorState.OPENING))
        samples.append(at(base, t + 1.5))
        t += 1.5
    return samples


def reopening_loop(cycle_s: float, until: float, start: float = 0.0) -> list[CarState]:
    """Doors reopening every ``cycle_s`` from ``start`` until ``until``: each cycle closes
    for a third of it, reopens, and stands open, sampled every 0.1 s."""
    samples = held(OPEN, start, start + cycle_s / 3)
    t = start + cycle_s / 3
    while t < until:
        samples += held(OPEN, t + 0.1, t + cycle_s / 3, door=DoorState.CLOSING)
        samples += held(OPEN, t + cycle_s / 3 + 0.1, t + cycle_s / 2, door=DoorState.OPENING)
        samples += held(OPEN, t + cycle_s / 2 + 0.1, t + cycle_s)
        t += cycle_s
    return [s for s in samples if s.t <= until]


@pytest.mark.parametrize("cycle_s", [3.0, 5.0, 12.0, 25.0])
def test_reopen_loop_raises_60_s_after_the_first_reopening_whatever_the_cycle(
    cycle_s: float,
) -> None:
    samples = reopening_loop(cycle_s, 200.0)
    first_reopening = next(s.t for s in samples if s.door is DoorState.OPENING)
    events = [e for e in feed_all(samples) if e.type is EventType.DOOR_REOPEN_LOOP]
    assert [(e.phase, e.onset) for e in events] == [(Phase.RAISED, first_reopening)]
    # Decided on the first sample at least 60 s after the onset, not at the next reopening.
    assert first_reopening + 60.0 <= events[0].at <= first_reopening + 60.0 + 0.1 + 1e-6
    assert "reopened" in events[0].reason


def test_reopen_loop_clears_when_the_car_runs_or_the_doors_stay_shut() -> None:
    loop = reopening_loop(5.0, 70.0)
    onset = next(s.t for s in loop if s.door is DoorState.OPENING)
    departs = [at(RUNNING, 71.0)]
    events = of(run(loop, departs), EventType.DOOR_REOPEN_LOOP)
    assert [(phase, start) for phase, start, _ in events] == [
        (Phase.RAISED, onset),
        (Phase.CLEARED, onset),
    ]
    assert events[1][2] == 71.0
    # Closed and locked for a moment is part of a loop (a stuck landing call reopens the
    # locked doors); 10 s shut ends it.
    shut = held(IDLE, 70.1, 85.0, 0.5)
    events = of(run(loop, shut), EventType.DOOR_REOPEN_LOOP)
    assert events[1][:2] == (Phase.CLEARED, onset)
    assert events[1][2] == pytest.approx(80.1)


def test_a_loop_that_locks_between_reopenings_is_still_a_loop() -> None:
    samples: list[CarState] = []
    for k in range(15):  # 8 s cycles: open 4 s, close 2 s, locked 2 s, reopen
        t = 8.0 * k
        samples += held(OPEN, t, t + 4.0, 0.5)
        samples += held(OPEN, t + 4.5, t + 5.5, 0.5, door=DoorState.CLOSING)
        samples += held(IDLE, t + 6.0, t + 7.5, 0.5)
    events = of(run(samples), EventType.DOOR_REOPEN_LOOP)
    assert events == [(Phase.RAISED, 8.0, 68.0)]


def test_reopenings_under_the_time_or_the_count_are_not_a_loop() -> None:
    # The near miss of the rig: an obstruction reopening the doors for 25 s.
    assert of(run(reopening_loop(5.0, 25.0), [at(RUNNING, 26.0)]), EventType.DOOR_REOPEN_LOOP) == []
    # Two reopenings, then the doors stand open a minute: DOOR_HELD_OPEN's, not a loop.
    two = reopening_loop(5.0, 11.0)
    assert of(run(two, held(OPEN, 11.1, 90.0, 0.5)), EventType.DOOR_REOPEN_LOOP) == []
    # Three reopenings within a minute, then shut and parked; a later call opens again.
    three = reopening_loop(5.0, 16.0)
    later = [*held(IDLE, 16.1, 120.0, 1.0), at(OPEN, 121.0, door=DoorState.OPENING)]
    assert of(run(three, later, held(OPEN, 121.5, 200.0, 0.5)), EventType.DOOR_REOPEN_LOOP) == []


def test_a_passenger_holding_the_doors_after_reopenings_is_not_a_loop() -> None:
    # Three reopenings in 16 s, then a passenger holds the doors open a minute and a half:
    # the doors stopped reversing, so the lift is not at fault (DOOR_HELD_OPEN's, usage).
    three = reopening_loop(5.0, 16.0)
    standing = held(OPEN, 16.1, 110.0, 0.5)
    events = run(three, standing)
    assert of(events, EventType.DOOR_REOPEN_LOOP) == []
    assert [p for p, _, _ in of(events, EventType.DOOR_HELD_OPEN)] == [Phase.RAISED]
    # Then the doors start reversing again: a new loop, counted from its own first
    # re-opening, not from the old one.
    again = reopening_loop(5.0, 200.0, start=110.5)
    loop = of(run(three, standing, again), EventType.DOOR_REOPEN_LOOP)
    assert [(p, onset) for p, onset, _ in loop][:1] == [(Phase.RAISED, loop[0][1])]
    assert loop[0][1] > 110.0
    assert loop[0][2] >= loop[0][1] + 60.0


def test_reopenings_on_separate_stops_do_not_add_up() -> None:
    first = reopening_loop(5.0, 40.0)
    departs = [at(RUNNING, 40.5), at(IDLE, 45.0)]
    second = reopening_loop(5.0, 85.0, start=46.0)
    assert of(run(first, departs, second), EventType.DOOR_REOPEN_LOOP) == []


def test_the_retired_reopen_count_key_is_refused_with_its_replacement() -> None:
    problems = dict(DetectionConfig.problems({"door_reopen_loop_count": 20}))
    assert "door_reopen_loop_s" in problems["door_reopen_loop_count"]
    assert "door_reopen_loop_reopenings" in problems["door_reopen_loop_count"]


def test_nuisance_events_are_deduplicated_and_capped() -> None:
    config = DetectionConfig.from_mapping(
        {"door_held_open_s": 10, "nuisance_dedup_s": 100, "nuisance_daily_cap": 2}
    )
    samples: list[CarState] = []
    for start in (0.0, 20.0, 200.0, 400.0):
        samples += held(OPEN, start, start + 11.0, 1.0)
        samples.append(at(IDLE, start + 12.0))
    events = of(run(samples, config=config), EventType.DOOR_HELD_OPEN)
    # 20 s is inside the window after the clear at 12 s; the 400 s occurrence is over the cap.
    # The first count starts at the first sample (none before it); the one at 200 s one
    # sample interval (1 s) before it: the doors were seen closed long before, but a gap
    # in the samples is never taken for time the doors stood open.
    assert events == [
        (Phase.RAISED, 0.0, 10.0),
        (Phase.CLEARED, 0.0, 12.0),
        (Phase.RAISED, 200.0, 209.0),
        (Phase.CLEARED, 200.0, 212.0),
    ]


def test_a_held_back_occurrence_raises_with_its_onset_once_the_window_passes() -> None:
    config = DetectionConfig.from_mapping({"door_held_open_s": 10, "nuisance_dedup_s": 30})
    samples = [*held(OPEN, 0.0, 10.0, 1.0), at(IDLE, 11.0), *held(OPEN, 12.0, 50.0, 1.0)]
    assert of(run(samples, config=config), EventType.DOOR_HELD_OPEN) == [
        (Phase.RAISED, 0.0, 10.0),
        (Phase.CLEARED, 0.0, 11.0),
        (Phase.RAISED, 12.0, 41.0),
    ]


def door_cycles(
    start: float, opening_s: float, closing_s: float, count: int
) -> tuple[list[CarState], float]:
    samples: list[CarState] = []
    t = start
    for _ in range(count):
        samples.append(at(IDLE, t, door=DoorState.OPENING, door_lock_closed=False))
        t += opening_s
        samples.append(at(OPEN, t))
        t += 3.0
        samples.append(at(IDLE, t, door=DoorState.CLOSING, door_lock_closed=False))
        t += closing_s
        samples.append(at(IDLE, t))
        t += 5.0
    return samples, t


def test_door_slowing_against_its_own_baseline() -> None:
    baseline, t = door_cycles(0.0, 2.0, 3.0, 25)
    within, _ = door_cycles(t, 2.5, 3.0, 5)  # +25 %: under p95 + 30 %
    assert of(run(baseline, within), EventType.DOOR_SLOWING) == []
    slow, t3 = door_cycles(t, 2.7, 3.0, 3)  # +35 %
    recovered, _ = door_cycles(t3, 2.0, 3.0, 3)
    events = run(baseline, slow, recovered)
    raised, cleared = [e for e in events if e.type is EventType.DOOR_SLOWING]
    assert raised.onset == t  # the start of the first slow opening
    assert raised.at == slow[-3].t  # the third slow opening completes
    assert "opening" in raised.reason
    assert cleared.at == recovered[-3].t


def test_door_slowing_needs_a_baseline_first() -> None:
    few, t = door_cycles(0.0, 2.0, 3.0, 5)
    slow, _ = door_cycles(t, 5.0, 6.0, 5)
    assert of(run(few, slow), EventType.DOOR_SLOWING) == []


# --- pure steps keep their state objects while idle ---------------------------------------


def test_every_family_keeps_its_state_object_while_nothing_changes() -> None:
    m0, _ = motion.step(motion.MotionState(), at(IDLE, 0.0), 0.0, motion.MotionConfig())
    m1, _ = motion.step(m0, at(IDLE, 0.1), 0.1, motion.MotionConfig())
    assert m1 is m0
    # The first sample teaches the circuits that the doors are shut; nothing changes after.
    c0, _ = circuits.step(circuits.CircuitsState(), at(IDLE, 0.0), 0.0, circuits.CircuitsConfig())
    c1, _ = circuits.step(c0, at(IDLE, 0.1), 0.1, circuits.CircuitsConfig())
    assert c1 is c0
    kc = controller.ControllerConfig()
    k0, _ = controller.step(controller.ControllerState(), at(IDLE, 0.0), 0.0, kc)
    k1, _ = controller.step(k0, at(IDLE, 0.1), 0.1, kc)
    assert k1 is k0
    w0, _ = doors.watch_step(doors.DoorWatchState(), at(IDLE, 0.0), 0.0, doors.DoorWatchConfig())
    w1, _ = doors.watch_step(w0, at(IDLE, 0.1), 0.1, doors.DoorWatchConfig())
    assert w1 is w0


def test_blind_forgets_pending_onsets_of_every_family() -> None:
    unit = UnitDetectors(CONFIGURED)
    pending = held(BETWEEN, 0.0, 10.0, 1.0, alarm_button=True, occupied=True)
    events: list[Event] = []
    for sample in pending:
        events += unit.feed(sample)
    # The alarm (1 s) and entrapment via alarm raised; stopped-outside (15 s) is pending.
    assert EventType.STOPPED_OUTSIDE_DOOR_ZONE not in {e.type for e in events}
    unit.blind(10.5)
    after = [e for s in held(BETWEEN, 20.0, 34.0, 1.0, occupied=True) for e in unit.feed(s)]
    assert of(after, EventType.STOPPED_OUTSIDE_DOOR_ZONE) == []
    later = unit.feed(at(BETWEEN, 35.0, occupied=True))
    assert of(later, EventType.STOPPED_OUTSIDE_DOOR_ZONE) == [(Phase.RAISED, 20.0, 35.0)]


# --- config of the new keys ---------------------------------------------------------------


def test_counts_and_landings_must_be_integers_and_landings_ordered() -> None:
    problems = dict(
        DetectionConfig.problems(
            {"door_reopen_loop_reopenings": 2.5, "top_landing": 3, "bottom_landing": 3}
        )
    )
    assert problems == {"door_reopen_loop_reopenings": "must be an integer, got 2.5"}
    problems = dict(DetectionConfig.problems({"top_landing": 3, "bottom_landing": 3}))
    assert problems == {"top_landing": "must be above bottom_landing (3)"}
    config = DetectionConfig.from_mapping(
        {"top_landing": 12, "bottom_landing": -2, "door_reopen_loop_reopenings": 5}
    )
    assert (config.top_landing, config.bottom_landing) == (12, -2)
    assert isinstance(config.door_reopen_loop_reopenings, int)
    assert DetectionConfig.problems({"rated_speed_mm_s": 0}) == [
        ("rated_speed_mm_s", "must be > 0, got 0")
    ]
    assert DetectionConfig.problems({"overspeed_factor": 0.9}) == [
        ("overspeed_factor", "must be >= 1, got 0.9")
    ]


def test_thresholds_of_the_new_rules_come_from_config() -> None:
    config = DetectionConfig.from_mapping(
        {"stopped_outside_door_zone_s": 5, "run_time_limit_s": 20, "door_lock_bypass_s": 1}
    )
    events = run(held(BETWEEN, 0.0, 6.0, 1.0), config=config)
    assert of(events, EventType.STOPPED_OUTSIDE_DOOR_ZONE) == [(Phase.RAISED, 0.0, 5.0)]
    events = run(held(RUNNING, 0.0, 20.0, 1.0), config=config)
    assert of(events, EventType.RUN_TIME_EXCEEDED) == [(Phase.RAISED, 0.0, 20.0)]
    events = run(held(OPEN, 0.0, 1.0, 0.5, door_lock_closed=True), config=config)
    assert of(events, EventType.DOOR_LOCK_BYPASS) == [(Phase.RAISED, 0.0, 1.0)]
