"""A pure model of one elevator car and its controller, advanced by explicit simulated time.

The car belongs to a group (`dispatch.GroupController`): passengers wait at the landings,
the group assigns their hall calls, and the car serves its car calls (the destinations of
the people aboard) and its assigned hall calls in collective order, keeping its travel
direction while it has calls ahead. A car made on its own gets a private group of one,
so `Car(config, rng)` still serves traffic by itself.

Runs are jerk-limited S-curves planned to land exactly on the landing (`motion.py`);
doors open and close in their stroke times (`door.py`); passengers board and alight when
the doors are fully open, and the dwell lasts long enough for them (`transfer_s` each).
Occupancy and load come from the people aboard (`PASSENGER_KG` each against
`rated_load_kg`). Faults from `faults.py` change the behaviour; a fault that needs a
loaded or moving car puts a passenger in an idle or empty car so that it shows.

Nothing here reads a clock or does I/O: `step(dt)` (or the group's) is the only way time
passes, which keeps the model deterministic for a given seed and step sequence.

Parameters (`CarConfig`, defaults typical of a 1.6 m/s, 1000 kg passenger lift):

| parameter | default | meaning |
|---|---|---|
| `landing_heights_mm` | 12 landings, 3000 mm apart | heights above the bottom landing |
| `motion` | 1.6 m/s, 0.9 m/s², 1.2 m/s³ | rated speed, acceleration/deceleration, jerk |
| `rescue_speed` | 0.3 m/s | crawl to a landing after a fault or a reboot |
| `door` | open 2.5 s, close 3.0 s | door stroke times |
| `dwell_s` | 4.0 s | doors fully open before closing again |
| `transfer_s` | 1.0 s | per person boarding or alighting; the dwell is at least this x people |
| `door_zone_mm` | ±150 mm | door zone around each landing |
| `levelled_mm` | ±10 mm | levelled band (normal service lands exactly) |
| `rated_load_kg` | 1000 kg | 13 persons of 75 kg; load % = people x 75 / rated load |
| `full_load_pct` | 80 % | the group gives a car this full no more hall calls |
| `close_stall_fraction` | 0.3 | where a failing door close stroke stalls |

Fixed constants: emergency stop 1.5 m/s² (machine brake, no jerk limit), reopen on an
obstruction at half-closed with a 1 s dwell, unintended-movement device stops a drift
400 mm out of the landing, a door forced open mid-run stands 10 % open, physics substep
50 ms.
"""

from __future__ import annotations

import bisect
import enum
import itertools
import random
from dataclasses import dataclass, field, replace

from hil_tests.emulator.dispatch import MAX_REOPENS_PER_STOP, STALE_S, GroupController
from hil_tests.emulator.door import DoorOperator, DoorTiming
from hil_tests.emulator.faults import (
    CLEARED_BY_REBOOT,
    DEFAULT_CODES,
    FAULTS,
    NO_OPTIONS,
    Fault,
    FaultKind,
    FaultOptions,
)
from hil_tests.emulator.modes import ServiceMode
from hil_tests.emulator.motion import MotionProfile, Run, plan_run
from hil_tests.emulator.traffic import PASSENGER_KG, Passenger, Traffic

__all__ = ["Car", "CarConfig", "CarSnapshot", "Counters", "DoorState", "Phase", "ServiceMode"]

# Larger steps are split so the physics does not depend on how often the caller steps.
MAX_SUBSTEP_S = 0.05
EMERGENCY_DECEL = 1.5  # m/s², a safety-gear-free emergency stop on the machine brake
UCM_STOP_MM = 400  # default `FaultOptions.distance_mm`: where the UCM device stops a drift
REOPEN_AT = 0.5  # door opening fraction where an obstructed close stroke reverses
REOPEN_DWELL_S = 1.0  # controllers dwell briefly after a reopen before trying again
DOOR_AJAR = 0.1  # opening fraction of a car door forced open mid-run: a hand's width
STOP_PENALTY_S = 10.0  # ETA cost of each stop a car makes before reaching a call
_EPS_M = 1e-6  # positions closer than a micrometre are the same place

# Faults that only show when the car does something; an idle car with one takes a rider.
_ACTIVITY_FAULTS = frozenset(
    {
        Fault.ENTRAPMENT,
        Fault.DOOR_CLOSE_FAILURE,
        Fault.DOOR_OPEN_FAILURE,
        Fault.DOOR_OBSTRUCTION,
        Fault.DOOR_LOCK_BYPASS,
        Fault.DOOR_OPEN_WHILE_MOVING,
        Fault.LEVELLING_ERROR,
        Fault.OVERSPEED,
        Fault.OVERTRAVEL_TOP,
        Fault.OVERTRAVEL_BOTTOM,
        Fault.SAFETY_CIRCUIT_OPEN,
        Fault.UNINTENDED_MOVEMENT,
        Fault.RUN_TIME_EXCEEDED,
    }
)
# Faults that want a long run to a terminal landing, so high speed or a long time shows.
_LONG_RUN_FAULTS = frozenset({Fault.OVERSPEED, Fault.RUN_TIME_EXCEEDED})
# Faults that take the car out of service: it finishes its stop and serves no more calls.
_NO_SERVICE_FAULTS = frozenset({Fault.FAULT_CODE, Fault.POSITION_LOST, Fault.MODE})
# Faults that wait for their moment unless injected with `at_once`.
_AT_ONCE_FAULTS = frozenset(
    {
        Fault.SAFETY_CIRCUIT_OPEN,
        Fault.MAINS_FAILURE,
        Fault.DOOR_OPEN_WHILE_MOVING,
        Fault.UNINTENDED_MOVEMENT,
    }
)


class Phase(enum.Enum):
    """What the car's controller is doing."""

    IDLE = "idle"
    DOOR_OPENING = "door_opening"
    DWELL = "dwell"
    DOOR_CLOSING = "door_closing"
    RUNNING = "running"
    TRAPPED = "trapped"  # stopped between floors by an entrapment, passengers inside
    STOPPED = "stopped"  # held where it is by another fault until that fault clears
    DRIFTING = "drifting"  # moving with no run command: a slipping brake
    RECOVERING = "recovering"  # closing its doors before a correction run
    RESCUE = "rescue"  # crawling to the nearest landing at rescue speed
    BOOTING = "booting"  # the controller restarts


class DoorState(enum.Enum):
    """The door as a person in the lobby would describe it."""

    CLOSED = "closed"
    OPENING = "opening"
    OPEN = "open"
    CLOSING = "closing"
    STOPPED = "stopped"  # partly open and not moving, e.g. a jammed operator


def uniform_landings(landings: int = 12, floor_height_mm: int = 3000) -> tuple[int, ...]:
    """Landing heights in mm above the bottom landing, evenly spaced."""
    if landings < 2:
        raise ValueError(f"a car needs at least 2 landings, got {landings}")
    if floor_height_mm <= 0:
        raise ValueError(f"floor height must be positive, got {floor_height_mm}")
    return tuple(i * floor_height_mm for i in range(landings))


@dataclass(frozen=True)
class CarConfig:
    """The installation: hoistway geometry, drive, door operator and car size.

    See the module docstring for each parameter's meaning and default.
    """

    landing_heights_mm: tuple[int, ...] = field(default_factory=uniform_landings)
    motion: MotionProfile = field(default_factory=MotionProfile)
    rescue_speed: float = 0.3
    door: DoorTiming = field(default_factory=DoorTiming)
    dwell_s: float = 4.0
    transfer_s: float = 1.0
    door_zone_mm: float = 150.0
    levelled_mm: float = 10.0
    rated_load_kg: int = 1000
    full_load_pct: float = 80.0
    close_stall_fraction: float = 0.3

    def __post_init__(self) -> None:
        heights = self.landing_heights_mm
        if len(heights) < 2:
            raise ValueError("a car needs at least 2 landings")
        if heights[0] != 0:
            raise ValueError("landing heights are measured from the bottom landing (first = 0)")
        for lower, upper in itertools.pairwise(heights):
            # A stop between two landings must be able to fall outside both door zones.
            if upper - lower <= 2 * self.door_zone_mm:
                raise ValueError("landings must be further apart than two door zones")
        if not 0 < self.rescue_speed <= self.motion.rated_speed:
            raise ValueError("need 0 < rescue_speed <= rated speed")
        if self.dwell_s < 0 or self.transfer_s < 0:
            raise ValueError("dwell and transfer times must be >= 0")
        if self.rated_load_kg < PASSENGER_KG:
            raise ValueError(f"rated load must carry one person ({PASSENGER_KG} kg)")
        if not 0 < self.full_load_pct <= 100:
            raise ValueError("full_load_pct must be in (0, 100]")
        if not 0 < self.close_stall_fraction < 1:
            raise ValueError("close_stall_fraction must be strictly between 0 and 1")

    @property
    def landings(self) -> int:
        """Number of landings served."""
        return len(self.landing_heights_mm)

    @property
    def capacity(self) -> int:
        """Persons the car may carry (rated load / 75 kg)."""
        return self.rated_load_kg // PASSENGER_KG


@dataclass(frozen=True)
class Counters:
    """Lifetime counters as the controller keeps them."""

    trips: int
    door_cycles: int
    run_hours: int


@dataclass(frozen=True)
class CarSnapshot:
    """Everything the controller exposes about the car at one instant."""

    floor: int  # landing number, 1 = bottom
    position_mm: int
    speed_mm_s: int
    moving: bool
    up: bool
    down: bool
    door_zone: bool
    levelled: bool
    safety_circuit: bool
    door_lock: bool
    door_fully_open: bool
    door_fully_closed: bool
    door_opening: bool
    door_closing: bool
    reopen_device: bool
    alarm_button: bool
    overload: bool
    occupied: bool
    mains_ok: bool
    up_levelling: bool
    down_levelling: bool
    up_final_limit: bool
    down_final_limit: bool
    run_contactor: bool
    brake_open: bool
    car_light: bool
    full_load: bool
    run_command: bool
    door_open_command: bool
    door_close_command: bool
    service_mode: ServiceMode
    load_pct: int
    fault_code: int
    counters: Counters
    door: DoorState
    phase: Phase


# Phases in which the car answers calls (the others are fault handling or a boot).
_SERVING = frozenset(
    {Phase.IDLE, Phase.DOOR_OPENING, Phase.DWELL, Phase.DOOR_CLOSING, Phase.RUNNING}
)


class _Target(enum.Enum):
    """Why the car is heading where it is heading."""

    LANDING = "landing"
    TRAP = "trap"  # a midpoint between landings (entrapment)
    SHORT = "short"  # short of a landing (levelling error)
    OVERTRAVEL = "overtravel"  # beyond a terminal landing
    EMERGENCY = "emergency"  # wherever an emergency stop brings it


class Car:
    """One car and its controller; see the module docstring."""

    def __init__(
        self,
        config: CarConfig,
        rng: random.Random,
        *,
        start_landing: int = 1,
        counters: Counters | None = None,
        traffic: Traffic = Traffic.MIXED,
        group: GroupController | None = None,
        number: int = 1,
    ) -> None:
        """Park the car at `start_landing` (1-based), doors closed, in normal service.

        Counters start from `counters`, or from plausible random values of a unit in service.
        The car joins `group` as car `number`; without a group it gets a private one whose
        passengers arrive according to `traffic` (drawn from `rng`).
        """
        if not 1 <= start_landing <= config.landings:
            raise ValueError(f"start_landing must be in 1..{config.landings}")
        self.config = config
        self.number = number
        self._rng = rng
        self._heights_m = tuple(h / 1000.0 for h in config.landing_heights_mm)
        self._capacity = config.capacity
        self._time = 0.0
        self._position = self._heights_m[start_landing - 1]
        self._speed = 0.0
        self._accel = 0.0
        self._direction = 0  # of motion: +1 up, -1 down, 0 at rest
        self._target = self._position
        self._target_kind = _Target.LANDING
        self._plan: Run | None = None
        self._plan_kind = _Target.LANDING
        self._plan_key: tuple[float, MotionProfile] | None = None
        self._plan_t = 0.0
        self._plan_index = 0
        self._stop: int | None = None  # the landing the current run serves
        self._door = DoorOperator(config.door)
        self._phase = Phase.IDLE
        self._dwell_until = 0.0
        self._faults: dict[Fault, FaultOptions] = {}
        self._manifest: set[Fault] = set()  # faults that waited for their moment and came
        self._held_by: Fault | None = None
        self._final_limit = 0  # +1 up final limit hit, -1 down
        # When a person lets go by themselves (`held_s`, `wait_s`): fault -> simulated time.
        self._release_at: dict[Fault, float] = {}
        self._boot_until = 0.0
        # Passengers aboard with the time each boarded; car calls are their destinations.
        self._aboard: list[tuple[Passenger, float]] = []
        self._car_calls: dict[int, int] = {}
        self._hall_calls: set[tuple[int, int]] = set()
        self._travel = 0  # the direction arrow: +1 up, -1 down, 0 none
        self._calls_changed = False
        self._evacuate = False  # next door opening lets everyone out and takes nobody
        self._rider_due = False  # a fault wants someone aboard (see `_board_rider`)
        self._reopens = 0  # hall-button reopenings in the current stop
        # The waiting_passenger: aboard without a car call, or due to step in.
        self._waiter: Passenger | None = None
        self._waiter_due = False
        self._snap: CarSnapshot | None = None
        if counters is None:
            trips = rng.randrange(10_000, 400_000)
            counters = Counters(trips, 2 * trips + rng.randrange(1_000), trips // 40)
        self._trips = counters.trips
        self._door_cycles = counters.door_cycles
        self._run_hours_base = counters.run_hours
        self._run_seconds = 0.0
        if group is None:
            group = GroupController(traffic, random.Random(rng.getrandbits(64)), config.landings)
        self._group = group
        group.attach(self)

    # --- public view -----------------------------------------------------------------

    @property
    def time(self) -> float:
        """Simulated seconds since the car was created."""
        return self._time

    @property
    def phase(self) -> Phase:
        """What the controller is doing now."""
        return self._phase

    @property
    def faults(self) -> frozenset[Fault]:
        """Faults currently injected (manifest or waiting for their moment)."""
        return frozenset(self._faults)

    @property
    def group(self) -> GroupController:
        """The group controller the car belongs to."""
        return self._group

    @property
    def passengers(self) -> tuple[Passenger, ...]:
        """The people aboard."""
        return tuple(p for p, _ in self._aboard)

    @property
    def hall_calls(self) -> frozenset[tuple[int, int]]:
        """Hall calls (0-based landing, direction) the group assigned to this car."""
        return frozenset(self._hall_calls)

    @property
    def acceleration(self) -> float:
        """The car's acceleration along its direction of travel, m/s² (< 0 braking)."""
        return self._accel

    @property
    def stop_landing(self) -> int | None:
        """The 0-based landing the current (or last) run serves, or None before any run."""
        return self._stop

    def nearest_landing(self) -> int:
        """The 0-based landing nearest the car."""
        return self._nearest_landing()

    @property
    def travel(self) -> int:
        """The direction arrow: +1 up, -1 down, 0 when the car has nothing to do."""
        return self._travel

    # --- faults and time ---------------------------------------------------------------

    def inject(self, fault: Fault, options: FaultOptions = NO_OPTIONS) -> None:
        """Inject elevator fault `fault` with `options`; re-injecting replaces the options.

        Raises ValueError for a pure link fault (those live in `link.Link`).
        """
        if FAULTS[fault].kind is FaultKind.LINK:
            raise ValueError(f"{fault.value} is a link fault, not a car fault")
        if fault is Fault.REBOOT:
            self.reboot(options.silent_s)
            return
        if fault is Fault.PARK and not 1 <= options.landing <= self.config.landings:
            raise ValueError(f"landing must be in 1..{self.config.landings}, got {options.landing}")
        self._snap = None
        self._faults[fault] = options
        self._release_at.pop(fault, None)
        # The alarm is pressed now; door_held and waiting_passenger count from when the
        # doors are held fully open (`_dwell`) and the passenger is in (`_board_waiter`).
        if fault is Fault.ALARM_BUTTON and options.held_s is not None:
            self._release_at[fault] = self._time + options.held_s
        if fault is Fault.WAITING_PASSENGER and self._waiter is None:
            self._waiter_due = True
        if fault in _ACTIVITY_FAULTS or (fault is Fault.MAINS_FAILURE and options.occupied):
            self._rider_due = True
        if fault in _NO_SERVICE_FAULTS or fault is Fault.PARK:
            self._group.release(self)
        if options.at_once and fault in _AT_ONCE_FAULTS:
            self._manifest_now(fault)

    def _manifest_now(self, fault: Fault) -> None:
        """Show `fault` at once, whatever the car is doing (`FaultOptions.at_once`): the
        phase-independence bench injects faults at a chosen moment of the car's cycle."""
        phase, running = self._phase, self._phase is Phase.RUNNING
        if fault is Fault.DOOR_OPEN_WHILE_MOVING:
            if running:
                self._force_door_ajar()
            return  # standing: it waits for the next fast run as without at_once
        if fault is Fault.UNINTENDED_MOVEMENT:
            if phase in (Phase.DOOR_OPENING, Phase.DWELL, Phase.DOOR_CLOSING):
                self._start_drift()
            return  # doors closed: it waits for the next stop as without at_once
        # SAFETY_CIRCUIT_OPEN, MAINS_FAILURE
        if running:
            self._manifest_with_stop(fault)
        elif phase not in (Phase.BOOTING, Phase.RESCUE, Phase.DRIFTING):
            self._manifest.add(fault)
            self._hold(fault)
        else:
            self._manifest.add(fault)

    def clear(self, fault: Fault) -> None:
        """Clear `fault`; the car recovers on its next steps. Clearing an absent one is a no-op."""
        self._snap = None
        self._faults.pop(fault, None)
        self._manifest.discard(fault)
        self._release_at.pop(fault, None)
        if fault is Fault.WAITING_PASSENGER:
            self._waiter_due = False  # not yet aboard: they changed their mind
        if fault is Fault.REBOOT:
            self._boot_until = min(self._boot_until, self._time)
        if not self._wants_activity():
            self._rider_due = False

    def reboot(self, boot_s: float) -> None:
        """Restart the controller: the car stops dead, the controller boots for `boot_s`
        simulated seconds, then closes the doors and re-levels. Counters survive, and so
        do the passengers aboard (they press their buttons again)."""
        if boot_s < 0:
            raise ValueError(f"boot time cannot be negative, got {boot_s}")
        self._snap = None
        for fault in CLEARED_BY_REBOOT:
            self._faults.pop(fault, None)
        self._speed, self._accel, self._direction = 0.0, 0.0, 0
        self._plan, self._plan_key = None, None
        self._door.open_command = self._door.close_command = False
        self._held_by = None
        self._boot_until = self._time + boot_s
        self._phase = Phase.BOOTING
        self._group.release(self)

    def step(self, dt: float) -> None:
        """Advance this car (and its group's arrivals) by `dt` simulated seconds (dt >= 0).

        For a car in a group of several, prefer `CarGroup.step`, which advances every car;
        a car stepped alone keeps its group clock moving, and cars that are not stepped
        drop out of group service (`dispatch.STALE_S`), so it serves the calls alone.
        """
        if dt < 0:
            raise ValueError(f"time cannot run backwards (dt={dt})")
        group = self._group
        end = self._time + dt
        if self.quiet and group.quiet_until() > end:
            # Nothing can happen to an idle car before the next passenger arrives.
            self._time = end
            group.advance_to(end)
            return
        remaining = dt
        while remaining > 1e-12:
            h = min(remaining, MAX_SUBSTEP_S)
            group.advance_to(self._time + h)
            self.advance(h)
            remaining -= h

    @property
    def quiet(self) -> bool:
        """True when the car is idle with nothing to do: closed, no calls, no faults.
        Time passes for a quiet car without any physics (the idle fast path)."""
        return (
            self._phase is Phase.IDLE
            and not self._faults
            and not self._hall_calls
            and not self._aboard
        )

    def advance(self, h: float) -> None:
        """One physics substep of `h` <= `MAX_SUBSTEP_S` seconds, without the group's
        arrivals (`CarGroup.step` advances those first)."""
        if self.quiet:
            self._time += h
        else:
            self._substep(h)

    # --- the group's side ---------------------------------------------------------------

    def in_group_service(self, now: float) -> bool:
        """Whether the group may give this car hall calls at group time `now`."""
        return (
            self._phase in _SERVING
            and self._in_service()
            and Fault.MAINS_FAILURE not in self._manifest
            and not self._parked()
            and now - self._time <= STALE_S
        )

    def assign(self, landing: int, direction: int) -> None:
        """The group gives this car the hall call at `landing` (0-based) in `direction`."""
        self._hall_calls.add((landing, direction))
        self._calls_changed = True

    def unassign(self, landing: int, direction: int) -> None:
        """The hall call is answered (by this or another car) or taken back."""
        self._hall_calls.discard((landing, direction))
        self._calls_changed = True

    def eta(self, landing: int, direction: int) -> float | None:
        """Estimated seconds until this car could open its doors at `landing` for a
        passenger travelling `direction`; None when it cannot take the call (out of
        group service, or loaded past `full_load_pct`)."""
        if not self.in_group_service(self._group.time):
            return None
        config = self.config
        if len(self._aboard) * PASSENGER_KG * 100.0 >= config.full_load_pct * config.rated_load_kg:
            return None
        heights, pos, d = self._heights_m, self._position, self._travel
        h = heights[landing]
        on_the_way = (h - pos) * d > _EPS_M and direction == d and (h - self._reach()) * d >= 0
        if d == 0 or on_the_way:
            distance = abs(h - pos)
        else:
            # Runs to its furthest call this way first, then comes back (or round again).
            far = max([0.0, *((heights[c] - pos) * d for c in self._call_landings())])
            turn = pos + d * far
            distance = far + abs(turn - h)
            if direction == d:
                distance += heights[-1]  # has to come round once more
        busy = 0.0 if self._door.fully_closed else config.dwell_s
        stops = len(self._hall_calls) + len(self._car_calls)
        return distance / config.motion.rated_speed + stops * STOP_PENALTY_S + busy

    def take_walk_in(self, passenger: Passenger, now: float) -> bool:
        """A passenger just arrived where this car stands with its doors open (or closing):
        they step in if the car goes their way and has room; closing doors reopen for them
        at most `MAX_REOPENS_PER_STOP` times a stop. Returns whether they boarded."""
        phase = self._phase
        if phase not in (Phase.DWELL, Phase.DOOR_OPENING, Phase.DOOR_CLOSING):
            return False
        if not self._in_service() or len(self._aboard) >= self._capacity:
            return False
        if self._parked():
            return False  # its lantern shows no direction: people wait for their own car
        here = self._nearest_landing()
        if passenger.origin != here or abs(self._position - self._heights_m[here]) > _EPS_M:
            return False
        if self._travel not in (0, passenger.direction):
            return False
        if phase is Phase.DOOR_CLOSING:
            if self._reopens >= MAX_REOPENS_PER_STOP or Fault.DOOR_OBSTRUCTION in self._faults:
                return False
            self._reopens += 1
            self._door.command_open()
            self._phase = Phase.DOOR_OPENING
        self._snap = None
        self._aboard.append((passenger, now))
        self._car_calls[passenger.destination] = self._car_calls.get(passenger.destination, 0) + 1
        self._travel = passenger.direction
        self._dwell_until = max(self._dwell_until, self._time + self.config.transfer_s)
        self._calls_changed = True
        return True

    # --- snapshot ----------------------------------------------------------------------

    def snapshot(self) -> CarSnapshot:
        """The controller's view of the car now (the same object while nothing changed)."""
        if self._snap is not None:
            return self._snap
        # Flags derive from the true millimetres; the position register cannot go below the
        # bottom landing (uint32), which only an overtravel at the bottom reaches.
        true_mm = round(self._position * 1000.0)
        heights = self.config.landing_heights_mm
        landing = _nearest(heights, true_mm)
        offset_mm = true_mm - heights[landing]
        zone = self.config.door_zone_mm
        tolerance = self.config.levelled_mm
        phase = self._phase
        moving = phase is Phase.RUNNING or phase is Phase.RESCUE or phase is Phase.DRIFTING
        driven = phase is Phase.RUNNING or phase is Phase.RESCUE
        door = self._door
        faults = self._faults
        if faults or self._manifest or self._final_limit:
            mains_ok = Fault.MAINS_FAILURE not in self._manifest
            safety_open = Fault.SAFETY_CIRCUIT_OPEN in self._manifest or self._final_limit != 0
            lost = Fault.POSITION_LOST in faults
            bypass = Fault.DOOR_LOCK_BYPASS in faults
            obstructed = Fault.DOOR_OBSTRUCTION in faults
            alarm = Fault.ALARM_BUTTON in faults
            mode, code = self._service_mode(), self._fault_code()
        else:  # a healthy car: no enum hashing (slow in CPython)
            mains_ok, safety_open = True, False
            lost = bypass = obstructed = alarm = False
            mode, code = ServiceMode.NORMAL, 0
        people = len(self._aboard)
        load_pct = round(people * PASSENGER_KG * 100 / self.config.rated_load_kg)
        fully_closed = door.fully_closed
        snap = CarSnapshot(
            floor=0 if lost else landing + 1,
            position_mm=max(0, true_mm),
            speed_mm_s=round(self._speed * 1000.0) if moving else 0,
            moving=moving,
            up=moving and self._direction > 0,
            down=moving and self._direction < 0,
            door_zone=abs(offset_mm) <= zone,
            levelled=not moving and abs(offset_mm) <= tolerance,
            safety_circuit=not safety_open,
            door_lock=fully_closed or bypass,
            door_fully_open=door.fully_open,
            door_fully_closed=fully_closed,
            door_opening=door.is_opening,
            door_closing=door.is_closing,
            reopen_device=obstructed and not fully_closed,
            alarm_button=alarm,
            overload=load_pct > 110,
            occupied=people > 0,
            mains_ok=mains_ok,
            up_levelling=-zone <= offset_mm <= tolerance,
            down_levelling=-tolerance <= offset_mm <= zone,
            up_final_limit=self._final_limit > 0,
            down_final_limit=self._final_limit < 0,
            run_contactor=driven,
            brake_open=driven,
            car_light=mains_ok,
            full_load=load_pct >= 90,
            run_command=driven,
            door_open_command=door.open_command,
            door_close_command=door.close_command,
            service_mode=mode,
            load_pct=load_pct,
            fault_code=code,
            counters=Counters(
                self._trips,
                self._door_cycles,
                self._run_hours_base + int(self._run_seconds // 3600),
            ),
            door=self._door_state(),
            phase=phase,
        )
        self._snap = snap
        return snap

    # --- internals -------------------------------------------------------------------

    def _service_mode(self) -> ServiceMode:
        options = self._faults.get(Fault.MODE)
        return ServiceMode.NORMAL if options is None else options.mode

    def _fault_code(self) -> int:
        codes = [FAULTS[f].controller_code for f in self._faults]
        for fault, default in DEFAULT_CODES.items():
            options = self._faults.get(fault)
            if options is not None:
                codes.append(options.code if options.code is not None else default)
        return max(codes, default=0)

    def _in_service(self) -> bool:
        return not (self._faults.keys() & _NO_SERVICE_FAULTS)

    def _substep(self, h: float) -> None:
        self._snap = None
        self._time += h
        faults = self._faults
        door = self._door
        # Enum hashing is slow in CPython; a healthy car (no faults) skips every lookup.
        if faults:
            if self._release_at:
                for fault, at in list(self._release_at.items()):
                    if self._time >= at:
                        del self._release_at[fault]
                        faults.pop(fault, None)
            door.open_blocked = Fault.DOOR_OPEN_FAILURE in faults
            door.close_stall_at = (
                self.config.close_stall_fraction if Fault.DOOR_CLOSE_FAILURE in faults else None
            )
            slowing = faults.get(Fault.DOOR_SLOWING)
            door.slowdown = slowing.factor if slowing is not None else 1.0
        else:
            door.open_blocked, door.close_stall_at, door.slowdown = False, None, 1.0
        if not self._manifest or Fault.MAINS_FAILURE not in self._manifest:
            door.step(h)  # without mains the door operator has no power
        if faults:
            self._watch_triggers()
        phase = self._phase
        if phase is Phase.RUNNING:
            self._run(h)
        elif phase is Phase.IDLE:
            self._idle()
        elif phase is Phase.DOOR_OPENING:
            self._door_opening()
        elif phase is Phase.DWELL:
            self._dwell()
        elif phase is Phase.DOOR_CLOSING:
            self._door_closing()
        elif phase is Phase.RESCUE:
            self._rescue(h)
        elif phase is Phase.TRAPPED:
            self._trapped()
        elif phase is Phase.STOPPED:
            self._stopped()
        elif phase is Phase.RECOVERING:
            self._recovering()
        elif phase is Phase.BOOTING:
            self._booting()
        elif phase is Phase.DRIFTING:
            self._drift(h)
        if self._phase is Phase.RUNNING or self._phase is Phase.RESCUE:
            self._run_seconds += h

    def _watch_triggers(self) -> None:
        """Let faults that wait for a moment (a fast run, an empty idle car) manifest."""
        rated = self.config.motion.rated_speed
        fast = self._phase is Phase.RUNNING and self._speed >= 0.5 * rated
        occupied = bool(self._aboard)
        safety_pending = Fault.SAFETY_CIRCUIT_OPEN not in self._manifest
        if Fault.SAFETY_CIRCUIT_OPEN in self._faults and fast and safety_pending:
            self._manifest_with_stop(Fault.SAFETY_CIRCUIT_OPEN)
        mains = self._faults.get(Fault.MAINS_FAILURE)
        if mains is not None and Fault.MAINS_FAILURE not in self._manifest:
            if mains.occupied and fast and occupied:
                self._manifest_with_stop(Fault.MAINS_FAILURE)
            elif not mains.occupied and self._phase is Phase.IDLE and not occupied:
                self._manifest.add(Fault.MAINS_FAILURE)
                self._hold(Fault.MAINS_FAILURE)
        if (
            Fault.UNINTENDED_MOVEMENT in self._faults
            and Fault.UNINTENDED_MOVEMENT not in self._manifest
            and self._phase is Phase.DWELL
        ):
            self._start_drift()
        if (
            Fault.DOOR_OPEN_WHILE_MOVING in self._faults
            and fast
            and Fault.DOOR_OPEN_WHILE_MOVING not in self._manifest
        ):
            # At half rated speed the car is well outside every door zone (a one-floor run
            # peaks at 1.34 m/s), and the emergency stop lasts over half a second, so even a
            # slow poll sees it running with the door open, as the agent's rule requires.
            self._force_door_ajar()

    def _start_drift(self) -> None:
        """The brake slips at a landing: the car drifts away with its doors not closed."""
        self._manifest.add(Fault.UNINTENDED_MOVEMENT)
        self._direction = -1 if self._nearest_landing() > 0 else 1
        options = self._faults[Fault.UNINTENDED_MOVEMENT]
        self._speed = options.drift_mm_s / 1000.0
        self._phase = Phase.DRIFTING

    def _force_door_ajar(self) -> None:
        """The car door is forced open mid-run: emergency stop with the door ajar."""
        self._manifest_with_stop(Fault.DOOR_OPEN_WHILE_MOVING)
        door = self._door
        door.open_command = door.close_command = False
        # The panel leaves its closed limit: the car door contact breaks the door-lock
        # circuit, while the safety circuit before it stays made.
        door.opening = DOOR_AJAR

    def _manifest_with_stop(self, fault: Fault) -> None:
        self._manifest.add(fault)
        self._target_kind = _Target.EMERGENCY
        self._plan, self._plan_key = None, None
        self._held_by = fault

    def _hold(self, fault: Fault) -> None:
        self._speed, self._accel, self._direction = 0.0, 0.0, 0
        self._plan, self._plan_key = None, None
        self._held_by = fault
        self._phase = Phase.STOPPED

    def _parked(self) -> bool:
        return bool(self._faults) and Fault.PARK in self._faults

    def _wants_activity(self) -> bool:
        if self._faults.keys() & _ACTIVITY_FAULTS:
            return True
        mains = self._faults.get(Fault.MAINS_FAILURE)
        return mains is not None and mains.occupied

    def _idle(self) -> None:
        mode = self._faults.get(Fault.MODE)
        if mode is not None and mode.mode is ServiceMode.FIRE_RETURN:
            self._fire_return()
            return
        if not self._in_service():
            return
        if self._wants_activity():
            # An injected fault should show soon: someone gets in here and rides.
            self._rider_due = True
            self._open_doors()
            return
        if (self._faults or self._waiter is not None) and self._doors_wanted():
            self._open_doors()
            return
        stop = self._next_stop()
        if stop is not None:
            self._go_to(stop)
        else:
            self._travel = 0

    def _doors_wanted(self) -> bool:
        """Someone wants an idle car's doors open where it stands: the waiting passenger
        getting out, someone holding the doors, or someone stepping in to wait. A car on
        its way to park opens for the last two only where it parks."""
        faults = self._faults
        if self._waiter is not None and Fault.WAITING_PASSENGER not in faults:
            return True
        if Fault.PARK in faults and abs(self._position - self._park_height()) >= _EPS_M:
            return False
        return self._waiter_due or Fault.DOOR_HELD in faults

    def _next_stop(self) -> int | None:
        """The next landing in collective order; a parked car with nothing left to do
        runs to the main landing."""
        stop = self._choose_stop(moving=False)
        if stop is None and self._parked():
            height = self._park_height()
            if abs(self._position - height) >= _EPS_M:
                self._travel = -1 if height < self._position else 1
                return self._faults[Fault.PARK].landing - 1
        return stop

    def _park_height(self) -> float:
        """Height of the landing the car parks at (`FaultOptions.landing` of PARK)."""
        return self._heights_m[self._faults[Fault.PARK].landing - 1]

    def _fire_return(self) -> None:
        if self._nearest_landing() == 0 and self._position == self._heights_m[0]:
            if not self._door.fully_open:
                self._open_doors()
        else:
            self._start_motion(0, Phase.RUNNING)

    def _open_doors(self) -> None:
        self._door.command_open()
        self._phase = Phase.DOOR_OPENING

    def _door_opening(self) -> None:
        if self._door.fully_open:
            self._door_cycles += 1
            moved = self._exchange_passengers()
            if Fault.DOOR_OBSTRUCTION in self._faults:
                dwell = REOPEN_DWELL_S
            else:
                dwell = max(self.config.dwell_s, moved * self.config.transfer_s)
            self._dwell_until = self._time + dwell
            self._phase = Phase.DWELL

    def _dwell(self) -> None:
        if self._faults:
            mode = self._faults.get(Fault.MODE)
            if mode is not None and mode.mode is ServiceMode.FIRE_RETURN:
                return  # parked at the main floor with doors open for the firefighters
            if self._rider_due and self._in_service() and self._wants_activity():
                self._board_rider(self._nearest_landing())
            held = self._faults.get(Fault.DOOR_HELD)
            if held is not None:
                if held.held_s is not None and Fault.DOOR_HELD not in self._release_at:
                    self._release_at[Fault.DOOR_HELD] = self._time + held.held_s
                return  # the dwell lasts as long as someone holds the doors
        if self._time >= self._dwell_until:
            self._door.command_close()
            self._phase = Phase.DOOR_CLOSING

    def _door_closing(self) -> None:
        obstructed = self._faults and Fault.DOOR_OBSTRUCTION in self._faults
        if obstructed and self._door.opening <= REOPEN_AT:
            self._open_doors()
        elif self._faults and Fault.DOOR_HELD in self._faults:
            self._open_doors()  # the door-open button reverses a closing door at once
        elif self._door.fully_closed:
            self._after_doors_closed()

    def _trapped(self) -> None:
        if Fault.ENTRAPMENT not in self._faults:
            self._start_motion(self._nearest_landing(), Phase.RESCUE)

    def _stopped(self) -> None:
        if self._held_by is not None and self._held_by in self._faults:
            return
        self._held_by = None
        self._final_limit = 0
        self._recovering()

    def _recovering(self) -> None:
        """Close the doors if open, then re-level: open at a landing or crawl to one."""
        if not self._door.fully_closed:
            self._door.command_close()
            self._phase = Phase.RECOVERING
            return
        landing = self._nearest_landing()
        if abs(self._position - self._heights_m[landing]) < _EPS_M:
            self._position = self._heights_m[landing]
            if self._aboard or self._hall_calls:
                self._open_doors()
            else:
                self._phase = Phase.IDLE
        else:
            self._start_motion(landing, Phase.RESCUE)

    def _booting(self) -> None:
        if self._time >= self._boot_until:
            self._recovering()

    def _fault_destination(self, here: int) -> int:
        """Where a fault's rider goes: to the terminal an overtravel needs, far for faults
        that show on a long run, else one landing on."""
        n, faults = self.config.landings, self._faults.keys()
        if Fault.OVERTRAVEL_TOP in faults or Fault.OVERTRAVEL_BOTTOM in faults:
            terminal = n - 1 if Fault.OVERTRAVEL_TOP in faults else 0
            return terminal if here != terminal else n // 2
        if faults & _LONG_RUN_FAULTS or self._wants_long_loaded_run():
            return 0 if here >= n / 2 else n - 1
        # Any run shows the other faults: the next landing, the way the car goes if it can,
        # so the fault shows within seconds (scenarios wait for it with a deadline).
        way = self._travel or self._rng.choice((1, -1))
        return here + way if 0 <= here + way < n else here - way

    def _wants_long_loaded_run(self) -> bool:
        mains = self._faults.get(Fault.MAINS_FAILURE)
        return Fault.SAFETY_CIRCUIT_OPEN in self._faults or (mains is not None and mains.occupied)

    def _board_rider(self, here: int) -> None:
        """A person steps in so that the injected fault shows (an entrapment needs someone
        trapped, a long run needs a destination far away)."""
        self._rider_due = False
        if len(self._aboard) >= self._capacity:
            return
        rider = self._group.new_passenger(here, self._fault_destination(here))
        self._group.walk_in(self)
        self._aboard.append((rider, self._time))
        self._car_calls[rider.destination] = self._car_calls.get(rider.destination, 0) + 1
        if self._travel == 0:
            self._travel = rider.direction
        self._calls_changed = True

    def _overtravel_stranded(self, here: int) -> bool:
        """An overtravel still waits for its run to the terminal and nobody aboard goes
        there. A car that stood at the terminal when the fault came sends its first rider
        away from it; if it then stays busy it never idles (where riders are also called
        for) and would never go back, so a stop like this takes another rider."""
        if self._final_limit:
            return False
        faults, top = self._faults, len(self._heights_m) - 1
        for fault, terminal in ((Fault.OVERTRAVEL_TOP, top), (Fault.OVERTRAVEL_BOTTOM, 0)):
            if fault in faults and here != terminal and terminal not in self._car_calls:
                return True
        return False

    def _board_waiter(self, here: int) -> None:
        """The waiting_passenger steps in and presses no button: no car call, so an idle
        car closes its doors and stands there with them inside."""
        self._waiter_due = False
        if len(self._aboard) >= self._capacity:
            return
        # Going nowhere: their destination is where they got in.
        waiter = self._group.new_passenger(here, here)
        self._group.walk_in(self)
        self._aboard.append((waiter, self._time))
        self._waiter = waiter
        options = self._faults.get(Fault.WAITING_PASSENGER)
        if options is not None and options.wait_s is not None:
            self._release_at[Fault.WAITING_PASSENGER] = self._time + options.wait_s

    def _go_to(self, landing: int) -> None:
        if abs(self._position - self._heights_m[landing]) < _EPS_M:
            self._reopens = 0
            self._open_doors()
        else:
            self._start_motion(landing, Phase.RUNNING)

    def _start_motion(self, landing: int, phase: Phase) -> None:
        target = self._heights_m[landing]
        self._stop = landing
        self._target = target
        self._target_kind = _Target.LANDING
        self._direction = 1 if target > self._position else -1
        self._speed, self._accel = 0.0, 0.0
        self._plan, self._plan_key = None, None
        self._calls_changed = False
        self._phase = phase

    def _after_doors_closed(self) -> None:
        if not self._in_service():
            self._travel = 0
            self._phase = Phase.IDLE
            return
        stop = self._next_stop()
        if stop is None:
            self._travel = 0
            self._phase = Phase.IDLE
        else:
            self._go_to(stop)

    # --- collective control ---------------------------------------------------------

    def _call_landings(self) -> set[int]:
        return set(self._car_calls) | {landing for landing, _ in self._hall_calls}

    def _calls_beyond(self, here: int, direction: int) -> bool:
        if any((c - here) * direction > 0 for c in self._car_calls):
            return True
        return any((c - here) * direction > 0 for c, _ in self._hall_calls)

    def _choose_stop(self, *, moving: bool) -> int | None:
        """The next landing to stop at in collective order, or None.

        Keeps the travel direction while there are calls ahead: the nearest car call or
        hall call in that direction first; failing that the furthest hall call ahead in
        the other direction (the car turns there). A stationary car with nothing ahead
        reverses. A moving car only considers landings it can still stop at.
        """
        if not self._car_calls and not self._hall_calls:
            return None
        heights, d = self._heights_m, self._travel
        edge = self._reach() if moving else self._position
        here = None
        if not moving:
            landing = self._nearest_landing()
            if abs(heights[landing] - self._position) < _EPS_M:
                here = landing
        if d == 0:
            if moving:
                return None
            if here is not None and (
                (here, 1) in self._hall_calls or (here, -1) in self._hall_calls
            ):
                return here
            best = min(self._call_landings(), key=lambda c: abs(heights[c] - edge))
            self._travel = 1 if heights[best] > edge else -1
            return best
        slack = _EPS_M if not moving else -_EPS_M
        for direction in (d, -d):

            def ahead(c: int, direction: int = direction) -> bool:
                return (heights[c] - edge) * direction > slack

            same = [c for c in self._car_calls if ahead(c)]
            same += [c for c, cd in self._hall_calls if cd == direction and ahead(c)]
            if same:
                self._travel = direction
                return min(same, key=lambda c: abs(heights[c] - edge))
            turn = [c for c, cd in self._hall_calls if cd == -direction and ahead(c)]
            if turn:
                self._travel = direction
                return max(turn, key=lambda c: abs(heights[c] - edge))
            if moving:
                return None
            if here is not None and (here, -direction) in self._hall_calls:
                self._travel = -direction
                return here
        if here is not None and (here, d) in self._hall_calls:
            return here
        return None

    def _departure_direction(self, here: int) -> int:
        """The direction the car leaves `here` in: on while there is something ahead or
        someone waiting to go that way, else back, else none."""
        d, group = self._travel, self._group
        # A full car cannot take anyone waiting, and a parked one takes nobody.
        room = len(self._aboard) < self._capacity and not self._parked()
        for direction in (d, -d) if d else (1, -1):
            if self._calls_beyond(here, direction) or (room and group.waiting(here, direction)):
                return direction
        return 0

    def _exchange_passengers(self) -> int:
        """Doors fully open: people for this landing get out, people waiting to go the
        car's way get in. Returns how many moved (the dwell grows with them)."""
        here, group, now = self._nearest_landing(), self._group, self._time
        self._snap = None
        self._calls_changed = True
        moved = 0
        if self._evacuate:
            # After a rescue everyone leaves here, whatever their destination.
            for passenger, boarded_at in self._aboard:
                group.left(self, passenger, boarded_at, here)
            moved = len(self._aboard)
            self._aboard.clear()
            self._car_calls.clear()
            self._evacuate = False
            self._waiter = None
            self._travel = 0
            return moved
        waiter = self._waiter
        if waiter is not None and Fault.WAITING_PASSENGER not in self._faults:
            self._waiter = None  # done waiting: steps out here, wherever the car is
        staying = []
        for passenger, boarded_at in self._aboard:
            if passenger is self._waiter:
                staying.append((passenger, boarded_at))
            elif passenger.destination == here or passenger is waiter:
                group.left(self, passenger, boarded_at, here)
                moved += 1
            else:
                staying.append((passenger, boarded_at))
        self._aboard = staying
        self._car_calls.pop(here, None)
        if not self._in_service():
            # Taken out of service: everyone gets out and waits for another car (the
            # waiting passenger was going nowhere and just leaves).
            for passenger, boarded_at in staying:
                group.left(self, passenger, boarded_at, here)
                if passenger is not self._waiter:
                    group.requeue(passenger, here)
            moved += len(staying)
            self._aboard = []
            self._car_calls.clear()
            self._waiter = None
            self._travel = 0
            return moved
        if self._faults and not self._rider_due and self._overtravel_stranded(here):
            self._rider_due = True
        if self._rider_due and self._wants_activity():
            self._board_rider(here)
            moved += 1
        if self._waiter_due:
            self._board_waiter(here)
            moved += 1
        travel = self._departure_direction(here)
        self._travel = travel
        if travel and not self._parked():
            riders = group.board(self, here, travel, self._capacity - len(self._aboard))
            for passenger in riders:
                self._aboard.append((passenger, now))
                self._car_calls[passenger.destination] = (
                    self._car_calls.get(passenger.destination, 0) + 1
                )
            moved += len(riders)
        return moved

    # --- motion ----------------------------------------------------------------------

    def _profile(self) -> MotionProfile:
        profile = self.config.motion
        if self._phase is Phase.RESCUE:
            return replace(profile, rated_speed=self.config.rescue_speed)
        if not self._faults:
            return profile
        creep = self._faults.get(Fault.RUN_TIME_EXCEEDED)
        if creep is not None:
            return replace(profile, rated_speed=creep.speed_mm_s / 1000.0)
        fast = self._faults.get(Fault.OVERSPEED)
        if fast is not None:
            return replace(profile, rated_speed=profile.rated_speed * fast.factor)
        return profile

    def _reach(self) -> float:
        """Where the car would come to rest braking now as hard as the profile allows."""
        if self._speed == 0.0 and self._accel == 0.0:
            return self._position
        stop = self._profile().stopping_distance(self._speed, self._accel)
        if stop == float("inf"):
            return self._target  # in its final approach: it stops where it is going
        return self._position + self._direction * stop

    def _collective_retarget(self) -> None:
        """New calls during a run: stop earlier for one the car can still stop at, or go
        on past a stop nobody needs any more."""
        self._calls_changed = False
        current = self._stop
        if current is None or not self._in_service():
            return
        stop = self._choose_stop(moving=True)
        if stop is None or stop == current:
            return
        heights = self._heights_m
        wanted = (
            self._car_calls.get(current)
            or (current, 1) in self._hall_calls
            or (current, -1) in self._hall_calls
        )
        nearer = abs(heights[stop] - self._position) < abs(heights[current] - self._position)
        if nearer or not wanted:
            self._stop, self._target = stop, heights[stop]

    def _retarget(self) -> None:
        """Move the stopping point when a fault says the run ends somewhere else."""
        kind, faults = self._target_kind, self._faults
        if kind is not _Target.LANDING:
            cause = {
                _Target.TRAP: Fault.ENTRAPMENT,
                _Target.SHORT: Fault.LEVELLING_ERROR,
                _Target.OVERTRAVEL: Fault.OVERTRAVEL_TOP
                if self._direction > 0
                else Fault.OVERTRAVEL_BOTTOM,
            }[kind]
            if cause not in faults:
                # Cleared before the car stopped: carry on to where it was going.
                landing = self._stop if self._stop is not None else self._nearest_landing()
                self._target, self._target_kind = self._heights_m[landing], _Target.LANDING
            return
        if Fault.ENTRAPMENT in faults and self._aboard:
            trap = self._trap_point()
            if trap is not None:
                self._target, self._target_kind = trap, _Target.TRAP
                return
        top, bottom = self._heights_m[-1], self._heights_m[0]
        for fault, terminal, sign in (
            (Fault.OVERTRAVEL_TOP, top, 1),
            (Fault.OVERTRAVEL_BOTTOM, bottom, -1),
        ):
            options = faults.get(fault)
            if options is not None and self._target == terminal and self._direction == sign:
                self._target = terminal + sign * options.offset_mm / 1000.0
                self._target_kind = _Target.OVERTRAVEL
                return
        short = faults.get(Fault.LEVELLING_ERROR)
        if short is not None:
            point = self._target - self._direction * short.offset_mm / 1000.0
            if (point - self._reach()) * self._direction > 0:
                self._target, self._target_kind = point, _Target.SHORT

    def _follow_plan(self, h: float, profile: MotionProfile) -> bool:
        """Move along the planned run for `h` s, replanning when the target or the speed
        limit changed; True when the run is over (at rest where the plan ends)."""
        key = (self._target, profile)
        if key != self._plan_key:
            self._plan_key = key
            plan = plan_run(self._position, self._speed, self._accel, self._target, profile)
            if plan is not None:
                self._plan, self._plan_kind = plan, self._target_kind
                self._plan_t, self._plan_index = 0.0, 0
            elif self._plan is None:
                raise AssertionError("a run from rest can always be planned")
            # else: too late to stop there; the run goes on as planned before
        plan = self._plan
        assert plan is not None
        self._plan_t += h
        self._position, self._speed, self._accel, self._plan_index = plan.at(
            self._plan_t, self._plan_index
        )
        if self._plan_t < plan.duration:
            return False
        self._target = self._position
        self._speed, self._accel = 0.0, 0.0
        self._plan, self._plan_key = None, None
        return True

    def _emergency_stop(self, h: float) -> None:
        speed = self._speed - EMERGENCY_DECEL * h
        if speed > 0.0:
            self._position += self._direction * (self._speed + speed) / 2.0 * h
            self._speed, self._accel = speed, -EMERGENCY_DECEL
            return
        self._position += self._direction * self._speed * self._speed / (2.0 * EMERGENCY_DECEL)
        self._target_kind = _Target.LANDING
        self._hold(self._held_by or Fault.SAFETY_CIRCUIT_OPEN)

    def _run(self, h: float) -> None:
        if self._target_kind is _Target.EMERGENCY:
            self._emergency_stop(h)
            return
        if self._calls_changed and self._target_kind is _Target.LANDING:
            self._collective_retarget()
        if self._faults:
            self._retarget()
        if not self._follow_plan(h, self._profile()):
            return
        kind, self._target_kind = self._plan_kind, _Target.LANDING
        if kind is _Target.TRAP:
            self._direction = 0
            self._phase = Phase.TRAPPED
        elif kind is _Target.LANDING:
            self._direction = 0
            self._trips += 1
            self._reopens = 0
            self._open_doors()
        elif kind is _Target.SHORT:
            self._hold(Fault.LEVELLING_ERROR)
        elif kind is _Target.OVERTRAVEL:
            self._final_limit = self._direction
            self._hold(Fault.OVERTRAVEL_TOP if self._direction > 0 else Fault.OVERTRAVEL_BOTTOM)
        else:
            self._hold(self._held_by or Fault.SAFETY_CIRCUIT_OPEN)

    def _drift(self, h: float) -> None:
        landing = self._heights_m[self._nearest_landing()]
        self._position += self._direction * self._speed * h
        options = self._faults.get(Fault.UNINTENDED_MOVEMENT)
        if options is None or abs(self._position - landing) * 1000.0 >= options.distance_mm:
            self._hold(Fault.UNINTENDED_MOVEMENT)

    def _trap_point(self) -> float | None:
        """The first midpoint between landings ahead that the car can still stop at."""
        heights = self._heights_m
        reach = self._reach()
        midpoints = [(a + b) / 2 for a, b in itertools.pairwise(heights)]
        ahead = [
            m
            for m in midpoints
            if (m - reach) * self._direction > 0 and (self._target - m) * self._direction > 0
        ]
        if not ahead:
            return None
        return min(ahead, key=lambda m: abs(m - self._position))

    def _rescue(self, h: float) -> None:
        if not self._follow_plan(h, self._profile()):
            return
        self._direction = 0
        # The passengers leave at the landing the car re-levelled at.
        self._evacuate = bool(self._aboard)
        self._reopens = 0
        self._open_doors()

    def _nearest_landing(self) -> int:
        return _nearest(self._heights_m, self._position)

    def _door_state(self) -> DoorState:
        door = self._door
        if door.fully_closed:
            return DoorState.CLOSED
        if door.fully_open:
            return DoorState.OPEN
        if door.is_opening:
            return DoorState.OPENING
        if door.close_command:
            return DoorState.CLOSING
        return DoorState.STOPPED


def _nearest(heights: tuple[float, ...] | tuple[int, ...], position: float) -> int:
    """Index of the landing nearest `position` (the lower one on a tie), by bisection."""
    i = bisect.bisect_left(heights, position)
    if i == 0:
        return 0
    if i == len(heights):
        return i - 1
    return i if heights[i] - position < position - heights[i - 1] else i - 1
