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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from agent.detect.config import DEFAULTS, DetectionConfig
from agent.detect.events import Event, EventType
from agent.detect.latch import (
    ADVANCE_OPENING_MAX_MM_S,
    FAULT_SUPPRESSED_MODES,
    IDLE,
    Latch,
    LatchRule,
    closed_and_locked,
    forget_pending,
    judged,
    opened_at_landing,
    running,
)
from agent.detect.reasons import Reason, coded
from agent.detect.rule import NO_EVENTS, NamedRules, blind_all, step_all
from agent.state import CarState, DoorState

#: Door states in which a sound lock circuit is open: every state but CLOSED (and
#: UNKNOWN, which says nothing).
DOOR_NOT_CLOSED = frozenset(
    {DoorState.OPENING, DoorState.OPEN, DoorState.PARTLY_OPEN, DoorState.CLOSING}
)


@dataclass(frozen=True, slots=True)
class CircuitsConfig:
    """Debounces of the circuit rules, in seconds; the defaults are `DetectionConfig`'s."""

    safety_circuit_debounce_s: float = DEFAULTS.safety_circuit_debounce_s
    door_open_while_moving_debounce_s: float = DEFAULTS.door_open_while_moving_debounce_s
    door_lock_bypass_s: float = DEFAULTS.door_lock_bypass_s

    @classmethod
    def from_detection(cls, config: DetectionConfig) -> CircuitsConfig:
        """The circuit rules' view of a unit's thresholds."""
        return cls(
            safety_circuit_debounce_s=config.safety_circuit_debounce_s,
            door_open_while_moving_debounce_s=config.door_open_while_moving_debounce_s,
            door_lock_bypass_s=config.door_lock_bypass_s,
        )


@dataclass(frozen=True, slots=True)
class SafetyState:
    """SAFETY_CIRCUIT_OPEN's memory: the occurrence, and whether the previous sample was
    running (an opened circuit may have stopped the car by the next poll)."""

    latch: Latch = IDLE
    was_running: bool = False


@dataclass(frozen=True, slots=True)
class DoorMovingState:
    """DOOR_OPEN_WHILE_MOVING's memory: the occurrence, whether the previous sample was
    running, and ``doors_shut``: whether the doors were closed and locked since they were
    last opened at a landing (`latch.opened_at_landing`; a door opening while running
    only counts after they were shut)."""

    latch: Latch = IDLE
    was_running: bool = False
    doors_shut: bool = False


_SAFETY_START = SafetyState()
_DOOR_MOVING_START = DoorMovingState()


@dataclass(frozen=True, slots=True)
class CircuitsState:
    """Detector memory for one car's circuit rules: each rule's own."""

    safety: SafetyState = _SAFETY_START
    door_moving: DoorMovingState = _DOOR_MOVING_START
    bypass: Latch = IDLE


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
    return step_all(_rules(config), state, sample, now, since, power_out)


@dataclass(frozen=True, slots=True)
class SafetyCircuitOpen:
    """SAFETY_CIRCUIT_OPEN as a `rule.Rule`: the safety circuit opened on a running sample
    (or the first after one) and open for ``debounce_s`` (see the module doc)."""

    event_type: ClassVar[EventType] = EventType.SAFETY_CIRCUIT_OPEN
    cleared_reason: ClassVar[Reason] = coded("safety circuit made again", "safety_made")
    debounce_s: float

    def start(self) -> SafetyState:
        """See `rule.Rule.start`."""
        return _SAFETY_START

    def step(
        self, state: SafetyState, sample: CarState, now: float, since: float | None, power_out: bool
    ) -> tuple[SafetyState, Sequence[Event]]:
        """See `rule.Rule.step`."""
        old = state.latch
        run = running(sample) is True
        closed = sample.safety_circuit_closed
        active = (
            closed is False
            and (old.onset is not None or run or state.was_running)
            and sample.mode not in FAULT_SUPPRESSED_MODES
            and not power_out
        )
        new, events = judged(self, old, sample, now, active, closed is True, self.debounce_s, since)
        if new is old and run is state.was_running:
            return state, events
        return SafetyState(new, run), events

    def raised_reason(self, sample: CarState) -> Reason:
        """See `latch.Reasoned`."""
        return coded("safety circuit opened while running", "safety_open_running")

    def blind(self, state: SafetyState, now: float) -> SafetyState:
        """See `rule.Rule.blind`: the previous sample is forgotten too."""
        return SafetyState(forget_pending(state.latch))


@dataclass(frozen=True, slots=True)
class DoorOpenWhileMoving:
    """DOOR_OPEN_WHILE_MOVING as a `rule.Rule`: doors that were shut leave closed and
    locked while running outside the door zone or at speed, for ``debounce_s`` (see the
    module doc)."""

    event_type: ClassVar[EventType] = EventType.DOOR_OPEN_WHILE_MOVING
    cleared_reason: ClassVar[Reason] = coded("doors closed and locked", "doors_closed_locked")
    debounce_s: float

    def start(self) -> DoorMovingState:
        """See `rule.Rule.start`."""
        return _DOOR_MOVING_START

    def step(
        self,
        state: DoorMovingState,
        sample: CarState,
        now: float,
        since: float | None,
        power_out: bool,
    ) -> tuple[DoorMovingState, Sequence[Event]]:
        """See `rule.Rule.step`."""
        run = running(sample)
        shut = closed_and_locked(sample)
        old = state.latch
        new: Latch = old
        events: Sequence[Event] = NO_EVENTS
        if old is not IDLE or shut is False:  # else nothing pending, raised or starting
            active = (
                shut is False
                and (
                    old.onset is not None
                    or (
                        state.doors_shut
                        and (run is True or state.was_running)
                        and _judged_place(sample)
                    )
                )
                and sample.mode not in FAULT_SUPPRESSED_MODES
                and not power_out
            )
            new, events = judged(
                self, old, sample, now, active, shut is True, self.debounce_s, since
            )
        was_running = run is True
        # Shut doors arm the rule; doors opened at a landing (at rest, or by the controller
        # while levelling) disarm it: a car that then moves away with them open is
        # UNINTENDED_MOVEMENT's.
        doors_shut = state.doors_shut
        if shut is True:
            doors_shut = True
        elif shut is False and (run is not True or opened_at_landing(sample)):
            doors_shut = False
        if new is old and was_running is state.was_running and doors_shut is state.doors_shut:
            return state, events
        return DoorMovingState(new, was_running, doors_shut), events

    def raised_reason(self, sample: CarState) -> Reason:
        """See `latch.Reasoned`."""
        return coded(
            "doors left closed and locked while running outside the door zone or at speed",
            "doors_unlocked_running",
        )

    def blind(self, state: DoorMovingState, now: float) -> DoorMovingState:
        """See `rule.Rule.blind`: the previous sample and the doors' arming are forgotten
        too."""
        return DoorMovingState(forget_pending(state.latch))


@dataclass(frozen=True, slots=True)
class DoorLockBypass(LatchRule):
    """DOOR_LOCK_BYPASS as a `rule.Rule`: the door-lock circuit made with a door open for
    ``hold_s`` (see the module doc)."""

    event_type: ClassVar[EventType] = EventType.DOOR_LOCK_BYPASS
    cleared_reason: ClassVar[Reason] = coded(
        "door open with the lock circuit open", "lock_open_door_open"
    )
    hold_s: float

    def step(
        self, old: Latch, sample: CarState, now: float, since: float | None, power_out: bool
    ) -> tuple[Latch, Sequence[Event]]:
        """See `rule.Rule.step`."""
        door_open = sample.door in DOOR_NOT_CLOSED
        if old is IDLE and not door_open:
            return old, NO_EVENTS  # nothing pending or raised and no door open
        lock = sample.door_lock_closed
        active = door_open and lock is True and sample.mode not in FAULT_SUPPRESSED_MODES
        clear = door_open and lock is False
        return judged(self, old, sample, now, active, clear, self.hold_s, since)

    def raised_reason(self, sample: CarState) -> Reason:
        """See `latch.Reasoned`."""
        return coded(
            f"door-lock circuit made with a door open for {self.hold_s:g} s",
            "lock_made_door_open",
            s=f"{self.hold_s:g}",
        )


def _rules(config: CircuitsConfig) -> NamedRules:
    return (
        ("safety", SafetyCircuitOpen(config.safety_circuit_debounce_s)),
        ("door_moving", DoorOpenWhileMoving(config.door_open_while_moving_debounce_s)),
        ("bypass", DoorLockBypass(config.door_lock_bypass_s)),
    )


def blind(state: CircuitsState, now: float) -> CircuitsState:
    """The controller link is down at ``now``: forget pending onsets, keep raised events.
    Emits nothing."""
    return blind_all(_rules(CircuitsConfig()), state, now)


def rules(config: DetectionConfig) -> NamedRules:
    """The family's rules for a unit with ``config``, in the order they run."""
    return _rules(CircuitsConfig.from_detection(config))
