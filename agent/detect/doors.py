"""Door faults: DOOR_CLOSE_FAILURE (关门故障, GB/T 24476-2017 code 2) and DOOR_OPEN_FAILURE
(开门故障, code 3), run by `step`; and the nuisance door events DOOR_REOPEN_LOOP (反复开关门),
DOOR_HELD_OPEN (长时间开门) and the predictive DOOR_SLOWING, run by `watch_step`.

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
works the doors by hand, and while a mains failure explains them (``power_out``: doors
without power neither open nor close; `latch.POWER_EXPLAINED`): no attempt starts or
continues then, though an event already raised stays raised until its clearing condition.
Every other mode, including the fire modes and UNKNOWN, is watched. `blind` forgets
pending attempts without raising and keeps raised events raised.

DOOR_REOPEN_LOOP (60 s and 3 re-openings; ``door_reopen_loop_s``,
``door_reopen_loop_reopenings``)
    A door that keeps reopening at one landing, so that the car cannot leave, whatever
    its reopen cycle time. Within one stop (from the car ceasing to run until it runs
    again, or until its doors have stayed closed and locked for `REOPEN_SETTLED_S`, 10 s:
    a car that shut its doors and stays shut has ended the loop), every time the door
    starts opening (``door`` enters OPENING or OPEN from another state) after the stop's
    first opening is a re-opening. RAISED on the first sample at which the first
    re-opening is T old and at least N re-openings have happened, while the stop lasts;
    onset is the first re-opening. So a loop is raised T after it began (within a poll),
    at a 5 s reopen cycle as at a 20 s one. Counting from the first re-opening, not from
    the doors' first opening, keeps a passenger's dwell (DOOR_HELD_OPEN's business) out
    of it; N keeps out a stop in which a passenger held the doors once or twice and the
    doors then stood open. The loop must still be going on: a pending loop whose last
    re-opening is more than `REOPEN_GAP_FRACTION` of T old (30 s at the default) is over
    (the doors then just stand open: a passenger holding them, DOOR_HELD_OPEN's
    business), and a later re-opening starts a new one; cycles up to 30 s are still a
    loop, as 3 re-openings in a minute allow. A loop may close and lock the doors between
    re-openings (a stuck call button at the landing): that does not end it unless they
    stay shut for 10 s. CLEARED when the car runs or the doors have stayed closed and
    locked for 10 s. Suppressed in INSPECTION, STOPPED and FIREFIGHTER (firefighters work
    the doors by hand). Needs ``door`` (door-state signals) and (``moving`` or ``speed_mm_s``).

DOOR_HELD_OPEN (60 s, ``door_held_open_s``)
    In NORMAL mode, the car not running and not known to be outside the door zone, the
    doors not closed (OPEN, OPENING, CLOSING or PARTLY_OPEN; without door state, the lock
    circuit open) and the lift not trying to close them (no close attempt under way, as
    DOOR_CLOSE_FAILURE times them: the close command, or without it a CLOSING stroke) for
    T, counted from the last sample that did not show it. So the count restarts after
    each close attempt: doors that keep reversing are DOOR_REOPEN_LOOP's, doors that do
    not close when told are DOOR_CLOSE_FAILURE's, and neither is blamed on passengers;
    while either of those is raised at the stop DOOR_HELD_OPEN is not raised. A passenger
    holding the door for 15 s or a long lobby dwell under T raises nothing. CLEARED when
    the doors read closed or the car runs. Only NORMAL is watched: fire return,
    firefighter and emergency-power service park cars open on purpose; nor while a mains
    failure explains it (doors without power stay where they are). Needs ``mode`` and
    (``door`` or ``door_lock_closed``); without ``door_zone`` the car is assumed at a
    landing.

DOOR_SLOWING (predictive; p95 + 30 %, ``door_slowing_margin_percent``)
    Each full opening (CLOSED, OPENING, OPEN) and full closing (OPEN, CLOSING, CLOSED)
    time, taken in NORMAL or UNKNOWN mode with mains on, is compared with that direction's
    own baseline: the last ``door_slowing_baseline_cycles`` (500) times that were not
    slow. Once the baseline holds ``door_slowing_min_cycles`` (20), a time above its p95 x
    (1 + margin) is slow; ``door_slowing_cycles`` (3) slow cycles in a row raise, with the
    onset at the start of the first. Slow times never enter the baseline, so a failing
    door cannot make itself normal. CLEARED when every slow direction has done as many
    normal cycles in a row. A stroke that does not start at the opposite limit (a
    re-opening out of a closing stroke, a door moving again from PARTLY_OPEN) is not a
    stroke: it counts neither as normal nor as slow, does not break a slow streak and
    never enters the baseline. Needs ``door`` (door-state signals); the reason names the
    direction and the times.

The three nuisance events share a de-duplication window (``nuisance_dedup_s``, 600 s: no
new occurrence of a type is raised within it after the previous one cleared) and a cap
(``nuisance_daily_cap``, 10 RAISED per type in any rolling 24 h of monotonic time). An
occurrence held back stays pending and is raised, with its original onset, as soon as
window and cap allow while its condition still holds. Entrapment and alarms are never
held back. `watch_blind` forgets pending occurrences, the stop's count and an unfinished
door movement, and keeps raised events and the baselines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

from agent.detect import latch
from agent.detect.config import DEFAULTS, DetectionConfig
from agent.detect.events import Event, EventType, Phase
from agent.detect.latch import IDLE, TIME_SLACK, Latch, forget_pending
from agent.detect.reasons import Reason, coded
from agent.detect.rule import NO_EVENTS, NamedRules, blind_all, step_all
from agent.state import CarState, DoorState, ServiceMode

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
    """Thresholds of the door rules, in seconds; the defaults are `DetectionConfig`'s."""

    close_failure_s: float = DEFAULTS.door_close_failure_s
    open_failure_s: float = DEFAULTS.door_open_failure_s

    @classmethod
    def from_detection(cls, config: DetectionConfig) -> DoorsConfig:
        """The door faults' view of a unit's thresholds."""
        return cls(
            close_failure_s=config.door_close_failure_s, open_failure_s=config.door_open_failure_s
        )


@dataclass(frozen=True, slots=True)
class DoorsState:
    """Detector memory for one car's doors: the DOOR_CLOSE_FAILURE (``close``) and
    DOOR_OPEN_FAILURE (``open``) occurrences; an onset means an attempt is under way."""

    close: Latch = IDLE
    open: Latch = IDLE


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
    state: DoorsState,
    sample: CarState,
    now: float,
    config: DoorsConfig,
    *,
    power_out: bool = False,
) -> tuple[DoorsState, list[Event]]:
    """Advance both door rules by one sample taken at monotonic time ``now``.

    ``power_out``: a mains failure explains the doors not moving
    (`latch.POWER_EXPLAINED`). Returns the new state (the same object when nothing
    changed) and the events decided on this sample: at most one per rule. ``now`` must not
    decrease between calls. Never raises for any CarState.

    Both count from the first sample of the attempt (no ``since``): the attempt itself,
    a command or a door moving, is what starts the time.
    """
    return step_all(_fault_rules(config), state, sample, now, None, power_out)


@dataclass(frozen=True, slots=True)
class DoorCloseFailure(latch.LatchRule):
    """DOOR_CLOSE_FAILURE as a `rule.Rule`: told to close (or closing) and not closed and
    locked for ``close_failure_s``, counted from the attempt's first sample (see `step`)."""

    event_type: ClassVar[EventType] = EventType.DOOR_CLOSE_FAILURE
    cleared_reason: ClassVar[Reason] = coded("doors closed and locked", "doors_closed_locked")
    close_failure_s: float = DEFAULTS.door_close_failure_s

    def step(
        self, old: Latch, sample: CarState, now: float, since: float | None, power_out: bool
    ) -> tuple[Latch, Sequence[Event]]:
        """See `rule.Rule.step` (``since`` is not used: the attempt starts the time)."""
        attempt = _closing_attempt(sample, old.onset is not None)
        if old is IDLE and not attempt:
            return old, NO_EVENTS  # nothing pending or raised, and no attempt starts
        shut = latch.closed_and_locked(sample)
        active = attempt and shut is False and sample.mode not in SUPPRESSED_MODES and not power_out
        return latch.judged(self, old, sample, now, active, shut is True, self.close_failure_s)

    def raised_reason(self, sample: CarState) -> Reason:
        """See `latch.Reasoned`."""
        return coded(
            f"doors told to close, not closed and locked after {self.close_failure_s:g} s",
            "door_close_failure",
            s=f"{self.close_failure_s:g}",
        )


@dataclass(frozen=True, slots=True)
class DoorOpenFailure(latch.LatchRule):
    """DOOR_OPEN_FAILURE as a `rule.Rule`: told to open (or opening) level at a landing
    and not fully open for ``open_failure_s``, counted from the attempt's first sample."""

    event_type: ClassVar[EventType] = EventType.DOOR_OPEN_FAILURE
    cleared_reason: ClassVar[Reason] = coded("doors fully open", "doors_fully_open")
    open_failure_s: float = DEFAULTS.door_open_failure_s

    def step(
        self, old: Latch, sample: CarState, now: float, since: float | None, power_out: bool
    ) -> tuple[Latch, Sequence[Event]]:
        """See `rule.Rule.step` (``since`` is not used: the attempt starts the time)."""
        attempt = _opening_attempt(sample, old.onset is not None)
        if old is IDLE and not attempt:
            return old, NO_EVENTS  # nothing pending or raised, and no attempt starts
        active = (
            attempt
            and sample.mode not in SUPPRESSED_MODES
            and not power_out
            and _level(sample)
            and _fully_open(sample) is False
        )
        clear = old.raised and _fully_open(sample) is True
        return latch.judged(self, old, sample, now, active, clear, self.open_failure_s)

    def raised_reason(self, sample: CarState) -> Reason:
        """See `latch.Reasoned`."""
        return coded(
            f"doors told to open at a landing, not fully open after {self.open_failure_s:g} s",
            "door_open_failure",
            s=f"{self.open_failure_s:g}",
        )


def _fault_rules(config: DoorsConfig) -> NamedRules:
    return (
        ("close", DoorCloseFailure(config.close_failure_s)),
        ("open", DoorOpenFailure(config.open_failure_s)),
    )


_DEFAULT_FAULTS = DoorsConfig()


def blind(state: DoorsState, now: float) -> DoorsState:
    """The controller link is down at ``now``: forget pending attempts, keep raised events.

    Emits nothing: a link outage neither raises nor clears a door fault.
    """
    return blind_all(_fault_rules(_DEFAULT_FAULTS), state, now)


# ---------------------------------------------------------------------------------------
# Nuisance door events: DOOR_REOPEN_LOOP, DOOR_HELD_OPEN, DOOR_SLOWING.

#: A rolling "day" of monotonic time for the nuisance cap: the detectors have no calendar.
DAY_S = 86_400.0

#: Doors closed and locked this long end a stop's re-opening count (and a raised loop):
#: a loop that reopens after locking does so within a second or two, while a car whose
#: doors stay shut has stopped looping even if it has no call to leave on.
REOPEN_SETTLED_S = 10.0
# A pending DOOR_REOPEN_LOOP is over when its last re-opening is older than this share of
# door_reopen_loop_s: the doors stopped reversing and just stand open (a passenger holding
# them), so the loop must not be raised later as a lift fault with the old onset.
REOPEN_GAP_FRACTION = 0.5

#: Modes in which the re-opening loop is not watched.
REOPEN_SUPPRESSED_MODES = frozenset(
    {ServiceMode.INSPECTION, ServiceMode.STOPPED, ServiceMode.FIREFIGHTER}
)
#: Modes whose door times feed DOOR_SLOWING baselines and the health medians.
TIMED_MODES = frozenset({ServiceMode.NORMAL, ServiceMode.UNKNOWN})

REOPEN_REQUIRED_SIGNALS: tuple[frozenset[str], ...] = (
    frozenset({"door"}),
    frozenset({"moving", "speed_mm_s"}),
)
HELD_OPEN_REQUIRED_SIGNALS: tuple[frozenset[str], ...] = (
    frozenset({"mode"}),
    frozenset({"door", "door_lock_closed"}),
)
SLOWING_REQUIRED_SIGNALS: tuple[frozenset[str], ...] = (frozenset({"door"}),)

_OPENINGS = frozenset({DoorState.OPENING, DoorState.OPEN})
_NOT_CLOSED = frozenset(
    {DoorState.OPEN, DoorState.OPENING, DoorState.CLOSING, DoorState.PARTLY_OPEN}
)


@dataclass(frozen=True, slots=True)
class DoorWatchConfig:
    """Thresholds of the nuisance door events (seconds, counts, percent); the defaults
    are `DetectionConfig`'s."""

    reopen_loop_s: float = DEFAULTS.door_reopen_loop_s
    reopen_loop_reopenings: int = DEFAULTS.door_reopen_loop_reopenings
    held_open_s: float = DEFAULTS.door_held_open_s
    slowing_margin_percent: float = DEFAULTS.door_slowing_margin_percent
    slowing_baseline_cycles: int = DEFAULTS.door_slowing_baseline_cycles
    slowing_min_cycles: int = DEFAULTS.door_slowing_min_cycles
    slowing_cycles: int = DEFAULTS.door_slowing_cycles
    dedup_s: float = DEFAULTS.nuisance_dedup_s
    daily_cap: int = DEFAULTS.nuisance_daily_cap

    @classmethod
    def from_detection(cls, config: DetectionConfig) -> DoorWatchConfig:
        """The nuisance door events' view of a unit's thresholds."""
        return cls(
            reopen_loop_s=config.door_reopen_loop_s,
            reopen_loop_reopenings=config.door_reopen_loop_reopenings,
            held_open_s=config.door_held_open_s,
            slowing_margin_percent=config.door_slowing_margin_percent,
            slowing_baseline_cycles=config.door_slowing_baseline_cycles,
            slowing_min_cycles=config.door_slowing_min_cycles,
            slowing_cycles=config.door_slowing_cycles,
            dedup_s=config.nuisance_dedup_s,
            daily_cap=config.nuisance_daily_cap,
        )


@dataclass(frozen=True, slots=True)
class Gate:
    """De-duplication and cap memory of one nuisance event type."""

    last_clear: float | None = None
    raises: tuple[float, ...] = ()

    def allows(self, now: float, config: DoorWatchConfig) -> bool:
        """Whether a new occurrence may be RAISED at ``now``."""
        if self.last_clear is not None and now - self.last_clear < config.dedup_s:
            return False
        return sum(1 for t in self.raises if now - t < DAY_S) < config.daily_cap

    def raised(self, now: float) -> Gate:
        """This gate after a RAISED at ``now`` (raises older than a day are dropped)."""
        return Gate(self.last_clear, (*(t for t in self.raises if now - t < DAY_S), now))

    def cleared(self, now: float) -> Gate:
        """This gate after a CLEARED at ``now``."""
        return Gate(now, self.raises)


_OPEN_GATE = Gate()


def door_cycle(
    prev: DoorState, since: float | None, door: DoorState, now: float
) -> tuple[float | None, tuple[bool, float, float] | None]:
    """Time door movements from door-state transitions.

    ``since`` is when the current full OPENING (from CLOSED) or CLOSING (from OPEN) began
    (None otherwise). Returns the new ``since`` and, when this sample completes a full
    movement (CLOSED, OPENING, OPEN or OPEN, CLOSING, CLOSED), ``(opening, start,
    duration_s)``. A stroke that starts anywhere else (a re-opening out of a closing
    stroke, a door moving on from PARTLY_OPEN) is not timed: its time says nothing about
    the operator's speed. Call only when ``door`` differs from ``prev``.
    """
    if door is DoorState.OPENING:
        return (now if prev is DoorState.CLOSED else None), None
    if door is DoorState.CLOSING:
        return (now if prev is DoorState.OPEN else None), None
    if since is not None:
        if door is DoorState.OPEN and prev is DoorState.OPENING:
            return None, (True, since, now - since)
        if door is DoorState.CLOSED and prev is DoorState.CLOSING:
            return None, (False, since, now - since)
    return None, None


@dataclass(frozen=True, slots=True)
class Baseline:
    """One door direction's DOOR_SLOWING memory.

    ``times`` are the latest normal durations (seconds), ``limit`` the p95 x (1 + margin)
    once there are enough; ``slow_run``/``ok_run`` count slow and normal cycles in a row,
    ``slow_since`` is the start of the first slow cycle of the run, ``slow`` whether the
    direction counts as slowing.
    """

    times: tuple[float, ...] = ()
    p95: float | None = None
    limit: float | None = None
    slow_run: int = 0
    ok_run: int = 0
    slow_since: float | None = None
    slow: bool = False

    def after(self, start: float, duration: float, config: DoorWatchConfig) -> Baseline:
        """This baseline after one completed movement that began at ``start``."""
        if self.limit is not None and duration > self.limit:
            slow_since = self.slow_since if self.slow_since is not None else start
            slow_run = self.slow_run + 1
            slow = self.slow or slow_run >= config.slowing_cycles
            return Baseline(self.times, self.p95, self.limit, slow_run, 0, slow_since, slow)
        times = (*self.times, duration)
        if len(times) > config.slowing_baseline_cycles:
            times = times[len(times) - config.slowing_baseline_cycles :]
        p95 = limit = None
        if len(times) >= config.slowing_min_cycles:
            ordered = sorted(times)
            p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
            limit = p95 * (1.0 + config.slowing_margin_percent / 100.0)
        ok_run = self.ok_run + 1
        slow = self.slow and ok_run < config.slowing_cycles
        return Baseline(times, p95, limit, 0, ok_run, self.slow_since if slow else None, slow)


_EMPTY_BASELINE = Baseline()


@dataclass(frozen=True, slots=True)
class ReopenState:
    """DOOR_REOPEN_LOOP's memory: ``prev_door`` the previous sample's door, ``openings``
    the door openings in the current stop and ``last_opening`` when the latest began
    (None before one), ``shut_since`` when the doors last became closed and locked (None
    while they are not); ``loop`` the occurrence and ``gate`` its de-duplication."""

    prev_door: DoorState = DoorState.UNKNOWN
    openings: int = 0
    last_opening: float | None = None
    shut_since: float | None = None
    loop: Latch = IDLE
    gate: Gate = _OPEN_GATE


@dataclass(frozen=True, slots=True)
class HeldState:
    """DOOR_HELD_OPEN's memory: ``held`` the occurrence and ``gate`` its de-duplication;
    ``close`` and ``loop`` its own copies of DOOR_CLOSE_FAILURE's and DOOR_REOPEN_LOOP's
    memory, which say whether a close attempt is under way and a loop is raised."""

    held: Latch = IDLE
    gate: Gate = _OPEN_GATE
    close: Latch = IDLE
    loop: ReopenState = ReopenState()


@dataclass(frozen=True, slots=True)
class SlowingState:
    """DOOR_SLOWING's memory: ``prev_door``/``moving_since`` time door movements,
    ``opening``/``closing`` are the two directions' baselines, ``slowing`` the occurrence
    and ``gate`` its de-duplication."""

    prev_door: DoorState = DoorState.UNKNOWN
    moving_since: float | None = None
    opening: Baseline = _EMPTY_BASELINE
    closing: Baseline = _EMPTY_BASELINE
    slowing: Latch = IDLE
    gate: Gate = _OPEN_GATE


_REOPEN_START = ReopenState()
_HELD_START = HeldState()
_SLOWING_START = SlowingState()


@dataclass(frozen=True, slots=True)
class DoorWatchState:
    """Detector memory of the nuisance door events for one car: each rule's own."""

    reopen: ReopenState = _REOPEN_START
    held: HeldState = _HELD_START
    slowing: SlowingState = _SLOWING_START


def _held_open(sample: CarState) -> bool:
    door = sample.door
    if door is DoorState.UNKNOWN:
        return sample.door_lock_closed is False
    return door in _NOT_CLOSED


def _slowing_reason(opening: Baseline, closing: Baseline) -> Reason:
    parts = []
    slow: dict[str, str] = {}  # "opening"/"closing" -> its p95 in ms, as the text says
    for name, b in (("opening", opening), ("closing", closing)):
        if b.slow and b.p95 is not None:
            slow[name] = f"{b.p95 * 1000:.0f}"
            parts.append(f"{name} slower than p95 {slow[name]} ms + margin")
    text = "; ".join(parts) or "door slowing"
    if len(slow) == 2:
        return coded(text, "door_slowing_both", open_ms=slow["opening"], close_ms=slow["closing"])
    if "opening" in slow:
        return coded(text, "door_slowing_opening", ms=slow["opening"])
    if "closing" in slow:
        return coded(text, "door_slowing_closing", ms=slow["closing"])
    return coded(text, "door_slowing")


def watch_step(
    state: DoorWatchState,
    sample: CarState,
    now: float,
    config: DoorWatchConfig,
    *,
    since: float | None = None,
    power_out: bool = False,
    faults: DoorsConfig = _DEFAULT_FAULTS,
) -> tuple[DoorWatchState, list[Event]]:
    """Advance DOOR_REOPEN_LOOP, DOOR_HELD_OPEN and DOOR_SLOWING by one sample at ``now``.

    ``since`` is the previous sample's time (DOOR_HELD_OPEN counts from it);
    ``power_out`` whether a mains failure explains the doors (`latch.POWER_EXPLAINED`);
    ``faults`` the door faults' thresholds, with which DOOR_HELD_OPEN times close
    attempts. Returns the new state (the same object when nothing changed) and the events
    decided on this sample, at most one per event type. ``now`` must not decrease. Never
    raises.
    """
    return step_all(_watch_rules(config, faults), state, sample, now, since, power_out)


def _watch_rules(config: DoorWatchConfig, faults: DoorsConfig) -> NamedRules:
    loop = ReopenLoop(config)
    held = HeldOpen(config, DoorCloseFailure(faults.close_failure_s), loop)
    return (("reopen", loop), ("held", held), ("slowing", DoorSlowing(config)))


def _loop_openings(
    openings: int, last_opening: float | None, reopen: Latch, now: float, config: DoorWatchConfig
) -> int:
    """The stop's openings as DOOR_REOPEN_LOOP counts them: a loop not yet raised whose
    last re-opening is older than `REOPEN_GAP_FRACTION` of T has stopped, and the opening
    that stands becomes the stop's first (a later re-opening starts a new loop)."""
    if (
        openings >= 2
        and not reopen.raised
        and last_opening is not None
        and now - last_opening > config.reopen_loop_s * REOPEN_GAP_FRACTION
    ):
        return 1
    return openings


def _openings_after(prev_door: DoorState, door: DoorState, openings: int) -> int:
    """The stop's openings after the door went from ``prev_door`` to ``door``: one more
    when it started opening, 1 when it is seen opening with nothing known before."""
    if door in _OPENINGS:
        if prev_door is DoorState.UNKNOWN:
            return 1
        if prev_door not in _OPENINGS:
            return openings + 1
    return openings


@dataclass(frozen=True, slots=True)
class ReopenLoop:
    """DOOR_REOPEN_LOOP as a `rule.Rule`: two openings or more in one stop, raised once the
    loop has lasted its time with enough re-openings and the gate allows; cleared when the
    doors stay shut or the car runs (see the module doc)."""

    config: DoorWatchConfig

    def start(self) -> ReopenState:
        """See `rule.Rule.start`."""
        return _REOPEN_START

    def step(
        self, state: ReopenState, sample: CarState, now: float, since: float | None, power_out: bool
    ) -> tuple[ReopenState, Sequence[Event]]:
        """See `rule.Rule.step`."""
        prev_door, openings = state.prev_door, state.openings
        door = sample.door
        if door is prev_door and openings < 2 and state.loop is IDLE:
            return self._no_loop(state, sample, now, power_out), NO_EVENTS
        if door is not prev_door:
            openings = _openings_after(prev_door, door, openings)
            prev_door = door
        shut_since = state.shut_since
        if latch.closed_and_locked(sample) is not True:
            shut_since = None
        elif shut_since is None:
            shut_since = now
        settled = shut_since is not None and now - shut_since >= REOPEN_SETTLED_S - TIME_SLACK
        run = latch.running(sample)
        if run is True or sample.mode in REOPEN_SUPPRESSED_MODES or settled or power_out:
            openings = 0
        last_opening = now if openings > state.openings else state.last_opening
        loop, gate = state.loop, state.gate
        openings = _loop_openings(openings, last_opening, loop, now, self.config)
        events: Sequence[Event] = NO_EVENTS
        if openings >= 2 or loop is not IDLE:
            loop, gate, events = self._loop(
                loop, gate, sample, now, openings, settled or run is True
            )
        if (
            prev_door is state.prev_door
            and openings == state.openings
            and last_opening == state.last_opening
            and shut_since == state.shut_since
            and loop is state.loop
            and gate is state.gate
        ):
            return state, events
        return ReopenState(prev_door, openings, last_opening, shut_since, loop, gate), events

    def _no_loop(
        self, state: ReopenState, sample: CarState, now: float, power_out: bool
    ) -> ReopenState:
        """`step` where no loop is pending or raised, fewer than two openings are counted
        and the door has not changed: only the shut time and the stop's end may change."""
        shut_since = state.shut_since
        if latch.closed_and_locked(sample) is not True:
            shut_since = None
        elif shut_since is None:
            shut_since = now
        openings = state.openings
        if openings and (
            (shut_since is not None and now - shut_since >= REOPEN_SETTLED_S - TIME_SLACK)
            or power_out
            or sample.mode in REOPEN_SUPPRESSED_MODES
            or latch.running(sample) is True
        ):
            openings = 0
        if openings == state.openings and shut_since == state.shut_since:
            return state
        return ReopenState(
            state.prev_door, openings, state.last_opening, shut_since, IDLE, state.gate
        )

    def _loop(
        self, old: Latch, gate: Gate, sample: CarState, now: float, openings: int, ended: bool
    ) -> tuple[Latch, Gate, Sequence[Event]]:
        """The occurrence after ``sample``; ``ended`` whether the doors stayed shut or the
        car runs."""
        config = self.config
        active = openings >= 2
        place = sample.at_landing if active and old.onset is None else None
        new, phase = latch.advance(old, active, ended, now, config.reopen_loop_s, place)
        if phase is None:
            return new, gate, NO_EVENTS
        reopenings = openings - 1
        if phase is Phase.RAISED:
            if not (reopenings >= config.reopen_loop_reopenings and gate.allows(now, config)):
                return latch.withheld(new), gate, NO_EVENTS
            onset = new.onset
            assert onset is not None
            reason = coded(
                f"doors reopened {reopenings} times in {now - onset:.0f} s at one landing",
                "door_reopen_loop",
                n=reopenings,
                s=f"{now - onset:.0f}",
            )
            gate = gate.raised(now)
        else:
            reason = (
                coded("car runs", "car_runs")
                if latch.running(sample) is True
                else coded("doors stayed closed and locked", "doors_stayed_closed")
            )
            gate = gate.cleared(now)
        return (
            new,
            gate,
            [latch.event(EventType.DOOR_REOPEN_LOOP, phase, old, new, sample, now, reason)],
        )

    def blind(self, state: ReopenState, now: float) -> ReopenState:
        """See `rule.Rule.blind`: the stop's opening count is forgotten too."""
        return ReopenState(loop=forget_pending(state.loop), gate=state.gate)


@dataclass(frozen=True, slots=True)
class HeldOpen:
    """DOOR_HELD_OPEN as a `rule.Rule`: doors open at a landing in NORMAL, not running,
    with no close attempt (``close``, on its own copy of DOOR_CLOSE_FAILURE's memory) or
    raised re-opening loop (``loop``, likewise) under way, for T counted from ``since``
    and when the gate allows; cleared when the doors close or the car runs."""

    config: DoorWatchConfig
    close: DoorCloseFailure
    loop: ReopenLoop

    def start(self) -> HeldState:
        """See `rule.Rule.start`."""
        return _HELD_START

    def step(
        self, state: HeldState, sample: CarState, now: float, since: float | None, power_out: bool
    ) -> tuple[HeldState, Sequence[Event]]:
        """See `rule.Rule.step`."""
        # Its own copy of DOOR_CLOSE_FAILURE's memory: the events are that rule's to report.
        close, _ = self.close.step(state.close, sample, now, since, power_out)
        loop, _ = self.loop.step(state.loop, sample, now, since, power_out)
        old, gate = state.held, state.gate
        active = (
            sample.mode is ServiceMode.NORMAL
            and not power_out
            and close.onset is None
            and not loop.loop.raised
            and sample.door_zone is not False
            and _held_open(sample)
            and latch.running(sample) is not True
        )
        held: Latch = old
        events: Sequence[Event] = NO_EVENTS
        if old is not IDLE or active:  # else nothing pending or raised, and nothing starts
            held, gate, events = self._held(old, gate, sample, now, since, active)
        if held is old and gate is state.gate and close is state.close and loop is state.loop:
            return state, events
        return HeldState(held, gate, close, loop), events

    def _held(
        self,
        old: Latch,
        gate: Gate,
        sample: CarState,
        now: float,
        since: float | None,
        active: bool,
    ) -> tuple[Latch, Gate, Sequence[Event]]:
        """The occurrence after ``sample``: held for T counted from ``since`` and raised
        when the gate allows; cleared when the doors close or the car runs."""
        run = latch.running(sample)
        if old.raised:
            door = sample.door
            if door is not DoorState.UNKNOWN:
                closed = door is DoorState.CLOSED
            else:
                closed = latch.closed_and_locked(sample) is True
        else:
            closed = False  # only a raised occurrence clears
        place = sample.at_landing if active and old.onset is None else None
        config = self.config
        held, phase = latch.advance(
            old, active, closed or run is True, now, config.held_open_s, place, since
        )
        if phase is None:
            return held, gate, NO_EVENTS
        if phase is Phase.RAISED and not gate.allows(now, config):
            return latch.withheld(held), gate, NO_EVENTS
        gate = gate.raised(now) if phase is Phase.RAISED else gate.cleared(now)
        return (
            held,
            gate,
            latch.decided(
                EventType.DOOR_HELD_OPEN,
                phase,
                old,
                held,
                sample,
                now,
                coded(
                    f"doors open at a landing for {config.held_open_s:g} s",
                    "door_held_open",
                    s=f"{config.held_open_s:g}",
                ),
                coded("doors closed", "doors_closed")
                if run is not True
                else coded("car runs", "car_runs"),
            ),
        )

    def blind(self, state: HeldState, now: float) -> HeldState:
        """See `rule.Rule.blind`."""
        return HeldState(
            forget_pending(state.held),
            state.gate,
            self.close.blind(state.close, now),
            self.loop.blind(state.loop, now),
        )


@dataclass(frozen=True, slots=True)
class DoorSlowing:
    """DOOR_SLOWING as a `rule.Rule`: raised as soon as a direction counts as slowing and
    the gate allows, with the onset of its first slow cycle; cleared when neither
    direction is slow. Not a timed hold (`latch.advance`): the baselines already counted
    the cycles, and the onset lies cycles back, before the sample that raises."""

    config: DoorWatchConfig

    def start(self) -> SlowingState:
        """See `rule.Rule.start`."""
        return _SLOWING_START

    def step(
        self,
        state: SlowingState,
        sample: CarState,
        now: float,
        since: float | None,
        power_out: bool,
    ) -> tuple[SlowingState, Sequence[Event]]:
        """See `rule.Rule.step`: a completed full movement (in `TIMED_MODES`, with mains)
        is counted in its direction's baseline."""
        config = self.config
        prev_door, moving_since = state.prev_door, state.moving_since
        opening, closing = state.opening, state.closing
        door = sample.door
        if door is not prev_door:
            moving_since, cycle = door_cycle(prev_door, moving_since, door, now)
            if cycle is not None and sample.mode in TIMED_MODES and not power_out:
                is_opening, start, duration = cycle
                if is_opening:
                    opening = opening.after(start, duration, config)
                else:
                    closing = closing.after(start, duration, config)
            prev_door = door
        slowing, gate = state.slowing, state.gate
        events: Sequence[Event] = NO_EVENTS
        if slowing.raised or opening.slow or closing.slow:
            slowing, gate, events = self._slowing(slowing, gate, sample, now, opening, closing)
        if (
            prev_door is state.prev_door
            and moving_since == state.moving_since
            and opening is state.opening
            and closing is state.closing
            and slowing is state.slowing
            and gate is state.gate
        ):
            return state, events
        return SlowingState(prev_door, moving_since, opening, closing, slowing, gate), events

    def _slowing(
        self,
        slowing: Latch,
        gate: Gate,
        sample: CarState,
        now: float,
        opening: Baseline,
        closing: Baseline,
    ) -> tuple[Latch, Gate, Sequence[Event]]:
        """The occurrence after ``sample``, the baselines already updated."""
        slow = opening.slow or closing.slow
        if slowing.raised:
            if slow:
                return slowing, gate, NO_EVENTS
            assert slowing.onset is not None
            back = coded("door times back within baseline", "door_times_normal")
            cleared = Event(
                EventType.DOOR_SLOWING,
                Phase.CLEARED,
                slowing.onset,
                now,
                sample.floor,
                back.text,
                at_landing=slowing.at_landing,
                reason_code=back.code,
                reason_params=back.params,
            )
            return IDLE, gate.cleared(now), [cleared]
        if not (slow and gate.allows(now, self.config)):
            return slowing, gate, NO_EVENTS
        starts = [b.slow_since for b in (opening, closing) if b.slow and b.slow_since is not None]
        onset = min(starts) if starts else now
        slowing = Latch(onset, True, sample.at_landing)
        why = _slowing_reason(opening, closing)
        raised = Event(
            EventType.DOOR_SLOWING,
            Phase.RAISED,
            onset,
            now,
            sample.floor,
            why.text,
            at_landing=slowing.at_landing,
            reason_code=why.code,
            reason_params=why.params,
        )
        return slowing, gate.raised(now), [raised]

    def blind(self, state: SlowingState, now: float) -> SlowingState:
        """See `rule.Rule.blind`: an unfinished door movement is forgotten too (its time
        would include the outage); the baselines are kept."""
        opening, closing = state.opening, state.closing
        if not state.slowing.raised:
            # A slow run not yet raised is a pending onset like any other.
            opening = replace(opening, slow_run=0, slow_since=None, slow=False)
            closing = replace(closing, slow_run=0, slow_since=None, slow=False)
        return SlowingState(
            opening=opening, closing=closing, slowing=state.slowing, gate=state.gate
        )


def watch_blind(state: DoorWatchState, now: float) -> DoorWatchState:
    """The controller link is down at ``now``: forget pending occurrences, the stop's
    opening count and any unfinished door movement (its time would include the outage);
    keep raised events, gates and baselines. Emits nothing."""
    return blind_all(_watch_rules(DoorWatchConfig(), _DEFAULT_FAULTS), state, now)


def rules(config: DetectionConfig) -> NamedRules:
    """The family's rules for a unit with ``config``, in the order they run: the door
    faults, then the nuisance events."""
    faults = DoorsConfig.from_detection(config)
    watch = DoorWatchConfig.from_detection(config)
    close = DoorCloseFailure(faults.close_failure_s)
    loop = ReopenLoop(watch)
    return (
        ("close", close),
        ("open", DoorOpenFailure(faults.open_failure_s)),
        ("reopen", loop),
        ("held", HeldOpen(watch, close, loop)),
        ("slowing", DoorSlowing(watch)),
    )
