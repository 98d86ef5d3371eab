"""Motion faults: STOPPED_OUTSIDE_DOOR_ZONE (轿厢在开锁区域外停止, GB/T 24476-2017 code 4),
LEVELLING_FAULT (平层故障, a LiftWatch extension),
UNINTENDED_MOVEMENT (轿厢意外移动, code 5), RUN_TIME_EXCEEDED (电动机运转时间限制器动作,
code 6), POSITION_LOST (楼层位置丢失, code 7), and the regional extensions OVERSPEED (超速)
and OVERTRAVEL_TOP / OVERTRAVEL_BOTTOM (冲顶 / 蹲底).

"Running" is ``moving``, else ``speed_mm_s > 0``. "Closed" is door CLOSED with the lock
circuit not known open, else (no door state) the lock circuit made. "Level" is in the door
zone and levelled (`CarState.at_landing`).

STOPPED_OUTSIDE_DOOR_ZONE (default 15 s, ``stopped_outside_door_zone_s``)
    Not running, outside the door (unlocking) zone (``door_zone`` False), closed, in
    NORMAL (or UNKNOWN: a profile without a mode signal) for T: the standard's "stopped
    outside the unlocking zone", where nobody can get out. A car standing inside the zone
    but off level is not this fault (see LEVELLING_FAULT). Cleared when the car runs again
    or stands in the door zone. Other modes are not watched: an emergency-power group
    parks cars wherever it must, and firefighters stop where they choose. Needs
    ``door_zone``, (``moving`` or ``speed_mm_s``) and (``door`` or ``door_lock_closed``).

LEVELLING_FAULT (default 5 s, ``levelling_fault_s``; LiftWatch extension, no GB/T code)
    Not running, inside the door zone, not levelled (``levelled`` False), doors in any
    state, in NORMAL or UNKNOWN for T: the car stopped at a landing with a step at the
    sill and did not re-level. Re-levelling normally completes within about 2 s (a few
    tens of millimetres at levelling speed), so 5 s leaves a poll period and the skew
    between the zone and level signals well clear of a car that re-levels. Onset is the
    first such sample. A re-levelling run restarts the count; CLEARED when the car reads
    levelled or leaves the door zone. Watched like STOPPED_OUTSIDE_DOOR_ZONE (fire and
    emergency-power service stop where they must). Needs ``door_zone``, ``levelled`` and
    (``moving`` or ``speed_mm_s``). `HealthCounters` counts these stops too.

UNINTENDED_MOVEMENT (default 2 samples, ``unintended_movement_samples``)
    The doors were opened at a landing (`latch.opened_at_landing`: in the door zone with
    the car at rest, or the controller opening them there at levelling speed, as when the
    brake slips the moment they open), and then the car reads outside the door zone with
    the doors still not closed for N consecutive samples. A car running through a zone
    with doors forced open was never opened at that landing: that is
    DOOR_OPEN_WHILE_MOVING's (a car that stood with open doors and drifts through the
    zone stays armed). Onset is the first sample outside the zone. Counted in samples, N is
    raised within N poll periods of the car leaving the zone whatever the phase. Cleared
    when the doors are closed or the car stands in a door zone again. Watched in every
    mode but INSPECTION (a car that is out of service must not move at all, so STOPPED is
    watched), and during a mains failure (a brake that slips without power is still a
    brake failure). Needs fast polling of ``door_zone`` and the door signals; without
    ``door_zone`` or without (``door`` or ``door_lock_closed``) it is undetectable.

RUN_TIME_EXCEEDED (default 60 s, ``run_time_limit_s``)
    Running continuously for T: the car left a landing and did not stop to level again.
    A car that stops between floors ends the run (STOPPED_OUTSIDE_DOOR_ZONE takes over).
    Onset is the first running sample. Cleared when the car stops. Suppressed in
    INSPECTION and STOPPED. Needs ``moving`` or ``speed_mm_s``.

OVERSPEED (default 1.15 x rated for 0.1 s; ``overspeed_factor``, ``overspeed_s``,
``rated_speed_mm_s``)
    ``speed_mm_s`` above factor x rated speed for T. Cleared when the speed is back at or
    below the rated speed (the gap stops a car hovering at the threshold from flapping).
    The rated speed is per unit and has no default: without ``rated_speed_mm_s`` in the
    unit's config, or without ``speed_mm_s`` in its profile, the rule is undetectable.
    Watched in every mode but INSPECTION.

OVERTRAVEL_TOP / OVERTRAVEL_BOTTOM (immediate)
    The up (down) final limit switch reads operated, or the car reads outside the door zone
    beyond the top (bottom) landing, configured as ``top_landing`` (``bottom_landing``),
    moving outward: ``direction`` UP (DOWN), or without a direction, ``position_mm``
    beyond where it was last seen in a door zone. "Beyond the terminal" is either of:
    the door zone the car was last in was the terminal's (``floor`` read the terminal
    there: the car left the terminal's zone outward, whether or not it was ever level
    there, as a car overrunning its arrival is not), or ``position_mm`` is beyond the
    terminal's level position, learned each time the car stands level there. So a car
    that overruns the terminal on arrival is raised on the first sample outside the
    terminal's zone, long before the final limit, while a car that overshoots within the
    zone and re-levels back never leaves it and raises nothing. The zone memory is
    forgotten in INSPECTION (a mechanic may park the car anywhere), so a car found beyond
    the terminal after inspection, at rest, is not judged until it moves. Cleared when
    the final limit no longer reads operated and the car stands level at a landing.
    Watched in every mode but INSPECTION (mechanics test the final limits in inspection).
    Needs ``up_final_limit`` (``down_final_limit``), or the configured terminal landing
    with ``floor``, ``door_zone`` and (``position_mm`` or ``direction``). The zone rule
    assumes ``floor`` reads the landing whose zone the car is in (the emulator's and the
    reference map's nearest landing); a controller whose floor register runs ahead to the
    next stop should read ``position_mm``, which the learned level position serves.

POSITION_LOST (immediate)
    ``floor`` outside the configured ``bottom_landing``..``top_landing``. Cleared when the
    floor is in range again. Suppressed in INSPECTION and STOPPED (a controller re-learns
    its position there). Needs ``floor`` and both landings configured. The controller's own
    "position lost" fault code arrives with the profiles' fault-code maps.

Timed rules count from the last sample that did not show their condition
(`latch.advance`). STOPPED_OUTSIDE_DOOR_ZONE, LEVELLING_FAULT, RUN_TIME_EXCEEDED and
POSITION_LOST are also suppressed while a mains failure explains them (``power_out``,
`latch.POWER_EXPLAINED`): a car stranded by a power cut is POWER_FAILURE (and ENTRAPMENT
if occupied), and is judged afresh once mains has been back for `latch.POWER_SETTLE_S`.
Every rule keeps a raised event raised when its mode is suppressed, until its own clearing
condition; `blind` forgets pending onsets and counts and keeps raised events.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from agent.detect.config import DEFAULTS, DetectionConfig
from agent.detect.events import Event, EventType, Phase
from agent.detect.latch import (
    FAULT_SUPPRESSED_MODES,
    IDLE,
    INSPECTION_ONLY,
    Latch,
    LatchRule,
    advance,
    closed_and_locked,
    decided,
    forget_pending,
    judged,
    opened_at_landing,
    running,
    withheld,
)
from agent.detect.reasons import Reason, coded
from agent.detect.rule import NO_EVENTS, NamedRules, blind_all, step_all
from agent.state import CarState, Direction, ServiceMode

#: Modes in which STOPPED_OUTSIDE_DOOR_ZONE is watched.
STOPPED_OUTSIDE_MODES = frozenset({ServiceMode.NORMAL, ServiceMode.UNKNOWN})


@dataclass(frozen=True, slots=True)
class MotionConfig:
    """Thresholds of the motion rules; None landings or rated speed switch rules off. The
    defaults are `DetectionConfig`'s."""

    stopped_outside_door_zone_s: float = DEFAULTS.stopped_outside_door_zone_s
    levelling_fault_s: float = DEFAULTS.levelling_fault_s
    unintended_movement_samples: int = DEFAULTS.unintended_movement_samples
    run_time_limit_s: float = DEFAULTS.run_time_limit_s
    overspeed_factor: float = DEFAULTS.overspeed_factor
    overspeed_s: float = DEFAULTS.overspeed_s
    rated_speed_mm_s: float | None = DEFAULTS.rated_speed_mm_s
    top_landing: int | None = DEFAULTS.top_landing
    bottom_landing: int | None = DEFAULTS.bottom_landing

    @classmethod
    def from_detection(cls, config: DetectionConfig) -> MotionConfig:
        """The motion rules' view of a unit's thresholds."""
        return cls(
            stopped_outside_door_zone_s=config.stopped_outside_door_zone_s,
            levelling_fault_s=config.levelling_fault_s,
            unintended_movement_samples=config.unintended_movement_samples,
            run_time_limit_s=config.run_time_limit_s,
            overspeed_factor=config.overspeed_factor,
            overspeed_s=config.overspeed_s,
            rated_speed_mm_s=config.rated_speed_mm_s,
            top_landing=config.top_landing,
            bottom_landing=config.bottom_landing,
        )


@dataclass(frozen=True, slots=True)
class UnintendedState:
    """UNINTENDED_MOVEMENT's memory: ``zone_open`` is True while the car stood in the door
    zone with its doors not closed (the rule is armed) and ``outside_count`` counts the
    samples outside since; ``latch`` is the occurrence."""

    latch: Latch = IDLE
    zone_open: bool = False
    outside_count: int = 0


@dataclass(frozen=True, slots=True)
class OvertravelState:
    """An overtravel rule's memory: ``zone_floor``/``zone_position`` are the floor and
    position of the last sample in a door zone, ``level`` the position at which the car
    last stood level at the rule's terminal landing; ``latch`` is the occurrence."""

    latch: Latch = IDLE
    zone_floor: int | None = None
    zone_position: int | None = None
    level: int | None = None


_UNINTENDED_START = UnintendedState()
_OVERTRAVEL_START = OvertravelState()


@dataclass(frozen=True, slots=True)
class MotionState:
    """Detector memory for one car's motion rules: each rule's own."""

    stopped_outside: Latch = IDLE
    levelling: Latch = IDLE
    unintended: UnintendedState = _UNINTENDED_START
    run_time: Latch = IDLE
    overspeed: Latch = IDLE
    over_top: OvertravelState = _OVERTRAVEL_START
    over_bottom: OvertravelState = _OVERTRAVEL_START
    position_lost: Latch = IDLE


def _past(position: int, reference: int, up: bool) -> bool:
    return position > reference if up else position < reference


def _beyond(
    sample: CarState,
    state: OvertravelState,
    terminal: int | None,
    up: bool,
) -> bool:
    """Whether ``sample`` shows the car outside the door zone beyond ``terminal`` (the top
    landing when ``up``), moving outward (see the module doc)."""
    if terminal is None or sample.door_zone is not False:
        return False
    position = sample.position_mm
    direction = sample.direction
    if direction is Direction.NONE:
        reference = state.zone_position
        if position is None or reference is None or not _past(position, reference, up):
            return False
    elif direction is not (Direction.UP if up else Direction.DOWN):
        return False
    if state.zone_floor == terminal:
        return True
    level = state.level
    return position is not None and level is not None and _past(position, level, up)


def step(
    state: MotionState,
    sample: CarState,
    now: float,
    config: MotionConfig,
    *,
    since: float | None = None,
    power_out: bool = False,
) -> tuple[MotionState, list[Event]]:
    """Advance every motion rule by one sample taken at monotonic time ``now``.

    ``since`` is the previous sample's time (holds count from it, see `latch.advance`);
    ``power_out`` whether a mains failure explains a stranded car (`latch.POWER_EXPLAINED`).
    Returns the new state (the same object when nothing changed) and the events decided
    on this sample, at most one per rule. ``now`` must not decrease. Never raises.
    """
    return step_all(_rules(config), state, sample, now, since, power_out)


@dataclass(frozen=True, slots=True)
class _AtRest(LatchRule):
    """The step the two at-rest zone rules share: watched at rest in `STOPPED_OUTSIDE_MODES`
    with mains not explaining it, raised once the fault `shows` for ``hold_s``, cleared
    when it `clears`; each rule says what shows and clears it, and why."""

    event_type: ClassVar[EventType]
    cleared_reason: ClassVar[Reason]
    hold_s: float

    def step(
        self, old: Latch, sample: CarState, now: float, since: float | None, power_out: bool
    ) -> tuple[Latch, Sequence[Event]]:
        """See `rule.Rule.step`."""
        run = running(sample)
        watched = run is False and sample.mode in STOPPED_OUTSIDE_MODES and not power_out
        if old is IDLE and not watched:
            return old, NO_EVENTS  # nothing pending or raised, and nothing can start
        active = watched and self.shows(sample)
        clear = old.raised and self.clears(sample, run)  # only a raised occurrence clears
        return judged(self, old, sample, now, active, clear, self.hold_s, since)

    @abstractmethod
    def shows(self, sample: CarState) -> bool:
        """Whether ``sample``, of a car watched at rest, shows the fault."""

    @abstractmethod
    def clears(self, sample: CarState, run: bool | None) -> bool:
        """Whether ``sample`` (``run``: `latch.running`) clears a raised occurrence."""

    @abstractmethod
    def raised_reason(self, sample: CarState) -> Reason:
        """See `latch.Reasoned`."""


@dataclass(frozen=True, slots=True)
class StoppedOutsideDoorZone(_AtRest):
    """STOPPED_OUTSIDE_DOOR_ZONE as a `rule.Rule`: at rest outside the door zone with
    closed doors, in `STOPPED_OUTSIDE_MODES`, for ``hold_s`` (see the module doc)."""

    event_type: ClassVar[EventType] = EventType.STOPPED_OUTSIDE_DOOR_ZONE
    cleared_reason: ClassVar[Reason] = coded(
        "car runs or stands in the door zone again", "runs_or_in_zone"
    )

    def shows(self, sample: CarState) -> bool:
        """See `_AtRest.shows`: outside the door zone, closed and locked."""
        return sample.door_zone is False and closed_and_locked(sample) is True

    def clears(self, sample: CarState, run: bool | None) -> bool:
        """See `_AtRest.clears`: running, or standing in the door zone."""
        return run is True or sample.door_zone is True

    def raised_reason(self, sample: CarState) -> Reason:
        """See `latch.Reasoned`."""
        return coded(
            f"stopped outside the door zone with doors closed for {self.hold_s:g} s",
            "stopped_outside_zone",
            s=f"{self.hold_s:g}",
        )


@dataclass(frozen=True, slots=True)
class LevellingFault(_AtRest):
    """LEVELLING_FAULT as a `rule.Rule`: at rest inside the door zone off level, watched
    like STOPPED_OUTSIDE_DOOR_ZONE, for ``hold_s`` (see the module doc)."""

    event_type: ClassVar[EventType] = EventType.LEVELLING_FAULT
    cleared_reason: ClassVar[Reason] = coded(
        "car levelled or left the door zone", "levelled_or_left_zone"
    )

    def shows(self, sample: CarState) -> bool:
        """See `_AtRest.shows`: in the door zone, not levelled."""
        return sample.door_zone is True and sample.levelled is False

    def clears(self, sample: CarState, run: bool | None) -> bool:
        """See `_AtRest.clears`: levelled, or out of the door zone."""
        return sample.levelled is True or sample.door_zone is False

    def raised_reason(self, sample: CarState) -> Reason:
        """See `latch.Reasoned`."""
        return coded(
            f"stopped in the door zone off level for {self.hold_s:g} s",
            "levelling_fault",
            s=f"{self.hold_s:g}",
        )


@dataclass(frozen=True, slots=True)
class UnintendedMovement:
    """UNINTENDED_MOVEMENT as a `rule.Rule`: armed by doors opened at a landing, raised
    after ``samples`` samples outside the door zone with the doors still not closed. A
    `latch.advance` with no hold whose RAISED waits for the count (`latch.withheld`): it
    counts samples, not seconds (see the module doc)."""

    samples: int

    def start(self) -> UnintendedState:
        """See `rule.Rule.start`."""
        return _UNINTENDED_START

    def step(
        self,
        state: UnintendedState,
        sample: CarState,
        now: float,
        since: float | None,
        power_out: bool,
    ) -> tuple[UnintendedState, Sequence[Event]]:
        """See `rule.Rule.step`."""
        old, zone_open = state.latch, state.zone_open
        zone = sample.door_zone
        if old is IDLE and not zone_open and zone is not True:
            return state, NO_EVENTS  # nothing armed nor raised, and the sample arms nothing
        shut = closed_and_locked(sample)
        if old is IDLE and not zone_open and shut is not False:
            return state, NO_EVENTS  # nothing armed nor raised, and closed doors arm nothing
        outside = (
            zone_open and zone is False and shut is False and sample.mode not in INSPECTION_ONLY
        )
        cleared = shut is True or (zone is True and running(sample) is not True)
        place = sample.at_landing if outside and old.onset is None else None
        new, phase = advance(old, outside, cleared, now, 0.0, place)
        count = state.outside_count
        if new.raised and phase is None:
            return state, NO_EVENTS  # raised and not cleared: nothing changes
        if outside:
            count += 1
            if count < self.samples:
                new, phase = withheld(new), None
        elif zone is True and shut is False and sample.mode not in INSPECTION_ONLY:
            # Armed by doors opened at a landing (`opened_at_landing`: the car at rest, or
            # the controller opening them while levelling); a car running through a zone
            # keeps what it had (one that stood there and drifts stays armed).
            count, zone_open = 0, zone_open or opened_at_landing(sample)
        else:
            count, zone_open = 0, False
        events: Sequence[Event] = NO_EVENTS
        if phase is not None:
            events = decided(
                EventType.UNINTENDED_MOVEMENT,
                phase,
                old,
                new,
                sample,
                now,
                coded(
                    f"car left the door zone with doors not closed ({count} samples)",
                    "left_zone_doors_open",
                    n=count,
                ),
                coded("doors closed or car standing in a door zone", "doors_closed_or_in_zone"),
            )
        if phase is Phase.CLEARED:
            return _UNINTENDED_START, events
        if new is old and zone_open is state.zone_open and count == state.outside_count:
            return state, events
        return UnintendedState(new, zone_open, count), events

    def blind(self, state: UnintendedState, now: float) -> UnintendedState:
        """See `rule.Rule.blind`: the arming and the count are forgotten too."""
        return UnintendedState(forget_pending(state.latch))


@dataclass(frozen=True, slots=True)
class RunTimeExceeded(LatchRule):
    """RUN_TIME_EXCEEDED as a `rule.Rule`: running continuously for ``hold_s``."""

    event_type: ClassVar[EventType] = EventType.RUN_TIME_EXCEEDED
    cleared_reason: ClassVar[Reason] = coded("car stopped", "car_stopped")
    hold_s: float

    def step(
        self, old: Latch, sample: CarState, now: float, since: float | None, power_out: bool
    ) -> tuple[Latch, Sequence[Event]]:
        """See `rule.Rule.step`."""
        run = running(sample)
        active = run is True and sample.mode not in FAULT_SUPPRESSED_MODES and not power_out
        return judged(self, old, sample, now, active, run is False, self.hold_s, since)

    def raised_reason(self, sample: CarState) -> Reason:
        """See `latch.Reasoned`."""
        return coded(
            f"running for {self.hold_s:g} s without stopping level",
            "run_time_exceeded",
            s=f"{self.hold_s:g}",
        )


@dataclass(frozen=True, slots=True)
class Overspeed(LatchRule):
    """OVERSPEED as a `rule.Rule`: ``speed_mm_s`` above ``factor`` x ``rated_mm_s`` for
    ``hold_s``; cleared at or below the rated speed. Without a rated speed it never runs."""

    event_type: ClassVar[EventType] = EventType.OVERSPEED
    cleared_reason: ClassVar[Reason] = coded("speed back within rated", "speed_normal")
    rated_mm_s: float | None
    factor: float
    hold_s: float

    def step(
        self, old: Latch, sample: CarState, now: float, since: float | None, power_out: bool
    ) -> tuple[Latch, Sequence[Event]]:
        """See `rule.Rule.step`."""
        rated = self.rated_mm_s
        speed = sample.speed_mm_s
        if rated is None or (speed is None and old.onset is None):
            return old, NO_EVENTS
        active = (
            sample.mode not in INSPECTION_ONLY and speed is not None and speed > rated * self.factor
        )
        clear = speed is not None and speed <= rated
        return judged(self, old, sample, now, active, clear, self.hold_s, since)

    def raised_reason(self, sample: CarState) -> Reason:
        """See `latch.Reasoned` (only raised with a rated speed)."""
        speed = sample.speed_mm_s
        return coded(
            f"speed {speed} mm/s above {self.factor:g} x rated {self.rated_mm_s:g} mm/s",
            "overspeed",
            speed=speed,
            factor=f"{self.factor:g}",
            rated=f"{self.rated_mm_s:g}",
        )


@dataclass(frozen=True, slots=True)
class Overtravel:
    """OVERTRAVEL_TOP (``up``) or OVERTRAVEL_BOTTOM as a `rule.Rule`: raised at once when
    the final limit reads operated or the car is beyond ``terminal`` moving outward,
    cleared when the final limit no longer reads operated and the car stands level at a
    landing (see the module doc). ``top`` is the top landing, which the bottom rule
    defers to when both are one floor; the reasons say which of the two raised."""

    event_type: EventType
    cleared_reason: ClassVar[Reason] = coded(
        "car level at a landing, final limit reset", "overtravel_reset"
    )
    up: bool
    terminal: int | None
    limit_reason: Reason
    beyond_reason: Reason
    top: int | None = None

    def start(self) -> OvertravelState:
        """See `rule.Rule.start`."""
        return _OVERTRAVEL_START

    def step(
        self,
        state: OvertravelState,
        sample: CarState,
        now: float,
        since: float | None,
        power_out: bool,
    ) -> tuple[OvertravelState, Sequence[Event]]:
        """See `rule.Rule.step`."""
        up = self.up
        final_limit = sample.up_final_limit if up else sample.down_final_limit
        # Where the car was last in a door zone and where it stood level at the terminal;
        # forgotten in inspection, where a mechanic drives the car (and the rule sleeps).
        watched = sample.mode not in INSPECTION_ONLY
        zone = sample.door_zone
        beyond = watched and (
            final_limit is True or (zone is False and _beyond(sample, state, self.terminal, up))
        )
        zone_floor, zone_position, level = state.zone_floor, state.zone_position, state.level
        floor, position = sample.floor, sample.position_mm
        if not watched:
            zone_floor = zone_position = None
        elif zone is True:
            zone_floor, zone_position = floor, position
        if (
            floor is not None
            and floor == self.terminal
            and position is not None
            and (up or floor != self.top)
            and sample.at_landing is True
            and running(sample) is not True
        ):
            level = position
        old = state.latch
        new: Latch = old
        events: Sequence[Event] = NO_EVENTS
        if beyond or old is not IDLE:  # an idle latch with nothing beyond stays idle
            clear = final_limit is not True and sample.at_landing is True
            new, events = judged(self, old, sample, now, beyond, clear, 0.0)
        if (
            new is old
            and zone_floor == state.zone_floor
            and zone_position == state.zone_position
            and level == state.level
        ):
            return state, events
        return OvertravelState(new, zone_floor, zone_position, level), events

    def raised_reason(self, sample: CarState) -> Reason:
        """See `latch.Reasoned`: the final limit, else the car beyond the terminal."""
        final_limit = sample.up_final_limit if self.up else sample.down_final_limit
        return self.limit_reason if final_limit else self.beyond_reason

    def blind(self, state: OvertravelState, now: float) -> OvertravelState:
        """See `rule.Rule.blind`: the last door zone is forgotten too (the car may have
        moved unseen); the learned level position is kept."""
        return OvertravelState(forget_pending(state.latch), level=state.level)


@dataclass(frozen=True, slots=True)
class PositionLost(LatchRule):
    """POSITION_LOST as a `rule.Rule`: ``floor`` outside ``bottom``..``top``, raised at
    once; without both landings it never runs."""

    event_type: ClassVar[EventType] = EventType.POSITION_LOST
    cleared_reason: ClassVar[Reason] = coded("floor in range again", "floor_in_range")
    top: int | None
    bottom: int | None

    def step(
        self, old: Latch, sample: CarState, now: float, since: float | None, power_out: bool
    ) -> tuple[Latch, Sequence[Event]]:
        """See `rule.Rule.step`."""
        top, bottom, floor = self.top, self.bottom, sample.floor
        if top is None or bottom is None or floor is None:
            return old, NO_EVENTS
        impossible = not bottom <= floor <= top
        if old is IDLE and not impossible:
            return old, NO_EVENTS  # the floor is in range and nothing is raised
        watched = sample.mode not in FAULT_SUPPRESSED_MODES and not power_out
        return judged(self, old, sample, now, watched and impossible, not impossible, 0.0)

    def raised_reason(self, sample: CarState) -> Reason:
        """See `latch.Reasoned`."""
        floor, bottom, top = sample.floor, self.bottom, self.top
        return coded(
            f"floor {floor} outside landings {bottom}..{top}",
            "floor_out_of_range",
            floor=floor,
            bottom=bottom,
            top=top,
        )


def _rules(config: MotionConfig) -> NamedRules:
    return (
        ("stopped_outside", StoppedOutsideDoorZone(config.stopped_outside_door_zone_s)),
        ("levelling", LevellingFault(config.levelling_fault_s)),
        ("unintended", UnintendedMovement(config.unintended_movement_samples)),
        ("run_time", RunTimeExceeded(config.run_time_limit_s)),
        (
            "overspeed",
            Overspeed(config.rated_speed_mm_s, config.overspeed_factor, config.overspeed_s),
        ),
        (
            "over_top",
            Overtravel(
                EventType.OVERTRAVEL_TOP,
                True,
                config.top_landing,
                coded("up final limit operated", "final_limit_up"),
                coded("beyond the top landing", "beyond_top"),
            ),
        ),
        (
            "over_bottom",
            Overtravel(
                EventType.OVERTRAVEL_BOTTOM,
                False,
                config.bottom_landing,
                coded("down final limit operated", "final_limit_down"),
                coded("beyond the bottom landing", "beyond_bottom"),
                config.top_landing,
            ),
        ),
        ("position_lost", PositionLost(config.top_landing, config.bottom_landing)),
    )


def blind(state: MotionState, now: float) -> MotionState:
    """The controller link is down at ``now``: forget pending onsets, sample counts and the
    last door zone (the car may have moved unseen); keep raised events and the learned
    terminal level positions. Emits nothing.
    """
    return blind_all(_rules(MotionConfig()), state, now)


def rules(config: DetectionConfig) -> NamedRules:
    """The family's rules for a unit with ``config``, in the order they run."""
    return _rules(MotionConfig.from_detection(config))
