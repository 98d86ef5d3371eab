"""The pure car model: invariants over long seeded runs, and the injectable faults."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from hil_tests.emulator.car import Car, CarConfig, CarSnapshot, DoorState, Phase, uniform_landings
from hil_tests.emulator.faults import Fault

DT = 0.05
CONFIG = CarConfig()
HEIGHTS = CONFIG.landing_heights_mm


def run_until(
    car: Car, condition: Callable[[CarSnapshot], bool], limit_s: float, dt: float = DT
) -> CarSnapshot:
    """Step `car` until `condition` holds on its snapshot; fail after `limit_s` simulated s."""
    end = car.time + limit_s
    while car.time < end:
        car.step(dt)
        snap = car.snapshot()
        if condition(snap):
            return snap
    raise AssertionError(f"condition not reached within {limit_s} s (phase {car.phase})")


def hold(car: Car, seconds: float, dt: float = DT) -> list[CarSnapshot]:
    """Step `car` for `seconds` and return every snapshot on the way."""
    snaps = []
    end = car.time + seconds
    while car.time < end:
        car.step(dt)
        snaps.append(car.snapshot())
    return snaps


def nearest_landing(position_mm: int) -> int:
    return min(range(len(HEIGHTS)), key=lambda i: abs(HEIGHTS[i] - position_mm)) + 1


def check_invariants(s: CarSnapshot) -> None:
    if s.moving:
        assert not s.door_fully_open
        assert s.door_fully_closed and s.door_lock
        assert not (s.door_opening or s.door_closing)
        assert s.up != s.down
    else:
        assert s.speed_mm_s == 0
    assert s.door_lock == s.door_fully_closed
    assert not (s.door_fully_open and s.door_fully_closed)
    assert s.floor == nearest_landing(s.position_mm)
    offset = s.position_mm - HEIGHTS[s.floor - 1]
    assert s.door_zone == (abs(offset) <= CONFIG.door_zone_mm)
    assert 0 <= s.position_mm <= HEIGHTS[-1]
    assert s.speed_mm_s <= CONFIG.motion.rated_speed * 1000 + 1
    assert s.occupied == (s.load_pct > 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_long_run_keeps_invariants_and_serves_many_floors(seed: int) -> None:
    car = Car(CONFIG, random.Random(seed))
    first = car.snapshot()
    previous = first
    floors_stopped_at: set[int] = set()
    door_opens = 0
    for s in hold(car, 3600.0):
        check_invariants(s)
        for before, after in zip(
            (previous.counters.trips, previous.counters.door_cycles, previous.counters.run_hours),
            (s.counters.trips, s.counters.door_cycles, s.counters.run_hours),
            strict=True,
        ):
            assert after >= before
        if s.door_fully_open:
            assert s.levelled and s.door_zone
            floors_stopped_at.add(s.floor)
        if s.door_fully_open and not previous.door_fully_open:
            door_opens += 1
        previous = s
    assert len(floors_stopped_at) >= 5
    assert previous.counters.trips - first.counters.trips >= 20
    assert previous.counters.door_cycles - first.counters.door_cycles == door_opens


def test_same_seed_same_story() -> None:
    a, b = Car(CONFIG, random.Random(7)), Car(CONFIG, random.Random(7))
    assert hold(a, 300.0) == hold(b, 300.0)


def test_a_run_reaches_rated_speed_and_lands_exactly() -> None:
    car = Car(CONFIG, random.Random(3), start_landing=1)
    speeds = [s.speed_mm_s for s in hold(car, 1200.0)]
    assert max(speeds) == 1600
    s = run_until(car, lambda s: s.door_fully_open, 120.0)
    assert s.position_mm == HEIGHTS[s.floor - 1]


def test_entrapment_stops_between_floors_and_clearing_rescues() -> None:
    car = Car(CONFIG, random.Random(11))
    hold(car, 30.0)
    car.inject(Fault.ENTRAPMENT)
    run_until(car, lambda _: car.phase is Phase.TRAPPED, 120.0)
    for s in hold(car, 120.0):
        check_invariants(s)
        assert not s.moving and s.speed_mm_s == 0
        assert not s.door_zone and not s.levelled
        assert s.door_fully_closed and s.door_lock
        assert not s.door_open_command and not s.door_opening
        assert s.occupied and s.load_pct > 0
        assert s.safety_circuit
        # Between two landings, not at one.
        assert HEIGHTS[0] < s.position_mm < HEIGHTS[-1]
        assert s.position_mm not in HEIGHTS
    assert car.faults == {Fault.ENTRAPMENT}

    car.clear(Fault.ENTRAPMENT)
    crawl = []

    def opened(s: CarSnapshot) -> bool:
        crawl.append(s)
        check_invariants(s)
        return s.door_fully_open

    s = run_until(car, opened, 60.0)
    assert any(c.moving for c in crawl)
    assert max(c.speed_mm_s for c in crawl) <= CONFIG.rescue_speed * 1000 + 1
    assert s.position_mm == HEIGHTS[s.floor - 1]
    assert s.levelled and s.door_zone
    assert not s.occupied and s.load_pct == 0
    assert car.faults == frozenset()


def test_entrapment_cleared_before_it_shows_leaves_the_car_in_service() -> None:
    car = Car(CONFIG, random.Random(5))
    car.inject(Fault.ENTRAPMENT)
    car.clear(Fault.ENTRAPMENT)
    assert all(car.phase is not Phase.TRAPPED for _ in hold(car, 600.0))


def test_door_close_failure_holds_the_door_partly_open() -> None:
    car = Car(CONFIG, random.Random(21))
    car.inject(Fault.DOOR_CLOSE_FAILURE)
    run_until(car, lambda s: s.door_close_command and s.door == DoorState.CLOSING, 120.0)
    for s in hold(car, 60.0):
        check_invariants(s)
        assert s.door_close_command and s.door_closing
        assert not s.door_fully_closed and not s.door_lock
        assert not s.moving
    car.clear(Fault.DOOR_CLOSE_FAILURE)
    s = run_until(car, lambda s: s.door_fully_closed, 10.0)
    assert s.door_lock and not s.door_close_command


def test_door_open_failure_keeps_the_door_shut_at_a_level_landing() -> None:
    car = Car(CONFIG, random.Random(31))
    hold(car, 20.0)
    car.inject(Fault.DOOR_OPEN_FAILURE)
    run_until(car, lambda s: s.door_open_command and s.levelled and s.door_fully_closed, 120.0)
    for s in hold(car, 30.0):
        check_invariants(s)
        assert s.door_open_command and s.levelled and s.door_zone
        assert s.door_fully_closed and not s.door_opening
        assert not s.moving
    car.clear(Fault.DOOR_OPEN_FAILURE)
    s = run_until(car, lambda s: s.door_fully_open, 5.0)
    assert not s.door_open_command


def test_bad_input_is_refused_clearly() -> None:
    car = Car(CONFIG, random.Random(0))
    with pytest.raises(ValueError, match="backwards"):
        car.step(-0.1)
    with pytest.raises(ValueError, match="start_landing"):
        Car(CONFIG, random.Random(0), start_landing=13)
    with pytest.raises(ValueError, match="door zones"):
        CarConfig(landing_heights_mm=(0, 250))
    with pytest.raises(ValueError, match="at least 2"):
        uniform_landings(1)
