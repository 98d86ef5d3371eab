"""Health counters: trips, door cycles, run hours, door times, re-openings per landing."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

import pytest

from agent.detect.engine import UnitDetectors
from agent.detect.health import HealthCounters, HealthSnapshot
from agent.state import CarState, Direction, DoorState, ServiceMode
from tests.agent.detect_traffic import normal_operation

IDLE = CarState(
    t=0.0,
    floor=1,
    moving=False,
    speed_mm_s=0,
    door_zone=True,
    levelled=True,
    door=DoorState.CLOSED,
    door_lock_closed=True,
    mode=ServiceMode.NORMAL,
)


def feed(counters: HealthCounters, samples: list[CarState]) -> HealthSnapshot:
    for sample in samples:
        counters.feed(sample)
    return counters.snapshot()


def cycle(t: float, opening_s: float, closing_s: float, floor: int = 1) -> list[CarState]:
    return [
        replace(IDLE, t=t, floor=floor, door=DoorState.OPENING),
        replace(IDLE, t=t + opening_s, floor=floor, door=DoorState.OPEN),
        replace(IDLE, t=t + opening_s + 2, floor=floor, door=DoorState.CLOSING),
        replace(IDLE, t=t + opening_s + 2 + closing_s, floor=floor),
    ]


def test_counts_from_transitions_without_controller_counters() -> None:
    samples = [replace(IDLE, t=0.0)]
    samples += cycle(1.0, 2.0, 3.0)
    samples += [
        replace(IDLE, t=10.0 + i * 0.5, moving=True, direction=Direction.UP) for i in range(21)
    ]
    samples += [replace(IDLE, t=21.0, floor=4)]
    snap = feed(HealthCounters(), samples)
    assert snap.trips == 1
    assert snap.door_cycles == 1
    # From the first running sample (10.0) to the first stopped one (21.0).
    assert snap.run_hours == pytest.approx(11.0 / 3600)
    assert snap.door_open_median_ms == 2000
    assert snap.door_close_median_ms == 3000


def test_controller_counters_win_field_by_field() -> None:
    samples = [replace(IDLE, t=0.0, trips=12345, run_hours=678), *cycle(1.0, 2.0, 3.0)]
    samples = [replace(s, trips=12345, run_hours=678) for s in samples]
    snap = feed(HealthCounters(), samples)
    assert (snap.trips, snap.run_hours) == (12345, 678.0)
    assert snap.door_cycles == 1  # the profile has no door-cycle counter: counted here


def test_a_link_outage_adds_no_run_time_and_no_door_time() -> None:
    counters = HealthCounters()
    feed(counters, [replace(IDLE, t=0.0, moving=True), replace(IDLE, t=1.0, moving=True)])
    counters.blind(1.5)
    snap = feed(counters, [replace(IDLE, t=600.0, moving=True), replace(IDLE, t=601.0)])
    assert snap.run_hours == pytest.approx(2.0 / 3600)
    counters = HealthCounters()
    feed(counters, [replace(IDLE, t=0.0, door=DoorState.OPENING)])
    counters.blind(0.5)
    snap = feed(counters, [replace(IDLE, t=100.0, door=DoorState.OPEN)])
    assert snap.door_open_median_ms is None


def test_running_median_is_bounded_and_the_trend_shows_a_slowing_door() -> None:
    counters = HealthCounters(window=101, recent=11)
    samples: list[CarState] = []
    t = 0.0
    for i in range(150):
        opening = 2.0 if i < 139 else 3.0  # the last 11 cycles are 50 % slower
        samples += cycle(t, opening, 3.0)
        t += 20.0
    snap = feed(counters, samples)
    assert snap.door_open_cycles_timed == 101
    assert snap.door_open_median_ms == 2000
    assert snap.door_open_trend == pytest.approx(1.5)
    assert snap.door_close_trend == pytest.approx(1.0)


def test_door_times_in_inspection_are_not_taken() -> None:
    samples = [replace(s, mode=ServiceMode.INSPECTION) for s in cycle(0.0, 9.0, 9.0)]
    snap = feed(HealthCounters(), samples)
    assert snap.door_open_median_ms is None
    assert snap.door_cycles == 1


def test_reopenings_are_counted_per_landing_and_per_stop() -> None:
    samples = [replace(IDLE, t=0.0, floor=3)]
    t = 1.0
    for door in (
        DoorState.OPENING,
        DoorState.OPEN,
        DoorState.CLOSING,
        DoorState.OPENING,
        DoorState.OPEN,
        DoorState.CLOSING,
        DoorState.OPENING,
        DoorState.OPEN,
        DoorState.CLOSING,
        DoorState.CLOSED,
    ):
        samples.append(replace(IDLE, t=t, floor=3, door=door))
        t += 1.0
    samples.append(replace(IDLE, t=t, floor=3, moving=True))
    samples += cycle(t + 10, 2.0, 3.0, floor=5)  # one opening at floor 5: no reopening
    snap = feed(HealthCounters(), samples)
    assert snap.reopenings_by_landing == ((3, 2),)
    assert snap.door_cycles == 4


def test_unit_detectors_expose_health_from_normal_traffic() -> None:
    unit = UnitDetectors()
    samples = normal_operation(random.Random(7), 4000)
    for sample in samples:
        unit.feed(sample)
    snap = unit.health
    departures = sum(1 for a, b in itertools.pairwise(samples) if b.moving and not a.moving)
    assert snap.trips == departures > 0
    assert snap.door_open_median_ms is not None and 1800 <= snap.door_open_median_ms <= 2700
    assert snap.door_close_median_ms is not None and 2200 <= snap.door_close_median_ms <= 3300


def test_window_must_hold_the_recent_cycles_twice() -> None:
    with pytest.raises(ValueError):
        HealthCounters(window=10, recent=6)
