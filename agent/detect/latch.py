"""The building block most rules share: a condition that must hold for a while to raise,
and a separate condition that clears what was raised.

A `Latch` is the memory of one rule on one car: ``onset`` is when the pending or raised
occurrence began, ``raised`` whether its RAISED phase was emitted. `advance` returns the
same object when nothing changed, so an idle car allocates nothing.

Hold times are counted from the last sample that did not show the condition (``since``,
which `UnitDetectors` passes as the previous sample's time, or one sample interval before
the current sample when the previous one is further back, a stalled poll): the condition
began at some moment after that sample, so a rule holding for T raises on the first sample
at least T after it, which is within T + one poll period of the moment the condition
began, for any T and any poll period. Counting from the first sample that shows it instead
would round T up to whole polls (a 150 ms debounce at 10 Hz took three samples, up to 300
ms). A hold above zero still needs at least two samples showing the condition, so a
one-sample blip never raises; for T below one poll period the bound is therefore two
polls. The event's ``onset`` stays the first sample that showed the condition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from agent.detect.events import Event, EventType, Phase
from agent.detect.reasons import Reason
from agent.detect.rule import NO_EVENTS
from agent.state import CarState, DoorState, ServiceMode

# Sample times come from a poll loop; a sample meant to land exactly on a threshold may
# carry float rounding of a few ulps, which must not push the event a whole period later.
TIME_SLACK = 1e-6

#: Modes in which fault rules do not run unless a rule says otherwise: a mechanic works
#: the car by hand (INSPECTION) or nobody rides it (STOPPED, out of service).
FAULT_SUPPRESSED_MODES = frozenset({ServiceMode.INSPECTION, ServiceMode.STOPPED})

#: Modes for rules that only make sense while a mechanic is not driving the car.
INSPECTION_ONLY = frozenset({ServiceMode.INSPECTION})

#: The rules a mains failure explains, suppressed while ``mains_ok`` reads False and for
#: `POWER_SETTLE_S` after it reads True again (docs/events.md, "Modes"): without mains the
#: doors cannot move, the car cannot run or re-level, the safety and lock circuits lose
#: their supply and read open, and the controller reports the loss in its own fault code
#: and may not know its position until a correction run. POWER_FAILURE is the verdict, and
#: ENTRAPMENT if someone is inside. Never suppressed: ENTRAPMENT and ALARM_BUTTON (a
#: person is shut in or calling, whatever the cause), UNINTENDED_MOVEMENT, OVERSPEED and
#: OVERTRAVEL_* (the car physically moved where it must not: a brake that slips without
#: power is still a brake failure), DOOR_LOCK_BYPASS (a lock that reads made with the
#: doors open is a jumper; an unpowered lock circuit reads open, the safe way).
POWER_EXPLAINED = frozenset(
    {
        EventType.DOOR_CLOSE_FAILURE,
        EventType.DOOR_OPEN_FAILURE,
        EventType.STOPPED_OUTSIDE_DOOR_ZONE,
        EventType.LEVELLING_FAULT,
        EventType.RUN_TIME_EXCEEDED,
        EventType.POSITION_LOST,
        EventType.RESTART_PREVENTED,
        EventType.SAFETY_CIRCUIT_OPEN,
        EventType.DOOR_OPEN_WHILE_MOVING,
        EventType.DOOR_REOPEN_LOOP,
        EventType.DOOR_HELD_OPEN,
        EventType.DOOR_SLOWING,
    }
)

#: After mains returns the controller re-initialises, finds its position (a correction
#: run) and re-levels; the rules in `POWER_EXPLAINED` start counting only once mains has
#: read OK this long, so a fault still there afterwards is raised with its full threshold
#: counted from then.
POWER_SETTLE_S = 10.0


@dataclass(frozen=True, slots=True)
class Latch:
    """One rule's memory: pending when ``onset`` is set and ``raised`` False.

    ``at_landing`` is where the car stood on the onset sample (`CarState.at_landing`), which
    every phase of the occurrence reports. ``since`` is the time the hold is counted from:
    the last sample before ``onset`` that did not show the condition, or ``onset`` itself
    when no such sample is known.
    """

    onset: float | None = None
    raised: bool = False
    at_landing: bool | None = None
    since: float | None = None


IDLE = Latch()


def advance(
    latch: Latch,
    active: bool,
    clear: bool,
    now: float,
    hold_s: float,
    at_landing: bool | None = None,
    since: float | None = None,
) -> tuple[Latch, Phase | None]:
    """Advance ``latch`` by one sample at ``now``.

    Raised: ``clear`` ends the occurrence (returns `IDLE` and CLEARED; the caller keeps the
    old latch for the onset); otherwise nothing changes. Not raised: ``active`` starts or
    continues the pending occurrence and raises it once it may have held for ``hold_s``:
    ``now`` is at least ``hold_s`` after the last sample that did not show it (``since``,
    the previous sample's time, given on the sample that starts the occurrence; None
    counts from that sample itself) and, for ``hold_s`` above 0, at least two samples have
    shown it (0 raises on the first active sample). Not ``active`` forgets it. Returns the
    same latch object when nothing changed. ``at_landing`` is the sample's place, kept
    when the occurrence starts.
    """
    if latch.raised:
        if clear:
            return IDLE, Phase.CLEARED
        return latch, None
    if not active:
        return IDLE, None
    onset = latch.onset
    if onset is None:
        onset = now
        start = since if since is not None and since < now else now
    else:
        at_landing = latch.at_landing
        start = latch.since if latch.since is not None else onset
    if now - start >= hold_s - TIME_SLACK and (hold_s <= 0.0 or now > onset):
        return Latch(onset, True, at_landing, start), Phase.RAISED
    if onset is latch.onset:
        return latch, None
    return Latch(onset, False, at_landing, start), None


def withheld(latch: Latch) -> Latch:
    """``latch``, which `advance` just raised, kept pending instead: for a rule whose RAISED
    also needs something besides the hold (a count reached, a de-duplication gate open),
    so that it raises on the first later sample that has it."""
    return Latch(latch.onset, False, latch.at_landing, latch.since)


def forget_pending(latch: Latch) -> Latch:
    """`latch` after a link outage: a pending onset is dropped, a raised one kept."""
    if latch.raised or latch.onset is None:
        return latch
    return IDLE


def event(
    event_type: EventType,
    phase: Phase,
    old: Latch,
    new: Latch,
    sample: CarState,
    now: float,
    reason: Reason,
) -> Event:
    """The event for a phase `advance` decided, with the onset of the occurrence and where
    the car stood then, and ``reason`` (its text, code and parameters)."""
    held = new if phase is Phase.RAISED else old
    onset = held.onset
    assert onset is not None  # a raised or clearing occurrence always carries its onset
    return Event(
        event_type,
        phase,
        onset,
        now,
        sample.floor,
        reason.text,
        at_landing=held.at_landing,
        reason_code=reason.code,
        reason_params=reason.params,
    )


def decided(
    event_type: EventType,
    phase: Phase,
    old: Latch,
    new: Latch,
    sample: CarState,
    now: float,
    raised_reason: Reason,
    cleared_reason: Reason,
) -> list[Event]:
    """The one event of a phase `advance` decided (see `event`), with ``raised_reason`` on
    a RAISED and ``cleared_reason`` on a CLEARED."""
    reason = raised_reason if phase is Phase.RAISED else cleared_reason
    return [event(event_type, phase, old, new, sample, now, reason)]


class Reasoned(Protocol):
    """What `judged` needs of a rule: the event type it decides, why an occurrence is
    raised and why it clears."""

    @property
    def event_type(self) -> EventType:
        """The event type the rule decides."""
        ...

    @property
    def cleared_reason(self) -> Reason:
        """Why an occurrence clears."""
        ...

    def raised_reason(self, sample: CarState) -> Reason:
        """Why the occurrence is raised on ``sample``."""
        ...


def judged(
    rule: Reasoned,
    old: Latch,
    sample: CarState,
    now: float,
    active: bool,
    clear: bool,
    hold_s: float,
    since: float | None = None,
) -> tuple[Latch, Sequence[Event]]:
    """One sample at ``now`` of a rule whose memory is one `Latch`: ``old`` advanced by
    `advance` (``active``, ``clear``, ``hold_s``, ``since`` as there; the place read from
    ``sample`` where an occurrence starts) and the event of the phase decided, of
    ``rule``'s type (`event`), else `rule.NO_EVENTS`. ``rule`` is asked why it raised
    only once it does: most samples decide nothing, and that reason is a sentence formatted
    from the rule's threshold or the sample."""
    if old is IDLE and not active:
        return old, NO_EVENTS  # as `advance` would decide: most samples of most rules
    place = sample.at_landing if active and old.onset is None else None
    new, phase = advance(old, active, clear, now, hold_s, place, since)
    if phase is None:
        return new, NO_EVENTS
    reason = rule.raised_reason(sample) if phase is Phase.RAISED else rule.cleared_reason
    return new, [event(rule.event_type, phase, old, new, sample, now, reason)]


class LatchRule:
    """What every rule whose memory is one `Latch` shares: it starts idle and forgets a
    pending onset on a link outage (`rule.Rule.start`, `rule.Rule.blind`)."""

    __slots__ = ()

    def start(self) -> Latch:
        """See `rule.Rule.start`."""
        return IDLE

    def blind(self, state: Latch, now: float) -> Latch:
        """See `rule.Rule.blind`."""
        return forget_pending(state)


def running(sample: CarState) -> bool | None:
    """Whether the car moves: ``moving``, else ``speed_mm_s > 0``; None if neither is read."""
    moving = sample.moving
    if moving is not None:
        return moving
    speed = sample.speed_mm_s
    if speed is None:
        return None
    return speed > 0


#: Above this speed a car in a door zone is not levelling: doors may open in the unlocking
#: zone only for levelling, re-levelling and advance opening, at most 0.8 m/s (EN 81-20
#: 5.12.1.4).
ADVANCE_OPENING_MAX_MM_S = 800


def opened_at_landing(sample: CarState) -> bool:
    """Whether ``sample`` shows doors opened the legal way at a landing: inside a door zone,
    the car at rest, or the controller opening them (``door`` OPENING or
    ``door_open_command``) at levelling speed (speed unknown or at most
    `ADVANCE_OPENING_MAX_MM_S`). Doors opened so that the car then leaves the zone are
    UNINTENDED_MOVEMENT's; doors leaving closed any other way while running (forced ajar,
    or opening at speed) are DOOR_OPEN_WHILE_MOVING's."""
    if sample.door_zone is not True:
        return False
    if running(sample) is not True:
        return True
    speed = sample.speed_mm_s
    if speed is not None and speed > ADVANCE_OPENING_MAX_MM_S:
        return False
    return sample.door is DoorState.OPENING or sample.door_open_command is True


def closed_and_locked(sample: CarState) -> bool | None:
    """Door CLOSED with the lock circuit not known open; without door state, the lock
    circuit made; None when neither is read."""
    door = sample.door
    if door is DoorState.CLOSED:
        return sample.door_lock_closed is not False
    if door is DoorState.UNKNOWN:
        return sample.door_lock_closed
    return False
