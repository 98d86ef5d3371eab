"""The faults an emulated car can be made to suffer, their options, and their wire names.

Two kinds. Elevator faults (`FaultKind.CAR`) change what the car does and so what the
reference registers say; link faults (`FaultKind.LINK`) change how the controller answers
on Modbus and leave the car alone. `reboot` is both: the link goes silent and the car's
controller restarts.

Every fault is injected with `{"op": "inject", "car": N, "fault": NAME, ...options}` or
`--inject CAR:FAULT:AFTER_S[:KEY=VALUE,...]`, and removed with `{"op": "clear", ...}`.
Faults that need a moving car make an idle car start a trip, so they show within seconds.
Each `FaultSpec.description` says which registers change and how the fault clears; the
table is also printed by `docs/emulator.md`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from hil_tests.emulator.modes import ServiceMode, parse_mode


class Fault(enum.Enum):
    """A fault injectable into one car; the value is its name in the control protocol."""

    # Elevator faults, one per event of the DESIGN.md taxonomy.
    ENTRAPMENT = "entrapment"
    DOOR_CLOSE_FAILURE = "door_close_failure"
    DOOR_OPEN_FAILURE = "door_open_failure"
    DOOR_OBSTRUCTION = "door_obstruction"
    DOOR_SLOWING = "door_slowing"
    DOOR_LOCK_BYPASS = "door_lock_bypass"
    DOOR_OPEN_WHILE_MOVING = "door_open_while_moving"
    DOOR_HELD = "door_held"
    LEVELLING_ERROR = "levelling_error"
    OVERSPEED = "overspeed"
    OVERTRAVEL_TOP = "overtravel_top"
    OVERTRAVEL_BOTTOM = "overtravel_bottom"
    SAFETY_CIRCUIT_OPEN = "safety_circuit_open"
    UNINTENDED_MOVEMENT = "unintended_movement"
    MAINS_FAILURE = "mains_failure"
    FAULT_CODE = "fault_code"
    POSITION_LOST = "position_lost"
    RUN_TIME_EXCEEDED = "run_time_exceeded"
    ALARM_BUTTON = "alarm_button"
    MODE = "mode"
    # Not faults: ordinary use the rules must tell from faults (the near-miss scenarios).
    PARK = "park"
    WAITING_PASSENGER = "waiting_passenger"
    # Link faults.
    NO_ANSWER = "no_answer"
    LATE_ANSWER = "late_answer"
    CRC_ERROR = "crc_error"
    EXCEPTION_RESPONSE = "exception_response"
    GARBAGE = "garbage"
    WRONG_SLAVE = "wrong_slave"
    # Both: the controller restarts and is silent meanwhile.
    REBOOT = "reboot"


class FaultKind(enum.Enum):
    """Whether a fault acts on the car, on its Modbus link, or on both."""

    CAR = "car"
    LINK = "link"
    BOTH = "both"


@dataclass(frozen=True)
class FaultOptions:
    """Options a control request may carry; each fault reads only those it lists.

    Defaults: `delay_ms` 800 (late_answer), `silent_s` 3 (reboot), `firmware` unchanged
    (reboot), `slave` the car's id + 1 (wrong_slave), `length` 12 (garbage), `code` 25 for
    fault_code and 30 for position_lost, `occupied` true (mains_failure), `held_s` until
    cleared (alarm_button, door_held), `wait_s` until cleared (waiting_passenger), `mode`
    inspection, `factor` 1.25 (overspeed), `offset_mm` 250 (levelling_error,
    overtravel_*; 1..1000: a levelling error under the 150 mm door zone stops the car in
    the zone but off level), `speed_mm_s` 20 (run_time_exceeded drive speed, up to the
    rated 1600), `drift_mm_s` 80 and `distance_mm` 400 (unintended_movement: the drift
    speed and how far from the landing the unintended-movement device stops it),
    `landing` 1 (park), `at_once` false (safety_circuit_open, mains_failure,
    door_open_while_moving, unintended_movement: true makes the fault show at once,
    whatever the car is doing, instead of waiting for its moment; see `Car.inject`),
    `visit` false (mode inspection: true plays a maintenance visit, see the mode fault).
    """

    delay_ms: float = 800.0
    silent_s: float = 3.0
    firmware: str | None = None
    slave: int | None = None
    length: int = 12
    code: int | None = None
    occupied: bool = True
    held_s: float | None = None
    wait_s: float | None = None
    mode: ServiceMode = ServiceMode.INSPECTION
    factor: float = 1.25
    offset_mm: int = 250
    speed_mm_s: int = 20
    drift_mm_s: int = 80
    distance_mm: int = 400
    landing: int = 1
    at_once: bool = False
    visit: bool = False


NO_OPTIONS = FaultOptions()


@dataclass(frozen=True)
class FaultSpec:
    """What a fault means to the emulator.

    `controller_code` is what the controller itself reports in register 9 while the fault
    is manifest (0: a real controller often says nothing, e.g. when it stalls a door or
    stops between floors, and the agent must detect the fault from the signals alone).
    `options` names the keys of `FaultOptions` a request may set for this fault.
    """

    fault: Fault
    description: str
    controller_code: int = 0
    kind: FaultKind = FaultKind.CAR
    options: frozenset[str] = field(default_factory=frozenset)
    needs_motion: bool = False


def _spec(
    fault: Fault,
    description: str,
    *,
    code: int = 0,
    kind: FaultKind = FaultKind.CAR,
    options: tuple[str, ...] = (),
    needs_motion: bool = False,
) -> FaultSpec:
    return FaultSpec(fault, description, code, kind, frozenset(options), needs_motion)


FAULTS: dict[Fault, FaultSpec] = {
    s.fault: s
    for s in (
        _spec(
            Fault.ENTRAPMENT,
            "on its next loaded run the car stops between two floors, doors closed and "
            "locked, occupied (reg 2: moving 0, door zone 0, fully closed 1, occupied 1). "
            "Clear: the car crawls at rescue speed to the nearest landing and lets the "
            "passengers out.",
            needs_motion=True,
        ),
        _spec(
            Fault.DOOR_CLOSE_FAILURE,
            "the door operator stalls part-way while closing, close command held on (reg 2 "
            "door closing 1, fully closed 0, lock 0; reg 3 door close command 1). Clear: the "
            "door finishes closing.",
        ),
        _spec(
            Fault.DOOR_OPEN_FAILURE,
            "the door stays closed at a level landing while the open command is on (reg 3 "
            "door open command 1, reg 2 fully closed 1). Clear: the door opens.",
        ),
        _spec(
            Fault.DOOR_OBSTRUCTION,
            "something blocks the doorway: every close stroke reopens half-way (reg 2 reopen "
            "device 1, opening/closing alternate, fully closed never), so the car never "
            "leaves: a reopen loop. Clear: the door closes and the car carries on.",
        ),
        _spec(
            Fault.DOOR_SLOWING,
            "a wearing door operator: every open and close stroke takes `factor` times its "
            "normal time (reg 2 opening/closing bits last longer); the car keeps working. "
            "Clear: normal stroke times again.",
            options=("factor",),
        ),
        _spec(
            Fault.DOOR_LOCK_BYPASS,
            "the landing door lock is jumpered: reg 2 bit 6 (lock made) reads 1 whatever the "
            "door does, so it is made while the door reads open at every stop. Clear: the "
            "lock follows the door again.",
        ),
        _spec(
            Fault.DOOR_OPEN_WHILE_MOVING,
            "mid-run, at half rated speed or more (well outside every door zone), the car "
            "door is forced ajar: its contact opens the door-lock circuit (reg 2 lock 0, "
            "fully closed 0, the door reads partly open) while the safety circuit stays made, "
            "and the controller makes an emergency stop between floors (reg 2 moving 1 until "
            "it stops, door zone 0). Clear: the door closes and the car crawls to the "
            "nearest landing. With `at_once` the door is forced ajar at the injection "
            "if the car runs (even levelling, inside a door zone), else on the next fast run.",
            options=("at_once",),
            needs_motion=True,
        ),
        _spec(
            Fault.DOOR_HELD,
            "someone holds the doors open (the door-open button kept pressed, a trolley "
            "being loaded): at the car's landing, or its next stop when it runs, the doors "
            "open and stay fully open (reg 2 fully open 1, door zone 1, levelled 1, moving "
            "0); closing doors reopen. With `held_s` they are let go that many seconds after "
            "they are fully open, else when cleared; the doors then close and the car "
            "carries on.",
            options=("held_s",),
        ),
        _spec(
            Fault.LEVELLING_ERROR,
            "the car stops `offset_mm` (default 250) short of its landing, outside the door "
            "zone, not levelled, doors closed (reg 2 door zone 0, levelled 0); an `offset_mm` "
            "under the 150 mm door zone stops it in the zone, off level (door zone 1, levelled "
            "0 beyond 10 mm). Clear: the car re-levels at creep speed and opens its doors.",
            options=("offset_mm",),
            needs_motion=True,
        ),
        _spec(
            Fault.OVERSPEED,
            "the drive runs at `factor` (default 1.25) x rated speed (reg 5 above 1.15 x "
            "rated) on long runs to a terminal landing. Clear: rated speed again.",
            options=("factor",),
            needs_motion=True,
        ),
        _spec(
            Fault.OVERTRAVEL_TOP,
            "the car runs past the top landing by `offset_mm` (reg 6-7 above the top "
            "landing's height), hits the up final limit (reg 3 bit 2) which opens the safety "
            "circuit (reg 2 bit 5 = 0); the car stays there. Clear: it crawls back to the "
            "top landing.",
            options=("offset_mm",),
            needs_motion=True,
        ),
        _spec(
            Fault.OVERTRAVEL_BOTTOM,
            "as overtravel_top at the bottom: down final limit (reg 3 bit 3), safety circuit "
            "open, car below the bottom landing. The position registers are unsigned, so they "
            "read 0 there; door zone and levelled come from the true position (both 0).",
            options=("offset_mm",),
            needs_motion=True,
        ),
        _spec(
            Fault.SAFETY_CIRCUIT_OPEN,
            "while the car runs the safety circuit opens (reg 2 bit 5 = 0) and the car makes "
            "an emergency stop, usually between floors. Clear: the circuit closes and the car "
            "crawls to the nearest landing. With `at_once` it opens at the injection "
            "whatever the car does: a running car makes the emergency stop, a standing one "
            "stays where it is.",
            options=("at_once",),
            needs_motion=True,
        ),
        _spec(
            Fault.UNINTENDED_MOVEMENT,
            "at a landing with the doors open the brake slips: the car drifts at `drift_mm_s` "
            "(default 80) away from the landing, out of the door zone, doors open (reg 2 "
            "moving 1, door zone 0, fully open 1), until the UCM device stops it 400 mm out. "
            "Clear: doors close and the car re-levels. `distance_mm` (default 400) is where "
            "the device stops it (under the 150 mm door zone: a drift the rule must not "
            "call unintended movement). With `at_once` the brake slips at the injection if "
            "the car stands at a landing with its doors not closed (opening, open or "
            "closing), else at its next stop.",
            options=("drift_mm_s", "distance_mm", "at_once"),
        ),
        _spec(
            Fault.MAINS_FAILURE,
            "mains lost (reg 2 bit 15 = 0, car light off): the car stops where it is. With "
            "`occupied` true (default) the failure comes during a loaded run, between floors; "
            "with false, when the car is empty. Clear: power back, the car re-levels. With "
            "`at_once` mains fail at the injection whatever the car does (a running car stops).",
            options=("occupied", "at_once"),
        ),
        _spec(
            Fault.FAULT_CODE,
            "the controller reports fault `code` (default 25) in reg 9 and takes the car out "
            "of service after its current stop (no more trips). Clear: code 0, service again.",
            options=("code",),
        ),
        _spec(
            Fault.POSITION_LOST,
            "the controller loses its floor position: reg 1 (floor) reads 0, an impossible "
            "landing, and reg 9 reads `code` (default 30); the car stops at its next landing. "
            "Clear: floor known again.",
            options=("code",),
        ),
        _spec(
            Fault.RUN_TIME_EXCEEDED,
            "the car leaves its landing on a long run but only creeps at `speed_mm_s` "
            "(default 20; slipping ropes) and never reaches the next landing (reg 2 moving 1, "
            "levelled 0 for minutes). Clear: full speed again, it arrives.",
            options=("speed_mm_s",),
            needs_motion=True,
        ),
        _spec(
            Fault.ALARM_BUTTON,
            "a passenger presses the alarm button (reg 2 bit 12); with `held_s` it is "
            "released by itself after that many seconds, else it stays pressed until cleared.",
            options=("held_s",),
        ),
        _spec(
            Fault.MODE,
            "service mode `mode` (inspection, fire_return, firefighter, out_of_service, "
            "emergency_power, earthquake, stopped, unknown; reg 4). The car finishes its stop "
            "and serves no calls; fire_return first travels to the bottom landing and parks "
            "with doors open. With `visit` true (inspection only) it plays a maintenance "
            "visit: a worker runs the car landing to landing at inspection speed (0.3 m/s), "
            "up to the top and back, and the doors cycle at each landing. Clear: normal mode.",
            options=("mode", "visit"),
        ),
        _spec(
            Fault.PARK,
            "not a fault: the group parks the car at `landing` (default 1, the main landing) "
            "and gives "
            "it no hall calls. It delivers the people aboard, runs there, opens and closes "
            "its doors once and waits, level, doors closed, empty, in normal mode; nobody "
            "walks in (its lantern shows no direction). door_held and waiting_passenger "
            "then act at that landing. Clear: back in group service.",
            options=("landing",),
        ),
        _spec(
            Fault.WAITING_PASSENGER,
            "not a fault: someone steps into the car at its landing (an idle car opens for "
            "them) and presses no button, so the doors close and the car stands level with "
            "them inside (reg 2 occupied 1, fully closed 1, door zone 1, moving 0). With "
            "`wait_s` they press the door-open button that many seconds after stepping in and "
            "step out, else when cleared; a door opening while the fault is on does not let "
            "them out.",
            options=("wait_s",),
        ),
        _spec(
            Fault.NO_ANSWER,
            "the controller stops answering Modbus requests (both transports). Clear: "
            "answers again.",
            kind=FaultKind.LINK,
        ),
        _spec(
            Fault.LATE_ANSWER,
            "every answer is sent `delay_ms` (default 800) later than normal (both "
            "transports). Clear: on time again.",
            kind=FaultKind.LINK,
            options=("delay_ms",),
        ),
        _spec(
            Fault.CRC_ERROR,
            "answers carry a corrupted CRC (RTU only; TCP has no CRC and answers normally).",
            kind=FaultKind.LINK,
        ),
        _spec(
            Fault.EXCEPTION_RESPONSE,
            "every request gets exception 0x04, server device failure (both transports).",
            kind=FaultKind.LINK,
        ),
        _spec(
            Fault.GARBAGE,
            "random bytes (`length`, default 12) instead of an answer (RTU only).",
            kind=FaultKind.LINK,
            options=("length",),
        ),
        _spec(
            Fault.WRONG_SLAVE,
            "well-formed answers carrying slave id `slave` (default the car's id + 1) instead "
            "of the car's own (RTU only).",
            kind=FaultKind.LINK,
            options=("slave",),
        ),
        _spec(
            Fault.REBOOT,
            "the controller restarts: silent for `silent_s` (default 3) on both transports, "
            "then answers again. A moving car stops and re-levels, door and controller state "
            "restart, controller fault codes and latched faults (fault_code, position_lost, "
            "mode) clear; lifetime counters live in non-volatile memory and survive. With "
            "`firmware` the identity's firmware string changes (a firmware update). Clears "
            "itself when the boot is over.",
            kind=FaultKind.BOTH,
            options=("silent_s", "firmware"),
        ),
    )
}
assert set(FAULTS) == set(Fault)  # every fault documented

# Faults a controller restart clears: they live in the controller, not in the hoistway.
CLEARED_BY_REBOOT = frozenset({Fault.FAULT_CODE, Fault.POSITION_LOST, Fault.MODE})

DEFAULT_CODES = {Fault.FAULT_CODE: 25, Fault.POSITION_LOST: 30}


def parse_fault(name: object) -> Fault:
    """Return the fault called `name`, or raise ValueError listing the known names."""
    for fault in Fault:
        if fault.value == name:
            return fault
    known = ", ".join(f.value for f in Fault)
    raise ValueError(f"unknown fault {name!r}; known faults: {known}")


def _number(name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low:g}..{high:g}, got {value!r}")
    return float(value)


def _integer(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low}..{high}, got {value!r}")
    return value


def _option(name: str, value: object) -> object:
    """Validate one option value; ValueError names the option."""
    if name in ("delay_ms",):
        return _number(name, value, 0, 60_000)
    if name in ("silent_s", "held_s", "wait_s"):
        return _number(name, value, 0, 3600)
    if name == "factor":
        return _number(name, value, 1.0, 3.0)
    if name == "firmware":
        if not isinstance(value, str) or not value.isascii() or not value.isprintable():
            raise ValueError(f"firmware must be printable ASCII, got {value!r}")
        if len(value) > 16:
            raise ValueError(f"firmware {value!r} is longer than 16 characters")
        return value
    if name == "slave":
        return _integer(name, value, 0, 255)
    if name == "length":
        return _integer(name, value, 1, 256)
    if name == "code":
        return _integer(name, value, 1, 0xFFFF)
    if name == "visit":
        if not isinstance(value, bool):
            raise ValueError(f"visit must be true or false, got {value!r}")
        return value
    if name == "occupied":
        if not isinstance(value, bool):
            raise ValueError(f"occupied must be true or false, got {value!r}")
        return value
    if name == "mode":
        mode = parse_mode(value)
        if mode is ServiceMode.NORMAL:
            raise ValueError("mode normal is what clearing the mode fault gives")
        return mode
    if name == "offset_mm":
        return _integer(name, value, 1, 1000)
    if name == "speed_mm_s":
        return _integer(name, value, 1, 1600)
    if name == "drift_mm_s":
        return _integer(name, value, 10, 500)
    if name == "distance_mm":
        return _integer(name, value, 10, 1000)
    if name == "landing":
        return _integer(name, value, 1, 128)
    if name == "at_once":
        if not isinstance(value, bool):
            raise ValueError(f"at_once must be true or false, got {value!r}")
        return value
    raise AssertionError(f"option {name} has no validator")  # a FAULTS table slip


def parse_options(fault: Fault, raw: Mapping[str, object]) -> FaultOptions:
    """Validate the options in `raw` for `fault`; ValueError names the offending key.

    Keys the fault does not take are refused rather than ignored, so a typo cannot pass
    as a fault injected with its defaults.
    """
    allowed = FAULTS[fault].options
    unknown = sorted(set(raw) - allowed)
    if unknown:
        takes = ", ".join(sorted(allowed)) or "no options"
        raise ValueError(
            f"fault {fault.value} does not take {', '.join(unknown)}; it takes {takes}"
        )
    values = {name: _option(name, value) for name, value in raw.items()}
    return replace(NO_OPTIONS, **values)  # type: ignore[arg-type]
