"""A pure model of one elevator car and its controller, advanced by explicit simulated time.

The car serves random passenger trips (a seeded `random.Random` decides when and where),
runs between landings on a trapezoidal profile, levels, and cycles its doors. Faults from
`faults.py` change its behaviour. Nothing here reads a clock or does I/O: `step(dt)` is the
only way time passes, which keeps the model deterministic for a given seed and step sequence.
"""

from __future__ import annotations

import enum
import itertools
import random
from dataclasses import dataclass, field, replace

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
from hil_tests.emulator.motion import MotionProfile, advance
from hil_tests.emulator.traffic import Traffic, draw_gap, draw_trip

__all__ = ["Car", "CarConfig", "CarSnapshot", "Counters", "DoorState", "Phase", "ServiceMode"]

# Larger steps are split so the physics does not depend on how often the caller steps.
MAX_SUBSTEP_S = 0.05
EMERGENCY_DECEL = 1.5  # m/s², a safety-gear-free emergency stop on the machine brake
UCM_STOP_MM = 400  # how far out of the landing the unintended-movement device stops a drift
REOPEN_AT = 0.5  # door opening fraction where an obstructed close stroke reverses
REOPEN_DWELL_S = 1.0  # controllers dwell briefly after a reopen before trying again

# Faults that only show when the car does something; an idle car with one takes a trip.
_ACTIVITY_FAULTS = frozenset(
    {
        Fault.ENTRAPMENT,
        Fault.DOOR_CLOSE_FAILURE,
        Fault.DOOR_OPEN_FAILURE,
        Fault.DOOR_OBSTRUCTION,
        Fault.DOOR_LOCK_BYPASS,
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
# Faults that take the car out of service: it finishes its trip and serves no more calls.
_NO_SERVICE_FAULTS = frozenset({Fault.FAULT_CODE, Fault.POSITION_LOST, Fault.MODE})


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
    """The installation: hoistway geometry, drive, door operator and traffic."""

    landing_heights_mm: tuple[int, ...] = field(default_factory=uniform_landings)
    motion: MotionProfile = field(default_factory=MotionProfile)
    rescue_speed: float = 0.3
    door: DoorTiming = field(default_factory=DoorTiming)
    dwell_s: float = 4.0
    door_zone_mm: float = 150.0
    levelled_mm: float = 10.0
    mean_idle_s: float = 8.0
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
        if self.dwell_s < 0 or self.mean_idle_s <= 0:
            raise ValueError("dwell must be >= 0 and mean idle time > 0")
        if not 0 < self.close_stall_fraction < 1:
            raise ValueError("close_stall_fraction must be strictly between 0 and 1")

    @property
    def landings(self) -> int:
        """Number of landings served."""
        return len(self.landing_heights_mm)


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


@dataclass
class _Trip:
    """One group of passengers: board at `origin`, leave at `destination` (landing indexes)."""

    origin: int
    destination: int
    load_pct: int
    boarded: bool = False

    @property
    def next_stop(self) -> int:
        return self.destination if self.boarded else self.origin


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
    ) -> None:
        """Park the car at `start_landing` (1-based), doors closed, in normal service.

        Counters start from `counters`, or from plausible random values of a unit in service.
        Passengers call according to `traffic`.
        """
        if not 1 <= start_landing <= config.landings:
            raise ValueError(f"start_landing must be in 1..{config.landings}")
        self.config = config
        self.traffic = traffic
        self._rng = rng
        self._heights_m = tuple(h / 1000.0 for h in config.landing_heights_mm)
        self._time = 0.0
        self._position = self._heights_m[start_landing - 1]
        self._speed = 0.0
        self._direction = 0
        self._target = self._position
        self._target_kind = _Target.LANDING
        self._door = DoorOperator(config.door)
        self._phase = Phase.IDLE
        self._trip: _Trip | None = None
        self._dwell_until = 0.0
        self._next_call_at = self._draw_idle_time()
        self._faults: dict[Fault, FaultOptions] = {}
        self._manifest: set[Fault] = set()  # faults that waited for their moment and came
        self._held_by: Fault | None = None
        self._final_limit = 0  # +1 up final limit hit, -1 down
        self._alarm_release_at: float | None = None
        self._boot_until = 0.0
        self._occupied = False
        self._load_pct = 0
        if counters is None:
            trips = rng.randrange(10_000, 400_000)
            counters = Counters(trips, 2 * trips + rng.randrange(1_000), trips // 40)
        self._trips = counters.trips
        self._door_cycles = counters.door_cycles
        self._run_hours_base = counters.run_hours
        self._run_seconds = 0.0

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

    def inject(self, fault: Fault, options: FaultOptions = NO_OPTIONS) -> None:
        """Inject elevator fault `fault` with `options`; re-injecting replaces the options.

        Raises ValueError for a pure link fault (those live in `link.Link`).
        """
        if FAULTS[fault].kind is FaultKind.LINK:
            raise ValueError(f"{fault.value} is a link fault, not a car fault")
        if fault is Fault.REBOOT:
            self.reboot(options.silent_s)
            return
        self._faults[fault] = options
        if fault is Fault.ALARM_BUTTON and options.held_s is not None:
            self._alarm_release_at = self._time + options.held_s

    def clear(self, fault: Fault) -> None:
        """Clear `fault`; the car recovers on its next steps. Clearing an absent one is a no-op."""
        self._faults.pop(fault, None)
        self._manifest.discard(fault)
        if fault is Fault.REBOOT:
            self._boot_until = min(self._boot_until, self._time)

    def reboot(self, boot_s: float) -> None:
        """Restart the controller: the car stops dead, the controller boots for `boot_s`
        simulated seconds, then closes the doors and re-levels. Counters survive."""
        if boot_s < 0:
            raise ValueError(f"boot time cannot be negative, got {boot_s}")
        for fault in CLEARED_BY_REBOOT:
            self._faults.pop(fault, None)
        self._speed, self._direction = 0.0, 0
        self._door.open_command = self._door.close_command = False
        self._held_by = None
        self._boot_until = self._time + boot_s
        self._phase = Phase.BOOTING

    def step(self, dt: float) -> None:
        """Advance the simulation by `dt` simulated seconds (dt >= 0)."""
        if dt < 0:
            raise ValueError(f"time cannot run backwards (dt={dt})")
        remaining = dt
        while remaining > 1e-12:
            h = min(remaining, MAX_SUBSTEP_S)
            self._substep(h)
            remaining -= h

    def snapshot(self) -> CarSnapshot:
        """The controller's view of the car now."""
        # Flags derive from the true millimetres; the position register cannot go below the
        # bottom landing (uint32), which only an overtravel at the bottom reaches.
        true_mm = round(self._position * 1000.0)
        heights = self.config.landing_heights_mm
        landing = min(range(len(heights)), key=lambda i: abs(heights[i] - true_mm))
        offset_mm = true_mm - heights[landing]
        zone = self.config.door_zone_mm
        tolerance = self.config.levelled_mm
        moving = self._phase in (Phase.RUNNING, Phase.RESCUE, Phase.DRIFTING)
        driven = self._phase in (Phase.RUNNING, Phase.RESCUE)
        door = self._door
        mains_ok = Fault.MAINS_FAILURE not in self._manifest
        safety_open = Fault.SAFETY_CIRCUIT_OPEN in self._manifest or self._final_limit != 0
        return CarSnapshot(
            floor=0 if Fault.POSITION_LOST in self._faults else landing + 1,
            position_mm=max(0, true_mm),
            speed_mm_s=round(self._speed * 1000.0) if moving else 0,
            moving=moving,
            up=moving and self._direction > 0,
            down=moving and self._direction < 0,
            door_zone=abs(offset_mm) <= zone,
            levelled=not moving and abs(offset_mm) <= tolerance,
            safety_circuit=not safety_open,
            door_lock=door.fully_closed or Fault.DOOR_LOCK_BYPASS in self._faults,
            door_fully_open=door.fully_open,
            door_fully_closed=door.fully_closed,
            door_opening=door.is_opening,
            door_closing=door.is_closing,
            reopen_device=Fault.DOOR_OBSTRUCTION in self._faults and not door.fully_closed,
            alarm_button=Fault.ALARM_BUTTON in self._faults,
            overload=self._load_pct > 110,
            occupied=self._occupied,
            mains_ok=mains_ok,
            up_levelling=-zone <= offset_mm <= tolerance,
            down_levelling=-tolerance <= offset_mm <= zone,
            up_final_limit=self._final_limit > 0,
            down_final_limit=self._final_limit < 0,
            run_contactor=driven,
            brake_open=driven,
            car_light=mains_ok,
            full_load=self._load_pct >= 90,
            run_command=driven,
            door_open_command=door.open_command,
            door_close_command=door.close_command,
            service_mode=self._service_mode(),
            load_pct=self._load_pct,
            fault_code=self._fault_code(),
            counters=Counters(
                self._trips,
                self._door_cycles,
                self._run_hours_base + int(self._run_seconds // 3600),
            ),
            door=self._door_state(),
            phase=self._phase,
        )

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
        self._time += h
        if self._alarm_release_at is not None and self._time >= self._alarm_release_at:
            self._alarm_release_at = None
            self._faults.pop(Fault.ALARM_BUTTON, None)
        self._door.open_blocked = Fault.DOOR_OPEN_FAILURE in self._faults
        self._door.close_stall_at = (
            self.config.close_stall_fraction if Fault.DOOR_CLOSE_FAILURE in self._faults else None
        )
        if Fault.MAINS_FAILURE not in self._manifest:
            self._door.step(h)  # without mains the door operator has no power
        self._watch_triggers()
        handler = {
            Phase.IDLE: self._idle,
            Phase.DOOR_OPENING: self._door_opening,
            Phase.DWELL: self._dwell,
            Phase.DOOR_CLOSING: self._door_closing,
            Phase.TRAPPED: self._trapped,
            Phase.STOPPED: self._stopped,
            Phase.RECOVERING: self._recovering,
            Phase.BOOTING: self._booting,
        }.get(self._phase)
        if handler is not None:
            handler()
        elif self._phase is Phase.RUNNING:
            self._run(h)
        elif self._phase is Phase.RESCUE:
            self._rescue(h)
        elif self._phase is Phase.DRIFTING:
            self._drift(h)
        if self._phase in (Phase.RUNNING, Phase.RESCUE):
            self._run_seconds += h

    def _watch_triggers(self) -> None:
        """Let faults that wait for a moment (a fast run, an empty idle car) manifest."""
        rated = self.config.motion.rated_speed
        fast = self._phase is Phase.RUNNING and self._speed >= 0.5 * rated
        safety_pending = Fault.SAFETY_CIRCUIT_OPEN not in self._manifest
        if Fault.SAFETY_CIRCUIT_OPEN in self._faults and fast and safety_pending:
            self._manifest_with_stop(Fault.SAFETY_CIRCUIT_OPEN)
        mains = self._faults.get(Fault.MAINS_FAILURE)
        if mains is not None and Fault.MAINS_FAILURE not in self._manifest:
            if mains.occupied and fast and self._occupied:
                self._manifest_with_stop(Fault.MAINS_FAILURE)
            elif not mains.occupied and self._phase is Phase.IDLE and not self._occupied:
                self._manifest.add(Fault.MAINS_FAILURE)
                self._hold(Fault.MAINS_FAILURE)
        if (
            Fault.UNINTENDED_MOVEMENT in self._faults
            and Fault.UNINTENDED_MOVEMENT not in self._manifest
            and self._phase is Phase.DWELL
        ):
            self._manifest.add(Fault.UNINTENDED_MOVEMENT)
            self._direction = -1 if self._nearest_landing() > 0 else 1
            options = self._faults[Fault.UNINTENDED_MOVEMENT]
            self._speed = options.drift_mm_s / 1000.0
            self._phase = Phase.DRIFTING

    def _manifest_with_stop(self, fault: Fault) -> None:
        self._manifest.add(fault)
        stop = self._speed * self._speed / (2.0 * EMERGENCY_DECEL)
        self._target = self._position + self._direction * stop
        self._target_kind = _Target.EMERGENCY
        self._held_by = fault

    def _hold(self, fault: Fault) -> None:
        self._speed, self._direction = 0.0, 0
        self._held_by = fault
        self._phase = Phase.STOPPED

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
        if self._trip is None and self._in_service():
            # An injected fault should show soon, so a faulted idle car takes a trip at once.
            if self._wants_activity():
                self._trip = self._fault_trip()
            elif self._time >= self._next_call_at:
                self._trip = self._new_trip()
        if self._trip is not None:
            self._go_to(self._trip.next_stop)

    def _fire_return(self) -> None:
        if self._nearest_landing() == 0 and self._position == self._heights_m[0]:
            if not self._door.fully_open:
                self._door.command_open()
                self._phase = Phase.DOOR_OPENING
        else:
            self._start_motion(self._heights_m[0], Phase.RUNNING)

    def _door_opening(self) -> None:
        if self._door.fully_open:
            self._door_cycles += 1
            self._exchange_passengers()
            reopened = Fault.DOOR_OBSTRUCTION in self._faults
            self._dwell_until = self._time + (REOPEN_DWELL_S if reopened else self.config.dwell_s)
            self._phase = Phase.DWELL

    def _dwell(self) -> None:
        mode = self._faults.get(Fault.MODE)
        if mode is not None and mode.mode is ServiceMode.FIRE_RETURN:
            return  # parked at the main floor with doors open for the firefighters
        if self._time >= self._dwell_until:
            self._door.command_close()
            self._phase = Phase.DOOR_CLOSING

    def _door_closing(self) -> None:
        if Fault.DOOR_OBSTRUCTION in self._faults and self._door.opening <= REOPEN_AT:
            self._door.command_open()
            self._phase = Phase.DOOR_OPENING
        elif self._door.fully_closed:
            self._after_doors_closed()

    def _trapped(self) -> None:
        if Fault.ENTRAPMENT not in self._faults:
            self._start_motion(self._heights_m[self._nearest_landing()], Phase.RESCUE)

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
        if abs(self._position - self._heights_m[landing]) < 1e-6:
            self._position = self._heights_m[landing]
            if self._trip is not None or self._occupied:
                self._door.command_open()
                self._phase = Phase.DOOR_OPENING
            else:
                self._phase = Phase.IDLE
                self._next_call_at = self._time + self._draw_idle_time()
        else:
            self._start_motion(self._heights_m[landing], Phase.RESCUE)

    def _booting(self) -> None:
        if self._time >= self._boot_until:
            self._recovering()

    def _fault_trip(self) -> _Trip:
        """A trip that makes the injected faults show: board here, often run far."""
        n, here = self.config.landings, self._nearest_landing()
        faults = self._faults.keys()
        if Fault.OVERTRAVEL_TOP in faults or Fault.OVERTRAVEL_BOTTOM in faults:
            terminal = n - 1 if Fault.OVERTRAVEL_TOP in faults else 0
            destination = terminal if here != terminal else n // 2
        elif faults & _LONG_RUN_FAULTS or self._wants_long_loaded_run():
            destination = 0 if here >= n / 2 else n - 1
        else:
            destination = self._rng.randrange(n - 1)
            if destination >= here:
                destination += 1
        return _Trip(here, destination, self._rng.randint(8, 80))

    def _wants_long_loaded_run(self) -> bool:
        mains = self._faults.get(Fault.MAINS_FAILURE)
        return Fault.SAFETY_CIRCUIT_OPEN in self._faults or (mains is not None and mains.occupied)

    def _new_trip(self) -> _Trip:
        origin, destination = draw_trip(self.traffic, self._rng, self.config.landings)
        return _Trip(origin, destination, self._rng.randint(8, 80))

    def _go_to(self, landing: int) -> None:
        if landing == self._nearest_landing() and self._position == self._heights_m[landing]:
            self._door.command_open()
            self._phase = Phase.DOOR_OPENING
        else:
            self._start_motion(self._heights_m[landing], Phase.RUNNING)

    def _start_motion(self, target: float, phase: Phase) -> None:
        self._target = target
        self._target_kind = _Target.LANDING
        self._direction = 1 if target > self._position else -1
        self._phase = phase

    def _after_doors_closed(self) -> None:
        if self._trip is None:
            self._phase = Phase.IDLE
            self._next_call_at = self._time + self._draw_idle_time()
        else:
            self._go_to(self._trip.next_stop)

    def _profile(self) -> MotionProfile:
        profile = self.config.motion
        if self._target_kind is _Target.EMERGENCY:
            return replace(profile, acceleration=EMERGENCY_DECEL)
        creep = self._faults.get(Fault.RUN_TIME_EXCEEDED)
        if creep is not None:
            speed = creep.speed_mm_s / 1000.0
            return replace(
                profile, rated_speed=speed, levelling_speed=min(speed, profile.levelling_speed)
            )
        fast = self._faults.get(Fault.OVERSPEED)
        if fast is not None:
            return replace(profile, rated_speed=profile.rated_speed * fast.factor)
        return profile

    def _retarget(self) -> None:
        """Move the stopping point when a fault says the run ends somewhere else."""
        kind, faults = self._target_kind, self._faults
        if kind is _Target.EMERGENCY:
            return  # an emergency stop ends where the brake brings it, whatever happens next
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
                landing = self._trip.next_stop if self._trip else self._nearest_landing()
                self._target, self._target_kind = self._heights_m[landing], _Target.LANDING
            return
        if Fault.ENTRAPMENT in faults and self._occupied:
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

    def _reach(self) -> float:
        return self._position + self._direction * self._profile().stopping_distance(self._speed)

    def _run(self, h: float) -> None:
        self._retarget()
        self._position, self._speed = advance(
            self._position, self._speed, self._target, h, self._profile()
        )
        if self._position != self._target:
            return
        kind, self._target_kind = self._target_kind, _Target.LANDING
        if kind is _Target.TRAP:
            self._direction = 0
            self._phase = Phase.TRAPPED
        elif kind is _Target.LANDING:
            self._direction = 0
            self._trips += 1
            self._door.command_open()
            self._phase = Phase.DOOR_OPENING
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
        if abs(self._position - landing) * 1000.0 >= UCM_STOP_MM or (
            Fault.UNINTENDED_MOVEMENT not in self._faults
        ):
            self._hold(Fault.UNINTENDED_MOVEMENT)

    def _trap_point(self) -> float | None:
        """The first midpoint between landings ahead that the car can still stop at."""
        heights = self._heights_m
        reach = self._position + self._direction * self.config.motion.stopping_distance(self._speed)
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
        profile = self.config.motion
        crawl = MotionProfile(
            rated_speed=self.config.rescue_speed,
            acceleration=profile.acceleration,
            levelling_speed=min(profile.levelling_speed, self.config.rescue_speed),
        )
        self._position, self._speed = advance(self._position, self._speed, self._target, h, crawl)
        if self._position != self._target:
            return
        self._direction = 0
        if self._trip is not None:
            # The passengers leave at the landing the car re-levelled at.
            self._trip.destination = self._nearest_landing()
        self._door.command_open()
        self._phase = Phase.DOOR_OPENING

    def _exchange_passengers(self) -> None:
        trip, here = self._trip, self._nearest_landing()
        if trip is None:
            return
        if not trip.boarded and here == trip.origin:
            trip.boarded = True
            self._occupied, self._load_pct = True, trip.load_pct
        elif trip.boarded and here == trip.destination:
            self._occupied, self._load_pct = False, 0
            self._trip = None

    def _nearest_landing(self) -> int:
        return min(
            range(len(self._heights_m)), key=lambda i: abs(self._heights_m[i] - self._position)
        )

    def _draw_idle_time(self) -> float:
        return draw_gap(self.traffic, self._rng, self.config.mean_idle_s)

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
