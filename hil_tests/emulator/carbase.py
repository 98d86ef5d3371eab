"""The state every concern of the emulated car shares, and the car's data types.

`hil_tests.emulator.car.Car` is assembled from one class per concern, each in its own
module and each working on the state set up here (`CarBase.__init__`): fault behaviour
(`hil_tests.emulator.car_faults`), stop choice and the group's side
(`hil_tests.emulator.stops`), boarding (`hil_tests.emulator.boarding`), and the phases,
motion and snapshot in `hil_tests.emulator.car` itself. The helpers here are the ones
more than one concern needs. The parameters and constants are documented in
`hil_tests.emulator.car`.
"""

from __future__ import annotations

import bisect
import enum
import itertools
import random
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, cast

from hil_tests.emulator.dispatch import GroupController
from hil_tests.emulator.door import DoorOperator, DoorTiming
from hil_tests.emulator.faults import Fault, FaultOptions
from hil_tests.emulator.modes import ServiceMode
from hil_tests.emulator.motion import MotionProfile, Run
from hil_tests.emulator.traffic import PASSENGER_KG, Passenger, Traffic

if TYPE_CHECKING:
    from hil_tests.emulator.car import Car

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
# A maintenance visit's runs (the mode fault with visit): inspection speed, at most 0.63 m/s
# (GB 7588 / EN 81-20 5.12.1.5); 0.3 m/s is a common setting.
INSPECTION_SPEED_M_S = 0.3
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


class CarBase:
    """The car's state and the helpers its concerns share; see the module docstring."""

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
        self._visit_up = True  # a maintenance visit's next run goes up (see `Car._idle`)
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
        group.attach(self._car)

    @property
    def _car(self) -> Car:
        """This car as its group knows it: a CarBase only ever exists as part of a `Car`."""
        return cast("Car", self)

    def _nearest_landing(self) -> int:
        return _nearest(self._heights_m, self._position)

    def _visiting(self) -> bool:
        """Whether a maintenance visit is being played (the mode fault, inspection, visit)."""
        mode = self._faults.get(Fault.MODE)
        return mode is not None and mode.visit and mode.mode is ServiceMode.INSPECTION

    def _in_service(self) -> bool:
        return not (self._faults.keys() & _NO_SERVICE_FAULTS)

    def _parked(self) -> bool:
        return bool(self._faults) and Fault.PARK in self._faults

    def _wants_activity(self) -> bool:
        if self._faults.keys() & _ACTIVITY_FAULTS:
            return True
        mains = self._faults.get(Fault.MAINS_FAILURE)
        return mains is not None and mains.occupied

    def _hold(self, fault: Fault) -> None:
        self._speed, self._accel, self._direction = 0.0, 0.0, 0
        self._plan, self._plan_key = None, None
        self._held_by = fault
        self._phase = Phase.STOPPED

    def _open_doors(self) -> None:
        self._door.command_open()
        self._phase = Phase.DOOR_OPENING

    def _profile(self) -> MotionProfile:
        profile = self.config.motion
        if self._phase is Phase.RESCUE:
            return replace(profile, rated_speed=self.config.rescue_speed)
        if not self._faults:
            return profile
        if self._visiting():
            return replace(profile, rated_speed=INSPECTION_SPEED_M_S)
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


def _nearest(heights: tuple[float, ...] | tuple[int, ...], position: float) -> int:
    """Index of the landing nearest `position` (the lower one on a tie), by bisection."""
    i = bisect.bisect_left(heights, position)
    if i == 0:
        return 0
    if i == len(heights):
        return i - 1
    return i if heights[i] - position < position - heights[i - 1] else i - 1
