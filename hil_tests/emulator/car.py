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
from dataclasses import dataclass, field

from hil_tests.emulator.door import DoorOperator, DoorTiming
from hil_tests.emulator.faults import FAULTS, Fault
from hil_tests.emulator.motion import MotionProfile, advance

# Larger steps are split so the physics does not depend on how often the caller steps.
MAX_SUBSTEP_S = 0.05


class ServiceMode(enum.IntEnum):
    """Service mode as GB/T 24476 numbers it (register 4)."""

    STOPPED = 0
    NORMAL = 1
    INSPECTION = 2
    FIRE_RETURN = 3
    FIREFIGHTER = 4
    EMERGENCY_POWER = 5
    EARTHQUAKE = 6
    UNKNOWN = 7


class Phase(enum.Enum):
    """What the car's controller is doing."""

    IDLE = "idle"
    DOOR_OPENING = "door_opening"
    DWELL = "dwell"
    DOOR_CLOSING = "door_closing"
    RUNNING = "running"
    TRAPPED = "trapped"
    RESCUE = "rescue"


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


class Car:
    """One car and its controller; see the module docstring."""

    def __init__(
        self,
        config: CarConfig,
        rng: random.Random,
        *,
        start_landing: int = 1,
        counters: Counters | None = None,
    ) -> None:
        """Park the car at `start_landing` (1-based), doors closed, in normal service.

        Counters start from `counters`, or from plausible random values of a unit in service.
        """
        if not 1 <= start_landing <= config.landings:
            raise ValueError(f"start_landing must be in 1..{config.landings}")
        self.config = config
        self._rng = rng
        self._heights_m = tuple(h / 1000.0 for h in config.landing_heights_mm)
        self._time = 0.0
        self._position = self._heights_m[start_landing - 1]
        self._speed = 0.0
        self._direction = 0
        self._target = self._position
        self._trap_target = False
        self._door = DoorOperator(config.door)
        self._phase = Phase.IDLE
        self._trip: _Trip | None = None
        self._dwell_until = 0.0
        self._next_call_at = self._draw_idle_time()
        self._faults: set[Fault] = set()
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

    def inject(self, fault: Fault) -> None:
        """Inject `fault`; injecting one already active changes nothing."""
        self._faults.add(fault)

    def clear(self, fault: Fault) -> None:
        """Clear `fault`; the car recovers on its next steps. Clearing an absent one is a no-op."""
        self._faults.discard(fault)

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
        # Flags derive from the reported millimetres so that a reader can re-check them.
        position_mm = round(self._position * 1000.0)
        heights = self.config.landing_heights_mm
        landing = min(range(len(heights)), key=lambda i: abs(heights[i] - position_mm))
        offset_mm = position_mm - heights[landing]
        zone = self.config.door_zone_mm
        tolerance = self.config.levelled_mm
        moving = self._phase in (Phase.RUNNING, Phase.RESCUE)
        door = self._door
        manifest_codes = [FAULTS[f].controller_code for f in self._faults]
        return CarSnapshot(
            floor=landing + 1,
            position_mm=position_mm,
            speed_mm_s=round(self._speed * 1000.0) if moving else 0,
            moving=moving,
            up=moving and self._direction > 0,
            down=moving and self._direction < 0,
            door_zone=abs(offset_mm) <= zone,
            levelled=not moving and abs(offset_mm) <= tolerance,
            safety_circuit=True,
            door_lock=door.fully_closed,
            door_fully_open=door.fully_open,
            door_fully_closed=door.fully_closed,
            door_opening=door.is_opening,
            door_closing=door.is_closing,
            reopen_device=False,
            alarm_button=False,
            overload=self._load_pct > 110,
            occupied=self._occupied,
            mains_ok=True,
            up_levelling=-zone <= offset_mm <= tolerance,
            down_levelling=-tolerance <= offset_mm <= zone,
            up_final_limit=False,
            down_final_limit=False,
            run_contactor=moving,
            brake_open=moving,
            car_light=True,
            full_load=self._load_pct >= 90,
            run_command=moving,
            door_open_command=door.open_command,
            door_close_command=door.close_command,
            service_mode=ServiceMode.NORMAL,
            load_pct=self._load_pct,
            fault_code=max(manifest_codes, default=0),
            counters=Counters(
                self._trips,
                self._door_cycles,
                self._run_hours_base + int(self._run_seconds // 3600),
            ),
            door=self._door_state(),
            phase=self._phase,
        )

    # --- internals -------------------------------------------------------------------

    def _substep(self, h: float) -> None:
        self._time += h
        self._door.open_blocked = Fault.DOOR_OPEN_FAILURE in self._faults
        self._door.close_stall_at = (
            self.config.close_stall_fraction if Fault.DOOR_CLOSE_FAILURE in self._faults else None
        )
        self._door.step(h)
        if self._phase is Phase.IDLE:
            self._idle()
        elif self._phase is Phase.DOOR_OPENING:
            if self._door.fully_open:
                self._door_cycles += 1
                self._exchange_passengers()
                self._dwell_until = self._time + self.config.dwell_s
                self._phase = Phase.DWELL
        elif self._phase is Phase.DWELL:
            if self._time >= self._dwell_until:
                self._door.command_close()
                self._phase = Phase.DOOR_CLOSING
        elif self._phase is Phase.DOOR_CLOSING:
            if self._door.fully_closed:
                self._after_doors_closed()
        elif self._phase is Phase.RUNNING:
            self._run(h)
        elif self._phase is Phase.TRAPPED:
            if Fault.ENTRAPMENT not in self._faults:
                self._start_motion(self._heights_m[self._nearest_landing()], Phase.RESCUE)
        elif self._phase is Phase.RESCUE:
            self._rescue(h)
        if self._phase in (Phase.RUNNING, Phase.RESCUE):
            self._run_seconds += h

    def _idle(self) -> None:
        # An injected fault should show soon, so a faulted idle car takes a trip at once.
        wants_activity = bool(self._faults)
        if self._trip is None and (wants_activity or self._time >= self._next_call_at):
            self._trip = self._new_trip(board_here=Fault.ENTRAPMENT in self._faults)
        if self._trip is not None:
            self._go_to(self._trip.next_stop)

    def _new_trip(self, *, board_here: bool) -> _Trip:
        n = self.config.landings
        origin = self._nearest_landing() if board_here else self._rng.randrange(n)
        destination = self._rng.randrange(n - 1)
        if destination >= origin:
            destination += 1
        return _Trip(origin, destination, self._rng.randint(8, 80))

    def _go_to(self, landing: int) -> None:
        if landing == self._nearest_landing() and self._position == self._heights_m[landing]:
            self._door.command_open()
            self._phase = Phase.DOOR_OPENING
        else:
            self._start_motion(self._heights_m[landing], Phase.RUNNING)

    def _start_motion(self, target: float, phase: Phase) -> None:
        self._target = target
        self._trap_target = False
        self._direction = 1 if target > self._position else -1
        self._phase = phase

    def _after_doors_closed(self) -> None:
        if self._trip is None:
            self._phase = Phase.IDLE
            self._next_call_at = self._time + self._draw_idle_time()
        else:
            self._go_to(self._trip.next_stop)

    def _run(self, h: float) -> None:
        entrapped = Fault.ENTRAPMENT in self._faults
        if entrapped and self._occupied and not self._trap_target:
            trap = self._trap_point()
            if trap is not None:
                self._target, self._trap_target = trap, True
        elif self._trap_target and not entrapped and self._trip is not None:
            # Cleared before the car stopped: carry on to where the passengers wanted to go.
            self._target, self._trap_target = self._heights_m[self._trip.next_stop], False
        self._position, self._speed = advance(
            self._position, self._speed, self._target, h, self.config.motion
        )
        if self._position != self._target:
            return
        self._direction = 0
        if self._trap_target:
            self._phase = Phase.TRAPPED
        else:
            self._trips += 1
            self._door.command_open()
            self._phase = Phase.DOOR_OPENING

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
            # The trapped passengers leave at the landing they were rescued to.
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
        return self._rng.expovariate(1.0 / self.config.mean_idle_s)

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
