"""Safety and door-lock circuit faults: SAFETY_CIRCUIT_OPEN (运行中安全回路断路, GB/T
24476-2017 code 1) and the regional extensions DOOR_OPEN_WHILE_MOVING (运行中开门) and
DOOR_LOCK_BYPASS (门锁回路短接).

Debounces count from the last sample that did not show the condition (`latch.advance`),
so each is raised within its threshold + one poll period of the fault showing, and never
on a single sample.

SAFETY_CIRCUIT_OPEN (debounce 0.15 s, ``safety_circuit_debounce_s``)
    The safety circuit reads open (``safety_circuit_closed`` False) on a running sample,
    or on the first sample after a running one, and stays open for the debounce. Only the
    first sample must be (or just have been) running: an opened safety circuit drops the
    brake, and a car braking at 1.5 m/s2 can be at rest before the next poll, so the
    opening is judged against the sample before it too.
    Onset is the first open sample. Cleared when the circuit is made again. Needs
    ``safety_circuit_closed`` and (``moving`` or ``speed_mm_s``).

DOOR_OPEN_WHILE_MOVING (debounce 0.1 s, ``door_open_while_moving_debounce_s``)
    The doors were closed and locked during the run (or before it, and not opened at a
    landing since), and on a running sample (or the first sample after one: an opened
    lock circuit stops the car) the door-lock circuit reads open or the door leaves
    CLOSED, and the doors stay not closed-and-locked for the debounce (the car may have
    stopped by then). Doors opened at a landing (the car at rest, or the controller
    opening them in the zone while levelling, `latch.opened_at_landing`) and then carried
    away by a moving car are UNINTENDED_MOVEMENT's (a brake slipping as the doors open),
    never this. Inside a door zone doors may legally start opening while the car levels
    or re-levels, but only at low speed (EN 81-20 5.12.1.4: advance opening and levelling
    with open doors at most 0.8 m/s), so the car is judged outside the door zone, and
    inside it when ``speed_mm_s`` reads above `latch.ADVANCE_OPENING_MAX_MM_S` (800
    mm/s): a door forced open as the car passes another landing's zone at speed is raised
    there. A door forced ajar (no opening command) in a zone at a lower speed stays
    pending and is raised once the car is judged. A car whose zone is unknown is not
    judged. Cleared when the doors are closed and locked. Needs ``door_zone``, (``moving``
    or ``speed_mm_s``) and (``door`` or ``door_lock_closed``).

DOOR_LOCK_BYPASS (2 s, ``door_lock_bypass_s``)
    The door-lock circuit reads made while a door reads anything but CLOSED (OPENING,
    OPEN, PARTLY_OPEN or CLOSING), continuously for T: a jumpered lock. A sound lock
    circuit is open whenever the doors are not closed (it breaks as they start to move
    and makes as they finish closing), so every door phase counts alike and the raise is
    T after the first sample that shows the lock made with the doors not closed, wherever
    in the door cycle the jumper went in (one fitted while the doors stood closed shows at
    the next opening). Near misses: the lock still made on the first OPENING sample
    (registers are read at one instant, the lock breaks a few tens of ms after the
    operator starts), made on the last CLOSING sample (it makes just before the operator
    reports CLOSED), or read from another slave a poll late; each lasts a sample or two,
    far under T, and the next CLOSED sample, or any sample with the lock open, ends the
    count. Keep T above two poll periods (0 raises on one sample). A jumper stays in, so
    the car closing its doors is no proof it is gone: the event clears only when a door
    reads not closed with the lock circuit open. Needs ``door`` and
    ``door_lock_closed``.

All three are suppressed in INSPECTION (where a mechanic may legitimately use a bypass
device and work the circuits) and STOPPED; SAFETY_CIRCUIT_OPEN and DOOR_OPEN_WHILE_MOVING
also while a mains failure explains them (``power_out``: both circuits lose their supply
and read open; `latch.POWER_EXPLAINED`). An event already raised stays raised until its
clearing condition. `blind` forgets pending onsets and keeps raised events.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.detect.events import Event, EventType, Phase
from agent.detect.latch import (
    ADVANCE_OPENING_MAX_MM_S,
    FAULT_SUPPRESSED_MODES,
    IDLE,
    Latch,
    advance,
    closed_and_locked,
    event,
    forget_pending,
    opened_at_landing,
    running,
)
from agent.state import CarState, DoorState

#: Door states in which a sound lock circuit is open: every state but CLOSED (and
#: UNKNOWN, which says nothing).
DOOR_NOT_CLOSED = frozenset(
    {DoorState.OPENING, DoorState.OPEN, DoorState.PARTLY_OPEN, DoorState.CLOSING}
)


@dataclass(frozen=True, slots=True)
class CircuitsConfig:
    """Debounces of the circuit rules, in seconds."""

    safety_circuit_debounce_s: float = 0.15
    door_open_while_moving_debounce_s: float = 0.1
    door_lock_bypass_s: float = 2.0


@dataclass(frozen=True, slots=True)
class CircuitsState:
    """Detector memory for one car's circuit rules. ``doors_shut`` is whether the doors
    were closed and locked since they were last opened at a landing
    (`latch.opened_at_landing`; a door opening while running only counts after they were
    shut)."""

    safety: Latch = IDLE
    door_moving: Latch = IDLE
    bypass: Latch = IDLE
    was_running: bool = False
    doors_shut: bool = False


_IDLE_STATE = CircuitsState()


def _judged_place(sample: CarState) -> bool:
    """Whether a door leaving closed here is not a legal levelling opening: outside the door
    zone, or inside it faster than `ADVANCE_OPENING_MAX_MM_S`."""
    zone = sample.door_zone
    if zone is False:
        return True
    speed = sample.speed_mm_s
    return zone is True and speed is not None and speed > ADVANCE_OPENING_MAX_MM_S


def step(
    state: CircuitsState,
    sample: CarState,
    now: float,
    config: CircuitsConfig,
    *,
    since: float | None = None,
    power_out: bool = False,
) -> tuple[CircuitsState, list[Event]]:
    """Advance the circuit rules by one sample taken at monotonic time ``now``.

    ``since`` is the previous sample's time (debounces count from it, see
    `latch.advance`); ``power_out`` whether a mains failure explains the circuits reading
    open (`latch.POWER_EXPLAINED`). Returns the new state (the same object when nothing
    changed) and the events decided on this sample, at most one per rule. ``now`` must not
    decrease. Never raises.
    """
    return CircuitsRules(config).step(state, sample, now, since, power_out)


def _door_open_while_moving(
    state: CircuitsState,
    sample: CarState,
    now: float,
    config: CircuitsConfig,
    since: float | None,
    watched: bool,
    run: bool | None,
    shut: bool | None,
    place: bool | None,
    events: list[Event],
) -> Latch:
    """DOOR_OPEN_WHILE_MOVING: doors that were shut leave closed and locked while running
    outside the door zone or at speed (see the module doc)."""
    old = state.door_moving
    door_moving, phase = advance(
        old,
        watched
        and shut is False
        and (
            old.onset is not None
            or (state.doors_shut and (run is True or state.was_running) and _judged_place(sample))
        ),
        shut is True,
        now,
        config.door_open_while_moving_debounce_s,
        place,
        since,
    )
    if phase is not None:
        reason = (
            "doors left closed and locked while running outside the door zone or at speed"
            if phase is Phase.RAISED
            else "doors closed and locked"
        )
        events.append(
            event(EventType.DOOR_OPEN_WHILE_MOVING, phase, old, door_moving, sample, now, reason)
        )
    return door_moving


def _door_lock_bypass(
    old: Latch,
    sample: CarState,
    now: float,
    config: CircuitsConfig,
    since: float | None,
    watched: bool,
    place: bool | None,
    events: list[Event],
) -> Latch:
    """DOOR_LOCK_BYPASS: the door-lock circuit made with a door open (see the module doc)."""
    door_open = sample.door in DOOR_NOT_CLOSED
    bypass, phase = advance(
        old,
        watched and door_open and sample.door_lock_closed is True,
        door_open and sample.door_lock_closed is False,
        now,
        config.door_lock_bypass_s,
        place,
        since,
    )
    if phase is not None:
        reason = (
            f"door-lock circuit made with a door open for {config.door_lock_bypass_s:g} s"
            if phase is Phase.RAISED
            else "door open with the lock circuit open"
        )
        events.append(event(EventType.DOOR_LOCK_BYPASS, phase, old, bypass, sample, now, reason))
    return bypass


def blind(state: CircuitsState, now: float) -> CircuitsState:
    """The controller link is down at ``now``: forget pending onsets, keep raised events.
    Emits nothing."""
    return CircuitsState(
        forget_pending(state.safety),
        forget_pending(state.door_moving),
        forget_pending(state.bypass),
        was_running=False,
        doors_shut=False,
    )


@dataclass(frozen=True, slots=True)
class CircuitsRules:
    """The circuit rules as one `rule.Rule` for the engine."""

    config: CircuitsConfig

    def start(self) -> CircuitsState:
        """See `rule.Rule.start`."""
        return CircuitsState()

    def step(
        self,
        state: CircuitsState,
        sample: CarState,
        now: float,
        since: float | None,
        power_out: bool,
    ) -> tuple[CircuitsState, list[Event]]:
        """See `rule.Rule.step` and the module doc; ``config`` is this rule's."""
        config = self.config
        events: list[Event] = []
        watched = sample.mode not in FAULT_SUPPRESSED_MODES
        powered_watch = watched and not power_out
        run = running(sample)
        place = sample.at_landing

        old = state.safety
        safety_open = sample.safety_circuit_closed is False
        safety, phase = advance(
            old,
            powered_watch
            and safety_open
            and (old.onset is not None or run is True or state.was_running),
            sample.safety_circuit_closed is True,
            now,
            config.safety_circuit_debounce_s,
            place,
            since,
        )
        if phase is not None:
            reason = (
                "safety circuit opened while running"
                if phase is Phase.RAISED
                else "safety circuit made again"
            )
            events.append(
                event(EventType.SAFETY_CIRCUIT_OPEN, phase, old, safety, sample, now, reason)
            )

        shut = closed_and_locked(sample)
        door_moving = state.door_moving
        if door_moving is not IDLE or shut is False:
            door_moving = _door_open_while_moving(
                state, sample, now, config, since, powered_watch, run, shut, place, events
            )
        bypass = state.bypass
        if bypass is not IDLE or sample.door in DOOR_NOT_CLOSED:
            # Otherwise nothing is pending or raised and no door is open: nothing to do.
            bypass = _door_lock_bypass(bypass, sample, now, config, since, watched, place, events)
        was_running = run is True
        # Shut doors arm DOOR_OPEN_WHILE_MOVING; doors opened at a landing (at rest, or by the
        # controller while levelling) disarm it: a car that then moves away with them open is
        # UNINTENDED_MOVEMENT's.
        doors_shut = state.doors_shut
        if shut is True:
            doors_shut = True
        elif shut is False and (run is not True or opened_at_landing(sample)):
            doors_shut = False
        if (
            safety is state.safety
            and door_moving is state.door_moving
            and bypass is state.bypass
            and was_running is state.was_running
            and doors_shut is state.doors_shut
        ):
            return state, events
        if (
            safety is IDLE
            and door_moving is IDLE
            and bypass is IDLE
            and not was_running
            and not doors_shut
        ):
            return _IDLE_STATE, events
        return CircuitsState(safety, door_moving, bypass, was_running, doors_shut), events

    def blind(self, state: CircuitsState, now: float) -> CircuitsState:
        """See `blind`."""
        return blind(state, now)
