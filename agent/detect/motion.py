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

from dataclasses import dataclass

from agent.detect.events import Event, EventType, Phase
from agent.detect.latch import (
    FAULT_SUPPRESSED_MODES,
    IDLE,
    INSPECTION_ONLY,
    Latch,
    advance,
    closed_and_locked,
    event,
    forget_pending,
    opened_at_landing,
    running,
)
from agent.state import CarState, Direction, ServiceMode

#: Modes in which STOPPED_OUTSIDE_DOOR_ZONE is watched.
STOPPED_OUTSIDE_MODES = frozenset({ServiceMode.NORMAL, ServiceMode.UNKNOWN})


@dataclass(frozen=True, slots=True)
class MotionConfig:
    """Thresholds of the motion rules; None landings or rated speed switch rules off."""

    stopped_outside_door_zone_s: float = 15.0
    levelling_fault_s: float = 5.0
    unintended_movement_samples: int = 2
    run_time_limit_s: float = 60.0
    overspeed_factor: float = 1.15
    overspeed_s: float = 0.1
    rated_speed_mm_s: float | None = None
    top_landing: int | None = None
    bottom_landing: int | None = None


@dataclass(frozen=True, slots=True)
class MotionState:
    """Detector memory for one car's motion rules.

    ``zone_open`` is True while the car stood in the door zone with its doors not closed
    (UNINTENDED_MOVEMENT is armed) and ``outside_count`` counts the samples outside since.
    ``zone_floor``/``zone_position`` are the floor and position of the last sample in a
    door zone; ``top_level``/``bottom_level`` the position at which the car last stood
    level at the top (bottom) landing.
    """

    stopped_outside: Latch = IDLE
    levelling: Latch = IDLE
    unintended: Latch = IDLE
    zone_open: bool = False
    outside_count: int = 0
    run_time: Latch = IDLE
    overspeed: Latch = IDLE
    over_top: Latch = IDLE
    over_bottom: Latch = IDLE
    zone_floor: int | None = None
    zone_position: int | None = None
    position_lost: Latch = IDLE
    top_level: int | None = None
    bottom_level: int | None = None


def _past(position: int, reference: int, up: bool) -> bool:
    return position > reference if up else position < reference


def _beyond(
    sample: CarState, state: MotionState, terminal: int | None, level: int | None, up: bool
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
    return MotionRules(config).step(state, sample, now, since, power_out)


def _stopped_rules(
    state: MotionState,
    sample: CarState,
    now: float,
    config: MotionConfig,
    since: float | None,
    watched: bool,
    run: bool | None,
    shut: bool | None,
    at_landing: bool | None,
    events: list[Event],
) -> tuple[Latch, Latch]:
    """STOPPED_OUTSIDE_DOOR_ZONE and LEVELLING_FAULT: the car at rest outside the door
    zone with closed doors, or inside it off level (see the module doc)."""
    zone = sample.door_zone
    old = state.stopped_outside
    stopped_outside, phase = advance(
        old,
        watched and run is False and zone is False and shut is True,
        run is True or zone is True,
        now,
        config.stopped_outside_door_zone_s,
        at_landing,
        since,
    )
    if phase is not None:
        reason = (
            f"stopped outside the door zone with doors closed for "
            f"{config.stopped_outside_door_zone_s:g} s"
            if phase is Phase.RAISED
            else "car runs or stands in the door zone again"
        )
        events.append(
            event(
                EventType.STOPPED_OUTSIDE_DOOR_ZONE,
                phase,
                old,
                stopped_outside,
                sample,
                now,
                reason,
            )
        )
    old = state.levelling
    levelling, phase = advance(
        old,
        watched and run is False and zone is True and sample.levelled is False,
        sample.levelled is True or zone is False,
        now,
        config.levelling_fault_s,
        at_landing,
        since,
    )
    if phase is not None:
        reason = (
            f"stopped in the door zone off level for {config.levelling_fault_s:g} s"
            if phase is Phase.RAISED
            else "car levelled or left the door zone"
        )
        events.append(event(EventType.LEVELLING_FAULT, phase, old, levelling, sample, now, reason))
    return stopped_outside, levelling


def _unintended_movement(
    state: MotionState,
    sample: CarState,
    now: float,
    config: MotionConfig,
    watched: bool,
    run: bool | None,
    shut: bool | None,
    events: list[Event],
) -> tuple[Latch, bool, int]:
    """UNINTENDED_MOVEMENT: ``(latch, zone_open, outside_count)`` after ``sample``.

    Not `latch.advance`: it counts samples outside the zone, not seconds, and is armed
    only by doors opened at a landing (see the module doc)."""
    unintended = state.unintended
    zone_open = state.zone_open
    outside_count = state.outside_count
    zone = sample.door_zone
    if unintended.raised:
        if shut is True or (zone is True and run is not True):
            events.append(
                Event(
                    EventType.UNINTENDED_MOVEMENT,
                    Phase.CLEARED,
                    unintended.onset if unintended.onset is not None else now,
                    now,
                    sample.floor,
                    "doors closed or car standing in a door zone",
                    at_landing=unintended.at_landing,
                )
            )
            unintended, zone_open, outside_count = IDLE, False, 0
    elif not watched or shut is not False:
        unintended, zone_open, outside_count = IDLE, False, 0
    elif zone is True:
        # Armed by doors opened at a landing (`opened_at_landing`: the car at rest, or the
        # controller opening them while levelling); a car running through a zone keeps
        # what it had (one that stood there and drifts stays armed).
        unintended, outside_count = IDLE, 0
        zone_open = zone_open or opened_at_landing(sample)
    elif zone is False and zone_open:
        outside_count += 1
        onset = unintended.onset if unintended.onset is not None else now
        if outside_count >= config.unintended_movement_samples:
            place = unintended.at_landing if unintended.onset is not None else sample.at_landing
            unintended = Latch(onset, True, place)
            events.append(
                Event(
                    EventType.UNINTENDED_MOVEMENT,
                    Phase.RAISED,
                    onset,
                    now,
                    sample.floor,
                    f"car left the door zone with doors not closed ({outside_count} samples)",
                    at_landing=place,
                )
            )
        elif unintended.onset is None:
            unintended = Latch(onset, False, sample.at_landing)
    else:
        unintended, zone_open, outside_count = IDLE, False, 0
    return unintended, zone_open, outside_count


def _run_rules(
    state: MotionState,
    sample: CarState,
    now: float,
    config: MotionConfig,
    since: float | None,
    watched: tuple[bool, bool],
    run: bool | None,
    at_landing: bool | None,
    events: list[Event],
) -> tuple[Latch, Latch]:
    """RUN_TIME_EXCEEDED and OVERSPEED (see the module doc); ``watched`` is whether the
    fault rules and the safety rules are watched."""
    faults_watched, safety_watched = watched
    old = state.run_time
    run_time, phase = advance(
        old,
        faults_watched and run is True,
        run is False,
        now,
        config.run_time_limit_s,
        at_landing,
        since,
    )
    if phase is not None:
        reason = (
            f"running for {config.run_time_limit_s:g} s without stopping level"
            if phase is Phase.RAISED
            else "car stopped"
        )
        events.append(event(EventType.RUN_TIME_EXCEEDED, phase, old, run_time, sample, now, reason))
    overspeed = state.overspeed
    rated = config.rated_speed_mm_s
    speed = sample.speed_mm_s
    if rated is not None and (speed is not None or overspeed.onset is not None):
        limit = rated * config.overspeed_factor
        old = overspeed
        overspeed, phase = advance(
            old,
            safety_watched and speed is not None and speed > limit,
            speed is not None and speed <= rated,
            now,
            config.overspeed_s,
            at_landing,
            since,
        )
        if phase is not None:
            reason = (
                f"speed {speed} mm/s above {config.overspeed_factor:g} x rated {rated:g} mm/s"
                if phase is Phase.RAISED
                else "speed back within rated"
            )
            events.append(event(EventType.OVERSPEED, phase, old, overspeed, sample, now, reason))
    return run_time, overspeed


def _position_rules(
    state: MotionState,
    sample: CarState,
    now: float,
    config: MotionConfig,
    watched: bool,
    faults_watched: bool,
    run: bool | None,
    at_landing: bool | None,
    events: list[Event],
) -> tuple[Latch, Latch, Latch, tuple[int | None, int | None, int | None, int | None]]:
    """The rules about where the car is: OVERTRAVEL_TOP and OVERTRAVEL_BOTTOM (``watched``
    outside inspection), POSITION_LOST (``faults_watched``), and the places the overtravel
    rules remember: ``(over_top, over_bottom, position_lost, (zone_floor, zone_position,
    top_level, bottom_level))``."""
    # Where the car was last in a door zone and where it stood level at each terminal;
    # forgotten in inspection, where a mechanic drives the car.
    zone_floor, zone_position = state.zone_floor, state.zone_position
    top_level, bottom_level = state.top_level, state.bottom_level
    top, bottom, floor = config.top_landing, config.bottom_landing, sample.floor
    over_top_now = watched and (
        sample.up_final_limit is True or _beyond(sample, state, top, top_level, True)
    )
    over_bottom_now = watched and (
        sample.down_final_limit is True or _beyond(sample, state, bottom, bottom_level, False)
    )
    if not watched:
        zone_floor = zone_position = None
    elif sample.door_zone is True:
        zone_floor, zone_position = floor, sample.position_mm
    position = sample.position_mm
    if at_landing is True and run is not True and position is not None and floor is not None:
        if floor == top:
            top_level = position
        elif floor == bottom:
            bottom_level = position
    # An idle latch with nothing beyond stays idle: `_terminal` only when there is more.
    over_top = state.over_top
    if over_top_now or over_top is not IDLE:
        over_top = _terminal(
            over_top,
            EventType.OVERTRAVEL_TOP,
            over_top_now,
            sample.up_final_limit,
            "up final limit operated",
            "beyond the top landing",
            sample,
            now,
            events,
        )
    over_bottom = state.over_bottom
    if over_bottom_now or over_bottom is not IDLE:
        over_bottom = _terminal(
            over_bottom,
            EventType.OVERTRAVEL_BOTTOM,
            over_bottom_now,
            sample.down_final_limit,
            "down final limit operated",
            "beyond the bottom landing",
            sample,
            now,
            events,
        )
    position_lost = state.position_lost
    if (
        top is not None
        and bottom is not None
        and floor is not None
        and (position_lost is not IDLE or not bottom <= floor <= top)
    ):
        # Otherwise the floor is in range and nothing is raised: nothing to do.
        position_lost = _position_lost(
            state, sample, now, config, faults_watched, at_landing, events
        )
    places = (zone_floor, zone_position, top_level, bottom_level)
    return over_top, over_bottom, position_lost, places


def _terminal(
    old: Latch,
    event_type: EventType,
    beyond: bool,
    final_limit: bool | None,
    limit_reason: str,
    beyond_reason: str,
    sample: CarState,
    now: float,
    events: list[Event],
) -> Latch:
    """One overtravel rule: raised at once when ``beyond``, cleared when its final limit no
    longer reads operated and the car stands level at a landing."""
    at_landing = sample.at_landing
    new, phase = advance(
        old, beyond, final_limit is not True and at_landing is True, now, 0.0, at_landing
    )
    if phase is not None:
        reason = (
            (limit_reason if final_limit else beyond_reason)
            if phase is Phase.RAISED
            else "car level at a landing, final limit reset"
        )
        events.append(event(event_type, phase, old, new, sample, now, reason))
    return new


def _position_lost(
    state: MotionState,
    sample: CarState,
    now: float,
    config: MotionConfig,
    watched: bool,
    at_landing: bool | None,
    events: list[Event],
) -> Latch:
    """POSITION_LOST: ``floor`` outside the configured landings (see the module doc)."""
    position_lost = state.position_lost
    top, bottom, floor = config.top_landing, config.bottom_landing, sample.floor
    if top is not None and bottom is not None and floor is not None:
        old = position_lost
        impossible = not bottom <= floor <= top
        position_lost, phase = advance(
            old, watched and impossible, not impossible, now, 0.0, at_landing
        )
        if phase is not None:
            reason = (
                f"floor {floor} outside landings {bottom}..{top}"
                if phase is Phase.RAISED
                else "floor in range again"
            )
            events.append(
                event(EventType.POSITION_LOST, phase, old, position_lost, sample, now, reason)
            )
    return position_lost


def blind(state: MotionState, now: float) -> MotionState:
    """The controller link is down at ``now``: forget pending onsets, sample counts and the
    last door zone (the car may have moved unseen); keep raised events and the learned
    terminal level positions. Emits nothing.
    """
    return MotionState(
        stopped_outside=forget_pending(state.stopped_outside),
        levelling=forget_pending(state.levelling),
        unintended=forget_pending(state.unintended),
        run_time=forget_pending(state.run_time),
        overspeed=forget_pending(state.overspeed),
        over_top=forget_pending(state.over_top),
        over_bottom=forget_pending(state.over_bottom),
        position_lost=forget_pending(state.position_lost),
        top_level=state.top_level,
        bottom_level=state.bottom_level,
    )


@dataclass(frozen=True, slots=True)
class MotionRules:
    """The motion rules as one `rule.Rule` for the engine."""

    config: MotionConfig

    def start(self) -> MotionState:
        """See `rule.Rule.start`."""
        return MotionState()

    def step(
        self, state: MotionState, sample: CarState, now: float, since: float | None, power_out: bool
    ) -> tuple[MotionState, list[Event]]:
        """See `rule.Rule.step` and the module doc; ``config`` is this rule's."""
        config = self.config
        events: list[Event] = []
        mode = sample.mode
        safety_watched = mode not in INSPECTION_ONLY
        run = running(sample)
        shut = closed_and_locked(sample)
        at_landing = sample.at_landing
        stopped_watched = mode in STOPPED_OUTSIDE_MODES and not power_out
        stopped_outside, levelling = state.stopped_outside, state.levelling
        idle = stopped_outside is IDLE and levelling is IDLE
        if not idle or (stopped_watched and run is False):  # else neither can start
            stopped_outside, levelling = _stopped_rules(
                state, sample, now, config, since, stopped_watched, run, shut, at_landing, events
            )
        unintended, zone_open, outside_count = state.unintended, state.zone_open, 0
        if unintended is not IDLE or zone_open or sample.door_zone is True:
            # Otherwise nothing is armed nor raised, and the sample arms nothing.
            unintended, zone_open, outside_count = _unintended_movement(
                state, sample, now, config, safety_watched, run, shut, events
            )
        faults_watched = mode not in FAULT_SUPPRESSED_MODES and not power_out
        watched = (faults_watched, safety_watched)
        run_time, overspeed = _run_rules(
            state, sample, now, config, since, watched, run, at_landing, events
        )
        over_top, over_bottom, position_lost, places = _position_rules(
            state, sample, now, config, safety_watched, faults_watched, run, at_landing, events
        )
        zone_floor, zone_position, top_level, bottom_level = places
        if (
            stopped_outside is state.stopped_outside
            and levelling is state.levelling
            and unintended is state.unintended
            and zone_open == state.zone_open
            and outside_count == state.outside_count
            and run_time is state.run_time
            and overspeed is state.overspeed
            and over_top is state.over_top
            and over_bottom is state.over_bottom
            and zone_floor == state.zone_floor
            and zone_position == state.zone_position
            and position_lost is state.position_lost
            and top_level == state.top_level
            and bottom_level == state.bottom_level
        ):
            return state, events
        return (
            MotionState(
                stopped_outside,
                levelling,
                unintended,
                zone_open,
                outside_count,
                run_time,
                overspeed,
                over_top,
                over_bottom,
                zone_floor,
                zone_position,
                position_lost,
                top_level,
                bottom_level,
            ),
            events,
        )

    def blind(self, state: MotionState, now: float) -> MotionState:
        """See `blind`."""
        return blind(state, now)
