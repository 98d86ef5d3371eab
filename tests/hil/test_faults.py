"""Each elevator fault on the pure car model: what the registers show, how it clears, and
what the agent's real rules make of the door faults and near misses."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from agent.bus.plan import Table
from agent.decode.decoder import car_state, decode
from agent.decode.parser import load_profile
from agent.detect.engine import DetectionConfig, UnitDetectors
from agent.detect.events import Event, EventType
from agent.detect.events import Phase as EventPhase
from hil_tests.emulator.car import (
    EMERGENCY_DECEL,
    Car,
    CarConfig,
    CarSnapshot,
    Phase,
    ServiceMode,
)
from hil_tests.emulator.dispatch import GroupController
from hil_tests.emulator.faults import FAULTS, Fault, FaultKind, FaultOptions, parse_options
from hil_tests.emulator.link import Link, LinkAction
from hil_tests.emulator.registers import Identity, encode_car
from hil_tests.emulator.traffic import Traffic

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


def test_door_open_while_moving_breaks_the_lock_circuit_mid_run_and_stops_the_car() -> None:
    car = fresh(12)
    car.inject(Fault.DOOR_OPEN_WHILE_MOVING)
    # The first running snapshot with the lock circuit open: what the agent's rule needs.
    s = run_until(car, lambda s: s.moving and not s.door_lock, 120.0)
    # Triggered at half rated speed; the snapshot already shows one substep of braking.
    assert not s.door_zone and s.speed_mm_s >= 0.5 * RATED_MM_S - EMERGENCY_DECEL * DT * 1000
    assert not s.door_fully_closed and not s.door_fully_open
    assert not (s.door_opening or s.door_closing)  # ajar, the operator idle: partly open
    assert s.safety_circuit  # only the door-lock circuit opened
    stop_started = car.time
    s = run_until(car, lambda s: not s.moving, 2.0)
    assert car.time - stop_started > 0.5  # a 0.5 s poll still sees the car running
    for _ in range(int(30 / DT)):
        car.step(DT)
        s = car.snapshot()
        assert not s.moving and not s.door_zone and not s.door_lock and not s.door_fully_closed
    car.clear(Fault.DOOR_OPEN_WHILE_MOVING)
    s = run_until(car, lambda s: s.door_fully_closed and s.door_lock, 5.0)
    assert not s.door_zone  # the door closes before the car crawls
    back_in_service(car)


def test_door_held_keeps_the_doors_open_until_let_go() -> None:
    car = fresh()
    car.inject(Fault.DOOR_HELD, FaultOptions(held_s=90.0))
    run_until(car, lambda s: s.door_fully_open, 60.0)
    let_go = car.time + 90.0  # held_s counts from the doors being fully open
    while car.time < let_go - DT:
        car.step(DT)
        s = car.snapshot()
        assert s.door_fully_open and not s.moving and s.door_zone and s.levelled
    run_until(car, lambda s: s.door_fully_closed, 10.0)
    assert Fault.DOOR_HELD not in car.faults


def test_door_held_reopens_closing_doors_and_holds_them_until_cleared() -> None:
    car = fresh(2)
    run_until(car, lambda s: s.door_closing, 300.0)
    car.inject(Fault.DOOR_HELD)
    s = run_until(car, lambda s: s.door_opening, 0.5)
    assert not s.door_fully_closed
    run_until(car, lambda s: s.door_fully_open, 5.0)
    for _ in range(int(300 / DT)):  # no held_s: as long as it takes
        car.step(DT)
        assert car.snapshot().door_fully_open
    car.clear(Fault.DOOR_HELD)
    run_until(car, lambda s: s.door_fully_closed, 10.0)


def park(car: Car) -> CarSnapshot:
    """Park `car` at the main landing and wait until it stands there idle, doors closed."""
    car.inject(Fault.PARK)
    return run_until(
        car,
        lambda s: s.floor == 1 and s.door_fully_closed and s.phase is Phase.IDLE,
        300.0,
    )


def test_parked_car_waits_at_the_main_landing_and_takes_no_calls() -> None:
    car = fresh(13)
    run_until(car, lambda s: s.moving and s.floor > 2, 600.0)  # busy, away from the lobby
    s = park(car)
    assert s.levelled and s.door_zone and s.service_mode is ServiceMode.NORMAL
    # Passengers keep arriving in this car's group of one; nobody is served.
    for _ in range(int(600 / DT)):
        car.step(DT)
        s = car.snapshot()
        assert s.floor == 1 and s.door_fully_closed and not s.moving and not s.occupied
    assert not car.hall_calls and car.group.calls
    # Held open at the lobby, and still nobody walks in: the car shows no direction.
    car.inject(Fault.DOOR_HELD, FaultOptions(held_s=45.0))
    run_until(car, lambda s: s.door_fully_open, 5.0)
    run_until(car, lambda s: s.door_fully_closed, 60.0)
    assert not car.snapshot().occupied and car.snapshot().floor == 1
    car.clear(Fault.PARK)
    run_until(car, lambda s: s.moving, 60.0)  # back in service, the waiting calls first


def test_waiting_passenger_stands_inside_with_the_doors_closed_then_steps_out() -> None:
    car = fresh(14)
    park(car)
    car.inject(Fault.WAITING_PASSENGER, FaultOptions(wait_s=40.0))
    run_until(car, lambda s: s.occupied, 10.0)
    steps_out = car.time + 40.0  # wait_s counts from stepping in
    s = run_until(car, lambda s: s.door_fully_closed, 15.0)
    while car.time < steps_out - DT:
        assert s.occupied and s.door_fully_closed and not s.moving and s.levelled
        car.step(DT)
        s = car.snapshot()
    s = run_until(car, lambda s: s.door_fully_open, 5.0)
    run_until(car, lambda s: not s.occupied, 5.0)
    run_until(car, lambda s: s.door_fully_closed, 15.0)
    for _ in range(int(60 / DT)):
        car.step(DT)
        assert not car.snapshot().occupied and not car.snapshot().moving


def test_waiting_passenger_without_wait_s_stays_until_cleared() -> None:
    car = fresh(15)
    park(car)
    car.inject(Fault.WAITING_PASSENGER)
    run_until(car, lambda s: s.occupied and s.door_fully_closed, 20.0)
    for _ in range(int(300 / DT)):
        car.step(DT)
        assert car.snapshot().occupied and car.snapshot().door_fully_closed
    car.clear(Fault.WAITING_PASSENGER)
    run_until(car, lambda s: not s.occupied, 10.0)


def test_new_fault_options_are_checked() -> None:
    assert parse_options(Fault.DOOR_HELD, {"held_s": 30}).held_s == 30.0
    assert parse_options(Fault.WAITING_PASSENGER, {"wait_s": 40}).wait_s == 40.0
    with pytest.raises(ValueError, match="wait_s"):
        parse_options(Fault.WAITING_PASSENGER, {"wait_s": -1})
    with pytest.raises(ValueError, match="does not take"):
        parse_options(Fault.PARK, {"held_s": 5})
    with pytest.raises(ValueError, match="does not take"):
        parse_options(Fault.DOOR_OPEN_WHILE_MOVING, {"held_s": 5})


class AgentView:
    """The agent's real decoder and detectors (reference profile, default thresholds)
    watching one car at the soak's slow 0.5 s poll: no processes, no sockets."""

    IDENTITY = Identity(firmware="1.0", model="RIG", serial="T1")

    def __init__(self, car: Car) -> None:
        self.car = car
        self.detectors = UnitDetectors(DetectionConfig())
        self.profile = load_profile("reference")
        self.events: list[Event] = []

    def watch(self, seconds: float, sample_s: float = 0.5) -> None:
        """Step the car for `seconds`, feeding every sample to the detectors."""
        for _ in range(round(seconds / sample_s)):
            self.car.step(sample_s)
            registers = encode_car(self.car.snapshot(), self.IDENTITY)
            values = {(Table.HOLDING, address): v for address, v in enumerate(registers)}
            sample = car_state(self.car.time, [decode(self.profile, values).fields])
            self.events.extend(self.detectors.feed(sample))

    def raised(self) -> set[EventType]:
        """Types of the events RAISED so far."""
        return {e.type for e in self.events if e.phase is EventPhase.RAISED}

    def cleared(self) -> set[EventType]:
        """Types of the events CLEARED so far."""
        return {e.type for e in self.events if e.phase is EventPhase.CLEARED}


def test_the_agent_sees_a_door_open_while_moving_and_nothing_else() -> None:
    agent = AgentView(fresh(12))
    agent.car.inject(Fault.DOOR_OPEN_WHILE_MOVING)
    agent.watch(60.0)
    assert agent.raised() == {EventType.DOOR_OPEN_WHILE_MOVING}
    agent.car.clear(Fault.DOOR_OPEN_WHILE_MOVING)
    agent.watch(60.0)
    assert agent.raised() == agent.cleared() == {EventType.DOOR_OPEN_WHILE_MOVING}


def test_the_agent_sees_doors_held_past_its_threshold_only() -> None:
    agent = AgentView(fresh())
    agent.car.inject(Fault.DOOR_HELD, FaultOptions(held_s=30.0))  # a passenger: a near miss
    agent.watch(120.0)
    assert agent.events == []
    agent.car.inject(Fault.DOOR_HELD, FaultOptions(held_s=75.0))
    agent.watch(150.0)
    assert agent.raised() == agent.cleared() == {EventType.DOOR_HELD_OPEN}


def test_a_lobby_dwell_and_a_waiting_passenger_raise_nothing() -> None:
    agent = AgentView(fresh(14))
    park(agent.car)
    agent.car.inject(Fault.DOOR_HELD, FaultOptions(held_s=40.0))
    agent.watch(60.0)
    agent.car.inject(Fault.WAITING_PASSENGER, FaultOptions(wait_s=45.0))
    agent.watch(60.0)
    assert not agent.car.snapshot().occupied  # they have stepped out again
    agent.watch(300.0)  # parked, closed and empty
    assert agent.events == []


def test_overtravel_shows_on_a_busy_car_that_stood_at_its_terminal() -> None:
    # At the bottom landing when the fault comes, the car sends its first rider up, away
    # from the terminal; then a new hall call at every stop keeps it from ever idling.
    # Nobody else travels, so no passenger happens to take it down.
    rng = random.Random(4)
    quiet = GroupController(Traffic.MIXED, random.Random(5), len(HEIGHTS), passengers=False)
    car = Car(CONFIG, rng, group=quiet)
    car.inject(Fault.OVERTRAVEL_BOTTOM)
    top = len(HEIGHTS) - 1
    call: tuple[int, int] | None = None
    end = car.time + 300.0
    while not car.snapshot().down_final_limit:
        assert car.time < end, "the car never went back to the bottom landing"
        car.step(DT)
        if car.phase is not Phase.DWELL:
            continue
        here = car.snapshot().floor - 1
        if call is not None and call[0] == here:
            car.unassign(*call)  # answered: what the group does when a car opens there
            call = None
        if call is None and here > 0:
            landing = here + 2 if here + 2 <= top else here - 1
            call = (landing, 1 if landing > here else -1)
            car.assign(*call)


def test_a_maintenance_visit_runs_at_inspection_speed_and_cycles_the_doors() -> None:
    """The mode fault with visit (issue 17, item 8): inspection mode, runs landing to
    landing no faster than the inspection speed, the doors opening at each landing; a
    plain inspection mode keeps the car standing."""
    car = fresh(12)
    car.inject(Fault.MODE, parse_options(Fault.MODE, {"mode": "inspection", "visit": True}))
    floors: set[int] = set()
    top_speed = 0
    cycles = runs = 0
    moving = door_open = False
    for _ in range(int(600 / DT)):
        car.step(DT)
        s = car.snapshot()
        assert s.service_mode is ServiceMode.INSPECTION
        top_speed = max(top_speed, s.speed_mm_s)
        runs += s.moving and not moving
        cycles += s.door_fully_open and not door_open
        moving, door_open = s.moving, s.door_fully_open
        floors.add(s.floor)
    assert runs >= 10 and cycles >= 10
    assert len(floors) >= 5
    assert top_speed <= 300
    car.clear(Fault.MODE)
    assert car.snapshot().service_mode is ServiceMode.NORMAL
    standing = fresh(12)
    run_until(standing, lambda s: not s.moving and s.door_fully_closed, 120.0)
    standing.inject(Fault.MODE, FaultOptions(mode=ServiceMode.INSPECTION))
    for _ in range(int(120 / DT)):
        standing.step(DT)
        assert not standing.snapshot().moving or standing.time < 60
    with pytest.raises(ValueError, match="visit must be true or false"):
        parse_options(Fault.MODE, {"visit": "yes"})
