"""Where a car is in its cycle, and when a fault first shows in its registers.

`cycle_phase(car)` names the moment of the car's ordinary life a fault can land in:

| phase | the car |
|---|---|
| `departing` | runs inside the door zone of the landing it is leaving |
| `accelerating` | runs outside every door zone, speeding up |
| `cruising` | runs outside every door zone at (nearly) rated speed, not accelerating |
| `decelerating` | runs outside every door zone, slowing down for its stop |
| `levelling` | runs inside the door zone of the landing it stops at (the final approach) |
| `opening` | stands at a landing, doors opening |
| `open` | stands at a landing, doors open (the dwell) |
| `closing` | stands at a landing, doors closing |
| `parked` | stands level at a landing, doors closed, nothing to do (idle) |

Anything else (held by a fault, trapped, rescuing, booting, drifting) is None: not a
moment of ordinary service.

A `Watch` records when a predicate on the car's snapshot (the register image: every
register is encoded from it) first holds and each later time it becomes true again;
`CarGroup.watch` evaluates it after every physics substep, so `first` is the simulated
time the register image first showed it, not the time of the injection. `SIGNATURES`
gives each car fault the register image that reveals it; `signature(fault, config)`
returns it as a predicate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hil_tests.emulator.car import Car, CarConfig, CarSnapshot, Phase
from hil_tests.emulator.faults import Fault
from hil_tests.emulator.modes import ServiceMode

CYCLE_PHASES = (
    "departing",
    "accelerating",
    "cruising",
    "decelerating",
    "levelling",
    "opening",
    "open",
    "closing",
    "parked",
)
RUN_PHASES = CYCLE_PHASES[:5]
STANDING_PHASES = CYCLE_PHASES[5:]

_STANDING = {
    Phase.IDLE: "parked",
    Phase.DOOR_OPENING: "opening",
    Phase.DWELL: "open",
    Phase.DOOR_CLOSING: "closing",
}
# A run at this fraction of rated speed with no acceleration is cruising; a short run's
# peak (zero acceleration for an instant, well under rated speed) is not.
_CRUISE_FRACTION = 0.9
# The overspeed level the GB/T 7588 governor check and DESIGN.md's rule use: the fault is
# visible once the speed register reads above it.
OVERSPEED_LEVEL = 1.15

Predicate = Callable[[CarSnapshot], bool]


def cycle_phase(car: Car) -> str | None:
    """The `CYCLE_PHASES` name of what car `car` is doing now, or None (see the module)."""
    phase = car.phase
    if phase is not Phase.RUNNING:
        return _STANDING.get(phase)
    snap = car.snapshot()
    if snap.door_zone:
        return "levelling" if car.nearest_landing() == car.stop_landing else "departing"
    accel = car.acceleration
    if accel > 1e-9:
        return "accelerating"
    if accel < -1e-9:
        return "decelerating"
    rated_mm_s = car.config.motion.rated_speed * 1000.0
    return "cruising" if snap.speed_mm_s >= _CRUISE_FRACTION * rated_mm_s else None


@dataclass
class Watch:
    """The times a predicate on one car's snapshot became true (see the module)."""

    predicate: Predicate
    rises: list[float] = field(default_factory=list)
    holding: bool = False

    @property
    def first(self) -> float | None:
        """Simulated time the predicate first held, or None."""
        return self.rises[0] if self.rises else None

    def see(self, t: float, snap: CarSnapshot) -> None:
        """Judge the snapshot of simulated time `t`."""
        now = self.predicate(snap)
        if now and not self.holding:
            self.rises.append(t)
        self.holding = now


def signature(fault: Fault, config: CarConfig) -> Predicate | None:
    """The register image that shows car fault `fault` on a car built as `config`, as a
    predicate on the snapshot; None for faults with no register signature (link faults,
    park, reboot)."""
    top_mm = config.landing_heights_mm[-1]
    rated_mm_s = config.motion.rated_speed * 1000.0

    def standing_closed(s: CarSnapshot) -> bool:
        return not s.moving and s.door_fully_closed

    table: dict[Fault, Predicate] = {
        # Passengers shut in a car stopped outside a landing.
        Fault.ENTRAPMENT: lambda s: standing_closed(s) and s.occupied and not s.door_zone,
        # A close attempt that does not end closed (every image of the attempt shows it).
        Fault.DOOR_CLOSE_FAILURE: lambda s: s.door_close_command and not s.door_fully_closed,
        Fault.DOOR_OPEN_FAILURE: lambda s: (
            s.door_open_command
            and not s.door_fully_open
            and not s.moving
            and s.door_zone
            and s.levelled
        ),
        Fault.DOOR_OBSTRUCTION: _reopening(),
        Fault.DOOR_SLOWING: _stroke_started(),
        Fault.DOOR_LOCK_BYPASS: lambda s: s.door_lock and not s.door_fully_closed,
        Fault.DOOR_OPEN_WHILE_MOVING: lambda s: (
            s.moving and not s.door_zone and not (s.door_lock and s.door_fully_closed)
        ),
        Fault.DOOR_HELD: lambda s: not s.moving and not s.door_fully_closed,
        Fault.LEVELLING_ERROR: lambda s: standing_closed(s) and not s.levelled,
        Fault.OVERSPEED: lambda s: s.speed_mm_s > OVERSPEED_LEVEL * rated_mm_s,
        Fault.OVERTRAVEL_TOP: lambda s: (
            s.up_final_limit or (s.position_mm > top_mm and not s.door_zone)
        ),
        # Below the bottom landing the position register reads 0 (unsigned).
        Fault.OVERTRAVEL_BOTTOM: lambda s: (
            s.down_final_limit or (s.position_mm == 0 and not s.door_zone)
        ),
        Fault.SAFETY_CIRCUIT_OPEN: lambda s: not s.safety_circuit,
        Fault.UNINTENDED_MOVEMENT: lambda s: not s.door_zone and not s.door_fully_closed,
        Fault.MAINS_FAILURE: lambda s: not s.mains_ok,
        Fault.FAULT_CODE: lambda s: s.fault_code != 0,
        Fault.POSITION_LOST: lambda s: not 1 <= s.floor <= config.landings,
        # The run that will not end: a car crawling outside every door zone (a sound run
        # is far faster there: it leaves a zone at about 0.5 m/s).
        Fault.RUN_TIME_EXCEEDED: lambda s: s.moving and not s.door_zone and s.speed_mm_s <= 100,
        Fault.ALARM_BUTTON: lambda s: s.alarm_button,
        Fault.MODE: lambda s: s.service_mode is not ServiceMode.NORMAL,
        Fault.WAITING_PASSENGER: lambda s: standing_closed(s) and s.occupied and s.levelled,
    }
    return table.get(fault)


def _reopening() -> Predicate:
    """True while a door that reversed out of a close stroke opens again: a re-opening,
    not the stop's first opening."""
    reversed_close = [False]

    def seen(s: CarSnapshot) -> bool:
        if s.door_closing:
            reversed_close[0] = True
        elif s.door_fully_open or s.door_fully_closed:
            reversed_close[0] = False
        return s.door_opening and reversed_close[0]

    return seen


def _stroke_started() -> Predicate:
    """True while a door stroke runs that began after the first image judged: a stroke in
    progress at the injection is only partly slowed and does not count."""
    previous: list[bool | None] = [None]
    started = [False]

    def seen(s: CarSnapshot) -> bool:
        moving = s.door_opening or s.door_closing
        if moving and previous[0] is False:
            started[0] = True
        previous[0] = moving
        return moving and started[0]

    return seen
