"""Faults aimed at a moment of the car's cycle, and the time the registers first show them."""

from __future__ import annotations

from hil_tests.emulator.car import Phase
from hil_tests.emulator.control import handle_request
from hil_tests.emulator.cycle import CYCLE_PHASES, cycle_phase
from hil_tests.emulator.faults import NO_OPTIONS, Fault, FaultOptions
from hil_tests.emulator.group import CarGroup, GroupConfig

STEP_S = 0.05


def one_car(seed: int = 3) -> CarGroup:
    return CarGroup(GroupConfig(cars=1, seed=seed), now=0.0)


def step_until(g: CarGroup, done: object, limit_s: float = 900.0) -> None:
    """Step until ``done()`` holds; fail after ``limit_s`` simulated seconds."""
    assert callable(done)
    end = g.time + limit_s
    while not done():
        assert g.time < end, "the car never got there"
        g.step(STEP_S)


def visible_at(g: CarGroup, fault: Fault) -> float | None:
    shown = g.visibility(1, fault)
    return shown[1] if shown is not None else None


def test_a_busy_car_passes_through_every_cycle_phase() -> None:
    g = one_car()
    seen: set[str] = set()
    while g.time < 1800 and len(seen) < len(CYCLE_PHASES):
        g.step(STEP_S)
        phase = cycle_phase(g.car(1))
        if phase is not None:
            seen.add(phase)
    assert seen == set(CYCLE_PHASES)


def test_an_armed_fault_lands_in_its_phase() -> None:
    g = one_car()
    car = g.car(1)
    g.inject_at(1, Fault.ALARM_BUTTON, NO_OPTIONS, "open")
    assert g.visibility(1, Fault.ALARM_BUTTON) is None  # armed, not injected
    step_until(g, lambda: Fault.ALARM_BUTTON in car.faults)
    assert cycle_phase(car) == "open"
    shown = g.visibility(1, Fault.ALARM_BUTTON)
    assert shown is not None
    injected, visible = shown
    # The alarm bit is in the register image the moment it is pressed.
    assert visible == injected
    assert car.snapshot().alarm_button


def test_a_latent_fault_shows_when_the_doors_next_move() -> None:
    g = one_car()
    car = g.car(1)
    g.inject_at(1, Fault.DOOR_LOCK_BYPASS, NO_OPTIONS, "cruising")
    step_until(g, lambda: Fault.DOOR_LOCK_BYPASS in car.faults)
    shown = g.visibility(1, Fault.DOOR_LOCK_BYPASS)
    assert shown is not None and shown[1] is None  # running, doors shut: nothing to see
    step_until(g, lambda: visible_at(g, Fault.DOOR_LOCK_BYPASS) is not None)
    snap = car.snapshot()
    assert snap.door_lock and not snap.door_fully_closed
    assert cycle_phase(car) == "opening"


def test_at_once_opens_the_safety_circuit_mid_run_and_stops_the_car() -> None:
    g = one_car()
    car = g.car(1)
    step_until(g, lambda: cycle_phase(car) == "cruising")
    g.inject(1, Fault.SAFETY_CIRCUIT_OPEN, FaultOptions(at_once=True))
    assert not car.snapshot().safety_circuit
    shown = g.visibility(1, Fault.SAFETY_CIRCUIT_OPEN)
    assert shown is not None and shown[0] == shown[1]
    step_until(g, lambda: car.phase is Phase.STOPPED, limit_s=5.0)
    assert not car.snapshot().safety_circuit  # held where it stopped while the circuit is open


def test_without_at_once_the_safety_circuit_waits_for_a_run() -> None:
    g = one_car()
    car = g.car(1)
    step_until(g, lambda: cycle_phase(car) == "open")
    g.inject(1, Fault.SAFETY_CIRCUIT_OPEN)
    assert car.snapshot().safety_circuit
    step_until(g, lambda: not car.snapshot().safety_circuit)
    assert car.snapshot().moving


def test_a_short_slip_stops_inside_the_door_zone() -> None:
    g = one_car()
    car = g.car(1)
    step_until(g, lambda: cycle_phase(car) == "open")
    g.inject(
        1, Fault.UNINTENDED_MOVEMENT, FaultOptions(at_once=True, drift_mm_s=40, distance_mm=100)
    )
    assert car.snapshot().moving  # the brake slipped at once, doors open
    step_until(g, lambda: car.phase is Phase.STOPPED, limit_s=10.0)
    snap = car.snapshot()
    assert snap.door_zone and not snap.levelled
    assert visible_at(g, Fault.UNINTENDED_MOVEMENT) is None  # never out of the zone


def test_park_at_a_chosen_landing() -> None:
    g = one_car()
    car = g.car(1)
    g.inject(1, Fault.PARK, FaultOptions(landing=7))
    step_until(g, lambda: cycle_phase(car) == "parked" and car.snapshot().floor == 7)


def test_control_protocol_arms_and_reports_visibility() -> None:
    g = one_car()
    assert handle_request(g, {"op": "visible", "car": 1, "fault": "alarm_button"}) == {
        "ok": True,
        "injected": None,
        "visible": None,
    }
    reply = handle_request(
        g, {"op": "inject", "car": 1, "fault": "alarm_button", "at_phase": "flying"}
    )
    assert reply["ok"] is False and "at_phase" in str(reply["error"])
    reply = handle_request(
        g, {"op": "clear", "car": 1, "fault": "alarm_button", "at_phase": "open"}
    )
    assert reply["ok"] is False and "at_phase" in str(reply["error"])
    assert handle_request(
        g, {"op": "inject", "car": 1, "fault": "alarm_button", "at_phase": "closing"}
    ) == {"ok": True}
    step_until(g, lambda: Fault.ALARM_BUTTON in g.car(1).faults)
    reply = handle_request(g, {"op": "visible", "car": 1, "fault": "alarm_button"})
    assert reply["ok"] is True and reply["visible"] == reply["injected"] == g.clock_of(g.time)
    state = handle_request(g, {"op": "state"})
    cars = state["cars"]
    assert isinstance(cars, list) and cars[0]["cycle_phase"] == "closing"
