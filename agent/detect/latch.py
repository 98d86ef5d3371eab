"""The building block most rules share: a condition that must hold for a while to raise,
and a separate condition that clears what was raised.

A `Latch` is the memory of one rule on one car: ``onset`` is when the pending or raised
occurrence began, ``raised`` whether its RAISED phase was emitted. `advance` returns the
same object when nothing changed, so an idle car allocates nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.detect.events import Event, EventType, Phase
from agent.state import CarState, DoorState, ServiceMode

# Sample times come from a poll loop; a sample meant to land exactly on a threshold may
# carry float rounding of a few ulps, which must not push the event a whole period later.
TIME_SLACK = 1e-6

#: Modes in which fault rules do not run unless a rule says otherwise: a mechanic works
#: the car by hand (INSPECTION) or nobody rides it (STOPPED, out of service).
FAULT_SUPPRESSED_MODES = frozenset({ServiceMode.INSPECTION, ServiceMode.STOPPED})

#: Modes for rules that only make sense while a mechanic is not driving the car.
INSPECTION_ONLY = frozenset({ServiceMode.INSPECTION})


@dataclass(frozen=True, slots=True)
class Latch:
    """One rule's memory: pending when ``onset`` is set and ``raised`` False.

    ``at_landing`` is where the car stood on the onset sample (`CarState.at_landing`), which
    every phase of the occurrence reports.
    """

    onset: float | None = None
    raised: bool = False
    at_landing: bool | None = None


IDLE = Latch()


def advance(
    latch: Latch,
    active: bool,
    clear: bool,
    now: float,
    hold_s: float,
    at_landing: bool | None = None,
) -> tuple[Latch, Phase | None]:
    """Advance ``latch`` by one sample at ``now``.

    Raised: ``clear`` ends the occurrence (returns `IDLE` and CLEARED; the caller keeps the
    old latch for the onset); otherwise nothing changes. Not raised: ``active`` starts or
    continues the pending occurrence and raises it once it has held for ``hold_s``
    (0 raises on the first active sample); not ``active`` forgets it. Returns the same
    latch object when nothing changed. ``at_landing`` is the sample's place, kept when the
    occurrence starts.
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
    else:
        at_landing = latch.at_landing
    if now - onset >= hold_s - TIME_SLACK:
        return Latch(onset, True, at_landing), Phase.RAISED
    if onset is latch.onset:
        return latch, None
    return Latch(onset, False, at_landing), None


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
    reason: str,
) -> Event:
    """The event for a phase `advance` decided, with the onset of the occurrence and where
    the car stood then."""
    held = new if phase is Phase.RAISED else old
    onset = held.onset
    assert onset is not None  # a raised or clearing occurrence always carries its onset
    return Event(event_type, phase, onset, now, sample.floor, reason, at_landing=held.at_landing)


def running(sample: CarState) -> bool | None:
    """Whether the car moves: ``moving``, else ``speed_mm_s > 0``; None if neither is read."""
    moving = sample.moving
    if moving is not None:
        return moving
    speed = sample.speed_mm_s
    if speed is None:
        return None
    return speed > 0


def closed_and_locked(sample: CarState) -> bool | None:
    """Door CLOSED with the lock circuit not known open; without door state, the lock
    circuit made; None when neither is read."""
    door = sample.door
    if door is DoorState.CLOSED:
        return sample.door_lock_closed is not False
    if door is DoorState.UNKNOWN:
        return sample.door_lock_closed
    return False
