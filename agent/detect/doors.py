"""Door faults: DOOR_CLOSE_FAILURE (关门故障, GB/T 24476-2017 code 2) and DOOR_OPEN_FAILURE
(开门故障, code 3).

DOOR_CLOSE_FAILURE
    Rule: the doors are told to close and are not closed and locked within
    ``close_failure_s`` (default 20 s). "Told to close" is ``door_close_command``; a
    profile without that signal uses the door operator instead: the attempt starts when
    ``door`` reads CLOSING and lasts while it reads CLOSING or PARTLY_OPEN (a door that
    stalls half-way is still a failed close). "Closed and locked" is ``door`` CLOSED with
    the door-lock circuit not known to be open; with no door-state signals (``door``
    UNKNOWN) it is the lock circuit made. A door that reads closed while its lock circuit
    stays open has not closed: that is the common dirty-contact fault. ``onset`` is the
    first sample of the attempt; the attempt ends without an event when the command drops
    (or, without a command signal, when the door reopens) before the threshold.
    CLEARED when the doors are closed and locked.

    Degradation: without ``door_close_command`` the rule only sees attempts the operator
    reports as CLOSING, and a controller that reopens and retries restarts the clock (that
    pattern is DOOR_REOPEN_LOOP's). Without ``door_lock_closed`` a CLOSED door counts as
    locked. Without both ``door`` and ``door_lock_closed``, or without both
    ``door_close_command`` and ``door``, the rule cannot run and raises nothing.

DOOR_OPEN_FAILURE
    Rule: the car stands level at a landing (in the door zone, levelled, not moving),
    the doors are told to open and are not fully open within ``open_failure_s`` (default
    10 s; 5 s gave false alarms on site). "Told to open" is ``door_open_command``; without
    it, ``door`` reading OPENING starts the attempt and OPENING or PARTLY_OPEN continue it.
    CLEARED when the doors read fully OPEN.

    Degradation: without ``door_zone`` the car is never known to be level and nothing is
    raised. With no door-state signals (``door`` UNKNOWN) "fully open" is unknowable, so
    the rule falls back to "the door-lock circuit opened": it then only catches doors that
    never unlock, and needs ``door_open_command`` to know an opening was asked for.

Both rules are suppressed in INSPECTION and STOPPED (out of service), where a mechanic
works the doors by hand: no attempt starts or continues in those modes, though an event
already raised stays raised until its clearing condition. Every other mode, including
the fire modes and UNKNOWN, is watched. `blind` forgets pending attempts without raising
and keeps raised events raised.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.detect.events import Event, EventType, Phase
from agent.state import CarState, DoorState, ServiceMode

_TIME_SLACK = 1e-6  # see entrapment._TIME_SLACK

#: Modes in which the door rules do not run.
SUPPRESSED_MODES = frozenset({ServiceMode.INSPECTION, ServiceMode.STOPPED})

#: CarState fields each rule needs: one field out of each group must be readable.
CLOSE_REQUIRED_SIGNALS: tuple[frozenset[str], ...] = (
    frozenset({"door_close_command", "door"}),
    frozenset({"door", "door_lock_closed"}),
)
OPEN_REQUIRED_SIGNALS: tuple[frozenset[str], ...] = (
    frozenset({"door_zone"}),
    frozenset({"door_open_command", "door"}),
    frozenset({"door", "door_lock_closed"}),
)

_STILL_CLOSING = frozenset({DoorState.CLOSING, DoorState.PARTLY_OPEN})
_STILL_OPENING = frozenset({DoorState.OPENING, DoorState.PARTLY_OPEN})


@dataclass(frozen=True, slots=True)
class DoorsConfig:
    """Thresholds of the door rules, in seconds."""

    close_failure_s: float = 20.0
    open_failure_s: float = 10.0


@dataclass(frozen=True, slots=True)
class DoorsState:
    """Detector memory for one car's doors.

    ``close_onset``/``open_onset`` is the start of the pending (``*_raised`` False) or
    raised occurrence, or None when no attempt is under way.
    """

    close_onset: float | None = None
    close_raised: bool = False
    open_onset: float | None = None
    open_raised: bool = False


def _closed_and_locked(sample: CarState) -> bool | None:
    door = sample.door
    if door is DoorState.CLOSED:
        return sample.door_lock_closed is not False
    if door is DoorState.UNKNOWN:
        return sample.door_lock_closed
    return False


def _closing_attempt(sample: CarState, under_way: bool) -> bool:
    command = sample.door_close_command
    if command is not None:
        return command
    door = sample.door
    return door is DoorState.CLOSING or (under_way and door in _STILL_CLOSING)


def _fully_open(sample: CarState) -> bool | None:
    door = sample.door
    if door is DoorState.UNKNOWN:
        lock = sample.door_lock_closed
        return None if lock is None else not lock
    return door is DoorState.OPEN


def _opening_attempt(sample: CarState, under_way: bool) -> bool:
    command = sample.door_open_command
    if command is not None:
        return command
    door = sample.door
    return door is DoorState.OPENING or (under_way and door in _STILL_OPENING)


def _level(sample: CarState) -> bool:
    return sample.at_landing is True and sample.moving is not True


def step(
    state: DoorsState, sample: CarState, now: float, config: DoorsConfig
) -> tuple[DoorsState, list[Event]]:
    """Advance both door rules by one sample taken at monotonic time ``now``.

    Returns the new state (the same object when nothing changed) and the events decided
    on this sample: at most one per rule. ``now`` must not decrease between calls. Never
    raises for any CarState.
    """
    events: list[Event] = []
    watched = sample.mode not in SUPPRESSED_MODES

    close_onset = state.close_onset
    close_raised = state.close_raised
    if close_raised:
        if _closed_and_locked(sample) is True:
            assert close_onset is not None  # raised always carries its onset
            events.append(
                Event(
                    EventType.DOOR_CLOSE_FAILURE,
                    Phase.CLEARED,
                    close_onset,
                    now,
                    sample.floor,
                    "doors closed and locked",
                )
            )
            close_onset, close_raised = None, False
    elif (
        watched
        and _closed_and_locked(sample) is False
        and _closing_attempt(sample, close_onset is not None)
    ):
        if close_onset is None:
            close_onset = now
        if now - close_onset >= config.close_failure_s - _TIME_SLACK:
            events.append(
                Event(
                    EventType.DOOR_CLOSE_FAILURE,
                    Phase.RAISED,
                    close_onset,
                    now,
                    sample.floor,
                    f"doors told to close, not closed and locked after "
                    f"{config.close_failure_s:g} s",
                )
            )
            close_raised = True
    else:
        close_onset = None

    open_onset = state.open_onset
    open_raised = state.open_raised
    if open_raised:
        if _fully_open(sample) is True:
            assert open_onset is not None  # raised always carries its onset
            events.append(
                Event(
                    EventType.DOOR_OPEN_FAILURE,
                    Phase.CLEARED,
                    open_onset,
                    now,
                    sample.floor,
                    "doors fully open",
                )
            )
            open_onset, open_raised = None, False
    elif (
        watched
        and _level(sample)
        and _fully_open(sample) is False
        and _opening_attempt(sample, open_onset is not None)
    ):
        if open_onset is None:
            open_onset = now
        if now - open_onset >= config.open_failure_s - _TIME_SLACK:
            events.append(
                Event(
                    EventType.DOOR_OPEN_FAILURE,
                    Phase.RAISED,
                    open_onset,
                    now,
                    sample.floor,
                    f"doors told to open at a landing, not fully open after "
                    f"{config.open_failure_s:g} s",
                )
            )
            open_raised = True
    else:
        open_onset = None

    if (
        close_onset == state.close_onset
        and close_raised == state.close_raised
        and open_onset == state.open_onset
        and open_raised == state.open_raised
    ):
        return state, events
    return DoorsState(close_onset, close_raised, open_onset, open_raised), events


def blind(state: DoorsState, now: float) -> DoorsState:
    """The controller link is down at ``now``: forget pending attempts, keep raised events.

    Emits nothing: a link outage neither raises nor clears a door fault.
    """
    close_onset = state.close_onset if state.close_raised else None
    open_onset = state.open_onset if state.open_raised else None
    if close_onset == state.close_onset and open_onset == state.open_onset:
        return state
    return DoorsState(close_onset, state.close_raised, open_onset, state.open_raised)
