"""Each elevator fault on the pure car model: what the registers show, and how it clears."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from hil_tests.emulator.car import Car, CarConfig, CarSnapshot, Phase, ServiceMode
from hil_tests.emulator.faults import FAULTS, Fault, FaultKind, FaultOptions, parse_options
from hil_tests.emulator.link import Link, LinkAction

DT = 0.05
CONFIG = CarConfig()
HEIGHTS = CONFIG.landing_heights_mm
RATED_MM_S = CONFIG.motion.rated_speed * 1000


def run_until(car: Car, condition: Callable[[CarSnapshot], bool], limit_s: float) -> CarSnapshot:
    """Step until `condition` holds; fail after `limit_s` simulated seconds."""
    end = car.time + limit_s
    while car.time < end:
        car.step(DT)
        snap = car.snapshot()
        if condition(snap):
            return snap
    raise AssertionError(f"not reached within {limit_s} s (phase {car.phase})")


def back_in_service(car: Car) -> CarSnapshot:
    """After a clear: the car re-levels and opens its doors at a landing again."""
    return run_until(car, lambda s: s.door_fully_open and s.levelled and s.safety_circuit, 120.0)


def fresh(seed: int = 1) -> Car:
    return Car(CONFIG, random.Random(seed))


def test_door_obstruction_makes_a_reopen_loop() -> None:
    car = fresh()
    car.inject(Fault.DOOR_OBSTRUCTION)
    run_until(car, lambda s: s.reopen_device and s.door_closing, 60.0)
    opens, was_open = 0, False
    for _ in range(int(60 / DT)):
        car.step(DT)
        s = car.snapshot()
        assert not s.moving and not s.door_fully_closed
        opens += s.door_fully_open and not was_open
        was_open = s.door_fully_open
    assert opens >= 10
    car.clear(Fault.DOOR_OBSTRUCTION)
    run_until(car, lambda s: s.moving, 60.0)


def test_door_lock_bypass_reads_made_with_the_door_open() -> None:
    car = fresh()
    car.inject(Fault.DOOR_LOCK_BYPASS)
    s = run_until(car, lambda s: s.door_fully_open, 60.0)
    assert s.door_lock
    car.clear(Fault.DOOR_LOCK_BYPASS)
    assert not car.snapshot().door_lock


def test_levelling_error_stops_outside_the_door_zone() -> None:
    car = fresh(2)
    car.inject(Fault.LEVELLING_ERROR, FaultOptions(offset_mm=300))
    s = run_until(car, lambda _: car.phase is Phase.STOPPED, 120.0)
    assert not s.moving and not s.door_zone and not s.levelled and s.door_fully_closed
    assert min(abs(s.position_mm - h) for h in HEIGHTS) == 300
    car.clear(Fault.LEVELLING_ERROR)
    back_in_service(car)


def test_overspeed_exceeds_115_percent_of_rated() -> None:
    car = fresh(3)
    car.inject(Fault.OVERSPEED)
    run_until(car, lambda s: s.speed_mm_s > 1.15 * RATED_MM_S, 120.0)
    car.clear(Fault.OVERSPEED)


@pytest.mark.parametrize(
    ("fault", "top"), [(Fault.OVERTRAVEL_TOP, True), (Fault.OVERTRAVEL_BOTTOM, False)]
)
def test_overtravel_hits_the_final_limit(fault: Fault, top: bool) -> None:
    car = fresh(4)
    car.inject(fault)
    s = run_until(car, lambda s: s.up_final_limit or s.down_final_limit, 300.0)
    assert s.up_final_limit == top and s.down_final_limit != top
    assert not s.safety_circuit
    for _ in range(40):
        car.step(DT)
    s = car.snapshot()
    assert not s.moving and not s.levelled
    if top:
        assert s.position_mm > HEIGHTS[-1] and s.floor == len(HEIGHTS)
    else:
        assert s.position_mm == 0 and s.floor == 1
    car.clear(fault)
    s = back_in_service(car)
    assert not (s.up_final_limit or s.down_final_limit)


def test_safety_circuit_opens_while_running_and_the_car_stops() -> None:
    car = fresh(5)
    car.inject(Fault.SAFETY_CIRCUIT_OPEN)
    s = run_until(car, lambda s: not s.safety_circuit, 120.0)
    assert s.moving
    s = run_until(car, lambda s: not s.moving, 10.0)
    assert not s.safety_circuit
    car.clear(Fault.SAFETY_CIRCUIT_OPEN)
    back_in_service(car)


def test_unintended_movement_leaves_the_zone_with_doors_open() -> None:
    car = fresh(6)
    car.inject(Fault.UNINTENDED_MOVEMENT)
    s = run_until(car, lambda s: not s.door_zone and not s.door_fully_closed, 120.0)
    assert not s.door_lock
    car.clear(Fault.UNINTENDED_MOVEMENT)
    back_in_service(car)


@pytest.mark.parametrize("occupied", [True, False])
def test_mains_failure(occupied: bool) -> None:
    car = fresh(7)
    car.inject(Fault.MAINS_FAILURE, FaultOptions(occupied=occupied))
    s = run_until(car, lambda s: not s.mains_ok, 120.0)
    s = run_until(car, lambda s: not s.moving, 10.0)
    assert s.occupied == occupied and not s.car_light
    car.clear(Fault.MAINS_FAILURE)
    assert car.snapshot().mains_ok


def test_fault_code_and_position_lost_take_the_car_out_of_service() -> None:
    car = fresh(8)
    car.inject(Fault.FAULT_CODE, FaultOptions(code=25))
    assert car.snapshot().fault_code == 25
    car.inject(Fault.POSITION_LOST)
    s = car.snapshot()
    assert s.floor == 0 and s.fault_code == 30
    run_until(car, lambda _: car.phase is Phase.IDLE, 120.0)
    for _ in range(int(120 / DT)):
        car.step(DT)
        assert not car.snapshot().moving
    car.clear(Fault.POSITION_LOST)
    car.clear(Fault.FAULT_CODE)
    assert car.snapshot().fault_code == 0 and car.snapshot().floor >= 1


def test_run_time_exceeded_never_reaches_the_landing() -> None:
    car = fresh(9)
    car.inject(Fault.RUN_TIME_EXCEEDED)
    run_until(car, lambda s: s.moving, 60.0)
    for _ in range(int(70 / DT)):
        car.step(DT)
        s = car.snapshot()
        assert s.moving and not s.levelled
    car.clear(Fault.RUN_TIME_EXCEEDED)
    run_until(car, lambda s: s.levelled, 60.0)


def test_alarm_button_held_for_a_while() -> None:
    car = fresh()
    car.inject(Fault.ALARM_BUTTON, FaultOptions(held_s=2.0))
    assert car.snapshot().alarm_button
    run_until(car, lambda s: not s.alarm_button, 3.0)


def test_fire_return_parks_at_the_bottom_with_doors_open() -> None:
    car = fresh(10)
    car.inject(Fault.MODE, FaultOptions(mode=ServiceMode.FIRE_RETURN))
    assert car.snapshot().service_mode is ServiceMode.FIRE_RETURN
    run_until(car, lambda s: s.floor == 1 and s.door_fully_open, 300.0)
    for _ in range(int(30 / DT)):
        car.step(DT)
    assert car.snapshot().door_fully_open
    car.clear(Fault.MODE)
    assert car.snapshot().service_mode is ServiceMode.NORMAL


def test_reboot_stops_the_car_keeps_counters_and_clears_controller_faults() -> None:
    car = fresh(11)
    run_until(car, lambda s: s.moving, 120.0)
    car.inject(Fault.FAULT_CODE)
    before = car.snapshot().counters
    car.inject(Fault.REBOOT, FaultOptions(silent_s=2.0))
    s = car.snapshot()
    assert not s.moving and s.fault_code == 0 and s.counters == before
    back_in_service(car)


def test_every_fault_is_documented_and_options_are_checked() -> None:
    for fault, spec in FAULTS.items():
        assert spec.description and spec.fault is fault
    with pytest.raises(ValueError, match="does not take"):
        parse_options(Fault.ENTRAPMENT, {"delay_ms": 5})
    with pytest.raises(ValueError, match="delay_ms"):
        parse_options(Fault.LATE_ANSWER, {"delay_ms": "soon"})
    with pytest.raises(ValueError, match="unknown mode"):
        parse_options(Fault.MODE, {"mode": "party"})
    assert parse_options(Fault.MODE, {"mode": "out_of_service"}).mode is ServiceMode.STOPPED
    with pytest.raises(ValueError, match="link fault"):
        fresh().inject(Fault.NO_ANSWER)


def test_link_decisions() -> None:
    link = Link(3)
    assert link.decide(0.0).action is LinkAction.ANSWER
    link.inject(Fault.LATE_ANSWER, FaultOptions(delay_ms=250))
    link.inject(Fault.WRONG_SLAVE, FaultOptions())
    d = link.decide(0.0)
    assert (d.action, d.delay_s, d.slave) == (LinkAction.WRONG_SLAVE, 0.25, 4)
    link.reboot(10.0, 3.0)
    assert link.decide(12.0).action is LinkAction.SILENT
    assert Fault.REBOOT in link.faults(12.0) and Fault.REBOOT not in link.faults(13.5)
    assert link.decide(13.5).action is LinkAction.WRONG_SLAVE
    assert all(FAULTS[f].kind is not FaultKind.CAR for f in link.faults(12.0))


def test_door_slowing_stretches_every_stroke_and_clears() -> None:
    from hil_tests.emulator.door import DoorOperator, DoorTiming

    door = DoorOperator(DoorTiming(open_s=2.5, close_s=3.0))
    door.slowdown = 2.0
    door.command_open()
    for _ in range(49):  # 4.9 s: a healthy door would be open after 2.5 s
        door.step(0.1)
    assert door.opening < 1.0
    door.step(0.2)
    assert door.opening == 1.0
    door.slowdown = 1.0
    door.command_close()
    for _ in range(31):
        door.step(0.1)
    assert door.fully_closed
