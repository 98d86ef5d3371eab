"""Phase independence of every rule (issue 13, 1.7), over the pure detectors.

A car in normal service (`detect_traffic.normal_operation`, sampled every poll period) is
interrupted by a fault at a random sample of a chosen phase of its life: travelling,
levelling, doors opening, open, closing, or parked; between floors or at a landing where
the phase has both. Each fault says when it becomes visible in the samples and what its
rule's threshold is; the event must be RAISED no later than visible + threshold + one poll
period, whatever the phase. Each fault's near miss (the same disturbance kept under its
threshold, or the harmless look-alike) must never raise it. Default thresholds, with the
unit facts that arm every rule (rated speed, terminal landings).

DOOR_SLOWING has its own test (its threshold is cycles, not seconds), and
CONTROLLER_LINK_LOST is driven through `agent.detect.link` with random retry back-offs.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from agent.detect import link
from agent.detect.engine import DetectionConfig, UnitDetectors
from agent.detect.events import EventType, Phase
from agent.state import CarState, DoorState, ServiceMode
from tests.agent.detect_traffic import normal_operation

DT = 0.1  # the poll period of the generated samples
SLACK = 1e-6
CONFIG = DetectionConfig.from_mapping(
    {"rated_speed_mm_s": 1000, "top_landing": 9, "bottom_landing": 0}
)

TRAVELLING = "travelling"
LEVELLING = "levelling"
OPENING = "doors opening"
OPEN = "doors open"
CLOSING = "doors closing"
PARKED = "parked"
ALL_PHASES = (TRAVELLING, LEVELLING, OPENING, OPEN, CLOSING, PARKED)
STANDING = (OPENING, OPEN, CLOSING, PARKED)
DOORS_MOVING = (OPENING, OPEN, CLOSING)
RUNNING = (TRAVELLING, LEVELLING)


def phase_of(sample: CarState) -> str:
    """The phase of the car's life a sample shows."""
    if sample.moving:
        # Inside a zone at a levelling speed; through the zones of passed floors at speed.
        slow = (sample.speed_mm_s or 0) < 600
        return LEVELLING if sample.door_zone and slow else TRAVELLING
    if sample.door is DoorState.OPENING:
        return OPENING
    if sample.door is DoorState.OPEN:
        return OPEN
    if sample.door is DoorState.CLOSING:
        return CLOSING
    return PARKED


def hold(base: CarState, start: float, seconds: float, **changes: object) -> list[CarState]:
    """``base`` with ``changes`` every poll period from ``start`` for ``seconds``."""
    count = round(seconds / DT)
    return [replace(base, t=round(start + i * DT, 6), **changes) for i in range(count)]  # type: ignore[arg-type]


def stopped(sample: CarState) -> CarState:
    """The car of ``sample`` brought to rest where it is."""
    return replace(sample, moving=False, speed_mm_s=0)


@dataclass(frozen=True)
class Injected:
    """A life with a fault in it: the samples, when the fault first shows in them, and the
    rule's threshold counted from then (seconds)."""

    samples: list[CarState]
    visible: float
    threshold: float


# An injection takes the life and the index of the fault's first sample; it returns the
# faulty life, or None when the fault makes no sense at that sample.
Inject = Callable[[list[CarState], int], Injected | None]


def safety_open(life: list[CarState], k: int) -> Injected:
    s = life[k]
    tail = [replace(s, safety_circuit_closed=False)]
    tail += hold(stopped(s), s.t + DT, 3.0, safety_circuit_closed=False)
    return Injected(life[:k] + tail, s.t, CONFIG.safety_circuit_debounce_s)


def safety_blip(life: list[CarState], k: int) -> Injected:
    # Open on one running sample only: under the 150 ms debounce.
    s = life[k]
    return Injected([*life[:k], replace(s, safety_circuit_closed=False), *life[k + 1 :]], s.t, 0.0)


def door_stalls_closing(life: list[CarState], k: int) -> Injected:
    s = life[k]
    tail = hold(
        s, s.t, 25.0, door=DoorState.CLOSING, door_lock_closed=False, door_close_command=True
    )
    visible = spell_start(life, k, DoorState.CLOSING)
    return Injected(life[:k] + tail, visible, CONFIG.door_close_failure_s)


def spell_start(life: list[CarState], k: int, door: DoorState) -> float:
    """When the spell of ``door`` that a sample reading ``door`` at ``k`` continues began:
    the start of the attempt a door rule times (``life[k]``'s own time when the sample
    before it does not read ``door``). The injected sample at ``k`` reads ``door`` even
    where the life's own sample there does not, so the spell before it counts."""
    i = k
    while i > 0 and life[i - 1].door is door:
        i -= 1
    return life[i].t


def attempt_start(life: list[CarState], k: int, door: DoorState, command: str) -> float:
    """When the door attempt that a sample reading ``door`` at ``k`` continues began: the
    doors reading ``door``, or ``command`` on, without a break up to ``k`` (a controller
    that keeps its command through a re-opening has not started a new attempt)."""
    i = k
    while i > 0 and (life[i - 1].door is door or getattr(life[i - 1], command)):
        i -= 1
    return life[i].t


def door_closes_slowly(life: list[CarState], k: int) -> Injected | None:
    s = life[k]
    left = 19.0 - (s.t - attempt_start(life, k, DoorState.CLOSING, "door_close_command"))
    if left < 1.0:
        return None  # the attempt under way is already too long to finish in time
    tail = hold(
        s, s.t, left, door=DoorState.CLOSING, door_lock_closed=False, door_close_command=True
    )
    tail += hold(s, s.t + left, 5.0, door=DoorState.CLOSED, door_lock_closed=True)
    return Injected(life[:k] + tail, s.t, 0.0)


def door_will_not_open(life: list[CarState], k: int) -> Injected:
    s = life[k]
    door = DoorState.CLOSED if s.door is DoorState.CLOSED else DoorState.PARTLY_OPEN
    tail = hold(
        stopped(s),
        s.t,
        15.0,
        door=door,
        door_lock_closed=door is DoorState.CLOSED,
        door_open_command=True,
        door_zone=True,
        levelled=True,
    )
    return Injected(life[:k] + tail, s.t, CONFIG.door_open_failure_s)


def door_opens_slowly(life: list[CarState], k: int) -> Injected | None:
    s = replace(stopped(life[k]), door_zone=True, levelled=True)
    left = 9.0 - (s.t - attempt_start(life, k, DoorState.OPENING, "door_open_command"))
    if left < 1.0:
        return None  # the attempt under way is already too long to finish in time
    tail = hold(
        s, s.t, left, door=DoorState.OPENING, door_lock_closed=False, door_open_command=True
    )
    tail += hold(s, s.t + left, 5.0, door=DoorState.OPEN, door_lock_closed=False)
    return Injected(life[:k] + tail, s.t, 0.0)


def stops_outside_zone(life: list[CarState], k: int) -> Injected | None:
    s = life[k]
    if s.door_zone:
        return None
    tail = hold(stopped(s), s.t, 20.0, occupied=False, load_percent=0)
    return Injected(life[:k] + tail, s.t, CONFIG.stopped_outside_door_zone_s)


def stops_outside_zone_briefly(life: list[CarState], k: int) -> Injected | None:
    s = life[k]
    if s.door_zone:
        return None
    tail = hold(stopped(s), s.t, 14.0, occupied=False, load_percent=0)
    rest = [replace(x, t=round(x.t + 14.0, 6)) for x in life[k:]]
    return Injected(life[:k] + tail + rest, s.t, 0.0)


def off_level(life: list[CarState], k: int) -> Injected:
    s = stopped(life[k])
    tail = hold(s, s.t, 10.0, door_zone=True, levelled=False)
    return Injected(life[:k] + tail, s.t, CONFIG.levelling_fault_s)


def relevels_in_time(life: list[CarState], k: int) -> Injected:
    s = stopped(life[k])
    tail = hold(s, s.t, 4.5, door_zone=True, levelled=False)
    rest = [replace(x, t=round(x.t + 4.5, 6)) for x in life[k:]]
    return Injected(life[:k] + tail + rest, s.t, 0.0)


def drifts_with_doors_open(life: list[CarState], k: int) -> Injected | None:
    # The car has been seen standing in the zone with its doors not closed (sample k),
    # then drifts out of the zone on the next sample.
    s = life[k]
    if s.door is DoorState.CLOSED or not s.door_zone:
        return None
    start = round(s.t + DT, 6)
    tail = hold(s, start, 1.0, moving=True, speed_mm_s=50, door_zone=False, levelled=False)
    return Injected(life[: k + 1] + tail, start, (CONFIG.unintended_movement_samples - 1) * DT)


def rescuers_open_between_floors(life: list[CarState], k: int) -> Injected | None:
    s = life[k]
    if s.door_zone:
        return None
    shut = hold(stopped(s), s.t, 2.0)
    opened = hold(stopped(s), s.t + 2.0, 5.0, door=DoorState.OPEN, door_lock_closed=False)
    return Injected(life[:k] + shut + opened, s.t, 0.0)


def runs_on(life: list[CarState], k: int) -> Injected:
    s = life[k]
    begun = k
    while begun > 0 and life[begun - 1].moving:
        begun -= 1
    runner = replace(s, moving=True, speed_mm_s=1000, door_zone=False, levelled=False)
    if s.door is not DoorState.CLOSED:
        runner = replace(runner, door=DoorState.CLOSED, door_lock_closed=True)
    tail = hold(runner, s.t, 70.0)
    return Injected(life[:k] + tail, life[begun].t if s.moving else s.t, CONFIG.run_time_limit_s)


def long_run(life: list[CarState], k: int) -> Injected | None:
    s = life[k]
    if s.moving:
        return None
    runner = replace(s, moving=True, speed_mm_s=1000, door_zone=False, levelled=False)
    runner = replace(runner, door=DoorState.CLOSED, door_lock_closed=True)
    tail = hold(runner, s.t, 55.0) + hold(s, s.t + 55.0, 3.0, door=DoorState.CLOSED)
    return Injected(life[:k] + tail, s.t, 0.0)


def field_from(name: str, value: object, threshold: float, seconds: float = 3.0) -> Inject:
    def inject(life: list[CarState], k: int) -> Injected:
        s = life[k]
        changes: dict[str, Any] = {name: value}
        tail = [replace(x, **changes) for x in life[k : k + round(seconds / DT)]]
        return Injected(life[:k] + tail, s.t, threshold)

    return inject


def overspeed(life: list[CarState], k: int) -> Injected:
    s = life[k]
    tail = hold(s, s.t, 1.0, speed_mm_s=1200)
    return Injected(life[:k] + tail, s.t, CONFIG.overspeed_s)


def fast_but_within_factor(life: list[CarState], k: int) -> Injected:
    s = life[k]
    tail = hold(s, s.t, 5.0, speed_mm_s=1140)
    return Injected(life[:k] + tail, s.t, 0.0)


def doors_part_while_running(life: list[CarState], k: int) -> Injected | None:
    s = life[k]
    if s.door_zone:
        return None
    tail = hold(s, s.t, 1.0, door=DoorState.PARTLY_OPEN, door_lock_closed=False)
    return Injected(life[:k] + tail, s.t, CONFIG.door_open_while_moving_debounce_s)


def advance_opening_while_levelling(life: list[CarState], k: int) -> Injected | None:
    s = life[k]
    if not s.door_zone:
        return None
    tail = hold(s, s.t, 0.5, door=DoorState.OPENING, door_lock_closed=False, speed_mm_s=60)
    rest = [replace(x, t=round(x.t + 0.5, 6)) for x in life[k + 1 :]]
    return Injected(life[:k] + tail + rest, s.t, 0.0)


_NOT_CLOSED = frozenset(
    {DoorState.OPENING, DoorState.OPEN, DoorState.PARTLY_OPEN, DoorState.CLOSING}
)


def jumpered_lock(life: list[CarState], k: int) -> Injected | None:
    samples = life[:k] + [replace(x, door_lock_closed=True) for x in life[k:]]
    # Visible from the first sample of a spell with the doors not closed that lasts the
    # threshold: a jumper fitted in the last instant of a close stroke shows for less
    # than that, and nothing contradicts a made lock once the doors are closed.
    for i in range(k, len(samples)):
        if samples[i].door in _NOT_CLOSED:
            j = i
            while j + 1 < len(samples) and samples[j + 1].door in _NOT_CLOSED:
                j += 1
            if samples[j].t - samples[i].t >= CONFIG.door_lock_bypass_s - SLACK:
                return Injected(samples, samples[i].t, CONFIG.door_lock_bypass_s)
    return None


def lock_lags_one_sample(life: list[CarState], k: int) -> Injected:
    # Wherever the fault lands, the lock reads made on the first sample the doors move
    # (opening or closing) after it: a sound lock read a poll late.
    samples = list(life)
    for i in range(k + 1, len(samples)):
        if samples[i].door is not samples[i - 1].door:
            samples[i] = replace(samples[i], door_lock_closed=True)
    return Injected(samples, life[k].t, 0.0)


def trapped(life: list[CarState], k: int) -> Injected:
    s = stopped(life[k])
    shut = replace(s, door=DoorState.CLOSED, door_lock_closed=True, occupied=True, load_percent=40)
    threshold = (
        CONFIG.entrapment_between_floors_s
        if shut.at_landing is False
        else CONFIG.entrapment_at_landing_s
    )
    return Injected(life[:k] + hold(shut, s.t, 75.0), s.t, threshold)


def waits_inside_under_t2(life: list[CarState], k: int) -> Injected | None:
    s = stopped(life[k])
    if not s.door_zone or not s.levelled:
        return None
    shut = replace(s, door=DoorState.CLOSED, door_lock_closed=True, occupied=True, load_percent=40)
    tail = hold(shut, s.t, 55.0)
    tail += hold(shut, s.t + 55.0, 3.0, door=DoorState.OPENING, door_lock_closed=False)
    return Injected(life[:k] + tail, s.t, 0.0)


def reopen_cycles(
    s: CarState, start: float, cycle_s: float, until: float
) -> tuple[list[CarState], float]:
    """The doors of ``s`` reopening every ``cycle_s`` from ``start`` until ``until``; the
    samples and the time of the first re-opening."""
    out: list[CarState] = []
    t = start
    first: float | None = None
    while t < until:
        out += hold(s, t, cycle_s / 3, door=DoorState.CLOSING, door_lock_closed=False)
        opening_at = round(t + cycle_s / 3, 6)
        out += hold(s, opening_at, cycle_s / 6, door=DoorState.OPENING, door_lock_closed=False)
        out += hold(s, t + cycle_s / 2, cycle_s / 2, door=DoorState.OPEN, door_lock_closed=False)
        first = opening_at if first is None else first
        t = round(t + cycle_s, 6)
    assert first is not None
    return out, first


def stop_has_opened(life: list[CarState], k: int) -> bool:
    """Whether the doors already opened in the stop sample ``k`` belongs to, by the rule's
    definition of a stop: since the car last ran, and not before doors that stayed
    closed and locked for 10 s."""
    shut_since: float | None = None
    for i in range(k - 1, -1, -1):
        s = life[i]
        if s.moving:
            return False
        if s.door in (DoorState.OPENING, DoorState.OPEN):
            return True
        if s.door is DoorState.CLOSED and s.door_lock_closed:
            shut_since = s.t
            if life[k].t - shut_since >= 10.0 and life[i + 1].door is DoorState.CLOSED:
                # Shut for 10 s somewhere before k: look for a 10 s closed stretch.
                end = i
                while end + 1 < k and life[end + 1].door is DoorState.CLOSED:
                    end += 1
                if life[end].t - s.t >= 10.0 - SLACK:
                    return False
    return False


def reopen_loop(cycle_s: float, seconds: float) -> Inject:
    def inject(life: list[CarState], k: int) -> Injected:
        s = stopped(life[k])
        if s.door is DoorState.CLOSED:
            # A stuck call: the doors open, then keep reopening.
            opened = hold(s, s.t, 2.0, door=DoorState.OPEN, door_lock_closed=False)
            loop, _ = reopen_cycles(s, s.t + 2.0, cycle_s, s.t + 2.0 + seconds)
            tail = opened + loop
        else:
            loop, _ = reopen_cycles(s, s.t, cycle_s, s.t + seconds)
            tail = loop
        end = tail[-1].t + DT
        tail += hold(s, end, 3.0, door=DoorState.CLOSED, door_lock_closed=True)
        tail += hold(s, end + 3.0, 2.0, moving=True, speed_mm_s=500, door_zone=False)
        # The first re-opening: the tail's first opening if the stop had opened before,
        # else its second.
        openings = [
            x.t
            for i, x in enumerate(tail)
            if x.door in (DoorState.OPENING, DoorState.OPEN)
            and (tail[i - 1] if i else life[k - 1]).door not in (DoorState.OPENING, DoorState.OPEN)
        ]
        first = openings[0] if stop_has_opened(life, k) else openings[1]
        return Injected(life[:k] + tail, first, CONFIG.door_reopen_loop_s)

    return inject


def standing_open(sample: CarState) -> bool:
    """The doors stand not closed and the lift is not trying to close them (DOOR_HELD_OPEN's
    condition, which a close attempt restarts)."""
    return (
        sample.door is not DoorState.CLOSED
        and sample.door is not DoorState.CLOSING
        and sample.door_close_command is not True
    )


def reopenings_before(life: list[CarState], k: int) -> int:
    """How many times the doors re-opened (opened after the stop's first opening) in the
    stop sample ``k`` belongs to, before it."""
    i = k
    while i > 0 and not life[i - 1].moving:
        i -= 1
    opens = (DoorState.OPENING, DoorState.OPEN)
    openings = sum(
        1 for j in range(max(i, 1), k) if life[j].door in opens and life[j - 1].door not in opens
    )
    return max(0, openings - 1)


def held_open(seconds: float) -> Inject:
    """The doors kept open, the controller not closing them (a passenger holding them),
    until ``seconds`` after they last stood open without a close attempt (or after the
    fault, when they were closed or closing there), then closed."""

    def inject(life: list[CarState], k: int) -> Injected | None:
        if reopenings_before(life, k) >= 2:
            # A third re-opening makes the stop a DOOR_REOPEN_LOOP once its first is 60 s
            # old, and the lift's own door fault is not blamed on passengers as well.
            return None
        s = replace(stopped(life[k]), door_close_command=False)
        since = k
        while since > 0 and standing_open(life[since - 1]):
            since -= 1
        visible = life[since].t if standing_open(life[k]) else s.t
        left = round(visible + seconds - s.t, 6)
        if left <= 0:
            return None  # open longer than that already
        tail = hold(s, s.t, left, door=DoorState.OPEN, door_lock_closed=False)
        tail += hold(s, s.t + left, 3.0, door=DoorState.CLOSED, door_lock_closed=True)
        return Injected(life[:k] + tail, visible, CONFIG.door_held_open_s)

    return inject


def alarm_press(seconds: float) -> Inject:
    def inject(life: list[CarState], k: int) -> Injected:
        s = life[k]
        tail = [replace(x, alarm_button=True) for x in life[k : k + round(seconds / DT)]]
        rest = [replace(x, alarm_button=False) for x in life[k + len(tail) :]]
        return Injected(life[:k] + tail + rest, s.t, CONFIG.alarm_button_debounce_s)

    return inject


@dataclass(frozen=True)
class Case:
    """One event: where its fault can happen, the fault and its near miss."""

    event: EventType
    phases: tuple[str, ...]
    fault: Inject
    near_miss: Inject


CASES = [
    Case(EventType.SAFETY_CIRCUIT_OPEN, RUNNING, safety_open, safety_blip),
    Case(EventType.DOOR_CLOSE_FAILURE, DOORS_MOVING, door_stalls_closing, door_closes_slowly),
    Case(EventType.DOOR_OPEN_FAILURE, STANDING, door_will_not_open, door_opens_slowly),
    Case(
        EventType.STOPPED_OUTSIDE_DOOR_ZONE,
        (TRAVELLING,),
        stops_outside_zone,
        stops_outside_zone_briefly,
    ),
    Case(EventType.LEVELLING_FAULT, (LEVELLING, *STANDING), off_level, relevels_in_time),
    Case(
        EventType.UNINTENDED_MOVEMENT,
        DOORS_MOVING,
        drifts_with_doors_open,
        rescuers_open_between_floors,
    ),
    Case(EventType.RUN_TIME_EXCEEDED, ALL_PHASES, runs_on, long_run),
    Case(
        EventType.POSITION_LOST,
        ALL_PHASES,
        field_from("floor", 12, 0.0),
        field_from("floor", 9, 0.0),  # the top landing is a real floor
    ),
    Case(
        EventType.RESTART_PREVENTED,
        ALL_PHASES,
        field_from("fault_code", 35, 0.0),
        field_from("fault_code", None, 0.0),  # the register unreadable: not a fault
    ),
    Case(
        EventType.OVERTRAVEL_TOP,
        ALL_PHASES,
        field_from("up_final_limit", True, 0.0),
        field_from("down_final_limit", True, 0.0),
    ),
    Case(
        EventType.OVERTRAVEL_BOTTOM,
        ALL_PHASES,
        field_from("down_final_limit", True, 0.0),
        field_from("up_final_limit", True, 0.0),
    ),
    Case(EventType.OVERSPEED, (TRAVELLING,), overspeed, fast_but_within_factor),
    Case(
        EventType.DOOR_OPEN_WHILE_MOVING,
        RUNNING,
        doors_part_while_running,
        advance_opening_while_levelling,
    ),
    Case(EventType.DOOR_LOCK_BYPASS, ALL_PHASES, jumpered_lock, lock_lags_one_sample),
    Case(EventType.ENTRAPMENT, ALL_PHASES, trapped, waits_inside_under_t2),
    Case(EventType.DOOR_REOPEN_LOOP, STANDING, reopen_loop(5.0, 100.0), reopen_loop(5.0, 25.0)),
    Case(EventType.DOOR_HELD_OPEN, STANDING, held_open(70.0), held_open(30.0)),
    Case(
        EventType.POWER_FAILURE,
        ALL_PHASES,
        field_from("mains_ok", False, 0.0),
        field_from("mains_ok", None, 0.0),
    ),
    Case(
        EventType.MODE_CHANGE,
        ALL_PHASES,
        field_from("mode", ServiceMode.INSPECTION, 0.0),
        field_from("mode", ServiceMode.UNKNOWN, 0.0),
    ),
    Case(EventType.ALARM_BUTTON, ALL_PHASES, alarm_press(2.0), alarm_press(0.9)),
]

# The reopen loop at other cycle times: the rule is about time, not about the cycle.
LOOP_CYCLES = (3.0, 8.0, 20.0)


def test_every_sample_driven_event_has_a_case() -> None:
    covered = {c.event for c in CASES} | {EventType.DOOR_SLOWING}
    assert covered == set(EventType) - {EventType.CONTROLLER_LINK_LOST}


def life_and_index(data: st.DataObject, phases: tuple[str, ...]) -> tuple[list[CarState], int, str]:
    # A seed, not st.randoms(): a Hypothesis-driven Random records every draw, which over a
    # thousand samples of traffic costs seconds per example.
    seed = data.draw(st.integers(0, 2**32 - 1), label="life seed")
    life = normal_operation(random.Random(seed), 2000, dt=DT)
    phase = data.draw(st.sampled_from(phases), label="phase")
    # Faults that follow the life (a field forced for a few seconds) need life after k.
    last = len(life) - 100
    where = [i for i, s in enumerate(life) if 10 <= i < last and phase_of(s) == phase]
    # A life without the phase is drawn again, never skipped: a test that cannot find its
    # phase fails (Hypothesis' Unsatisfiable) instead of passing quietly in CI.
    assume(where)
    k = where[data.draw(st.integers(0, len(where) - 1), label="sample")]
    return life, k, phase


def raised(samples: list[CarState], event: EventType) -> list[float]:
    """When ``event`` is RAISED over ``samples``; each RAISED, of any type, must carry where
    the car stood on its onset sample."""
    unit = UnitDetectors(CONFIG)
    out = []
    place: dict[float, bool | None] = {}
    for sample in samples:
        place.setdefault(sample.t, sample.at_landing)
        for e in unit.feed(sample):
            if e.phase is Phase.RAISED:
                assert e.at_landing == place[e.onset], e
                if e.type is event:
                    out.append(e.at)
    return out


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.event.name)
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_raised_within_threshold_and_one_poll_of_showing(case: Case, data: st.DataObject) -> None:
    life, k, phase = life_and_index(data, case.phases)
    injected = case.fault(life, k)
    if injected is None:
        return  # this sample cannot host the fault (e.g. inside a zone for a between-floors one)
    times = raised(injected.samples, case.event)
    assert times, f"{case.event.name} never raised for a fault at {phase}"
    latest = injected.visible + injected.threshold + DT + SLACK
    assert times[0] <= latest, (phase, times[0] - injected.visible)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.event.name)
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_the_near_miss_never_raises(case: Case, data: st.DataObject) -> None:
    life, k, phase = life_and_index(data, case.phases)
    injected = case.near_miss(life, k)
    if injected is None:
        return
    assert raised(injected.samples, case.event) == [], phase


@pytest.mark.parametrize("cycle_s", LOOP_CYCLES)
@settings(max_examples=6, deadline=None)
@given(data=st.data())
def test_reopen_loop_at_any_cycle_time(cycle_s: float, data: st.DataObject) -> None:
    life, k, phase = life_and_index(data, STANDING)
    injected = reopen_loop(cycle_s, 100.0)(life, k)
    assert injected is not None
    times = raised(injected.samples, EventType.DOOR_REOPEN_LOOP)
    assert times and times[0] <= injected.visible + injected.threshold + DT + SLACK, phase


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), when=st.integers(0, 2))
def test_door_slowing_raises_on_the_third_slow_cycle(seed: int, when: int) -> None:
    # Baseline from normal service, then every opening takes 8 s (the model's are
    # 1.8-2.6 s): raised on the sample that completes the third slow opening. Only full
    # strokes (from CLOSED) build the baseline: a re-opening out of a close is none.
    life = normal_operation(random.Random(seed), 30000, dt=DT)
    openings = [
        i
        for i in range(1, len(life))
        if life[i].door is DoorState.OPENING and life[i - 1].door is DoorState.CLOSED
    ]
    start = openings[25 + when]
    slow: list[CarState] = list(life[:start])
    t = life[start].t
    completions = []
    for _ in range(3):
        s = life[start]
        slow += hold(s, t, 8.0, door=DoorState.OPENING, door_lock_closed=False)
        slow += hold(s, t + 8.0, 3.0, door=DoorState.OPEN, door_lock_closed=False)
        completions.append(round(t + 8.0, 6))
        slow += hold(s, t + 11.0, 3.0, door=DoorState.CLOSING, door_lock_closed=False)
        slow += hold(s, t + 14.0, 1.0, door=DoorState.CLOSED, door_lock_closed=True)
        t = round(t + 15.0, 6)
    times = raised(slow, EventType.DOOR_SLOWING)
    assert times == [completions[2]]


@settings(max_examples=60, deadline=None)
@given(
    last_ok=st.floats(0.0, 1e5, allow_nan=False),
    timeout=st.sampled_from([0.1, 0.2, 0.5, 1.0]),
    backoff_max=st.sampled_from([0.5, 1.0, 2.0, 4.0]),
    phase=st.floats(0.0, DT, exclude_max=True),
)
def test_link_lost_within_threshold_and_one_poll_of_the_last_answer(
    last_ok: float, timeout: float, backoff_max: float, phase: float
) -> None:
    # The controller falls silent right after answering at last_ok; the scheduler retries
    # it on its back-off, each failure noticed a timeout after the request; cycles end
    # every poll period from an arbitrary offset.
    lost_after = 5.0
    state, _ = link.step(link.LinkState(), True, last_ok, lost_after)
    failures = []
    request, failed = last_ok + DT, 0
    while request < last_ok + 30:
        failures.append(request + timeout)
        failed += 1
        request += min(backoff_max, DT * 2 ** (failed - 1)) + timeout
    outcomes = sorted(
        [(t, "fail") for t in failures]
        + [(last_ok + phase + i * DT, "tick") for i in range(1, 300)]
    )
    raised_at = None
    for t, kind in outcomes:
        if kind == "fail":
            state, events = link.step(state, False, t, lost_after)
        else:
            state, events = link.tick(state, t, lost_after)
        if events and raised_at is None:
            assert events[0].onset == last_ok
            raised_at = t
    assert raised_at is not None
    assert last_ok + lost_after - SLACK <= raised_at <= last_ok + lost_after + DT + SLACK


@settings(max_examples=60, deadline=None)
@given(
    last_ok=st.floats(0.0, 1e5, allow_nan=False),
    burst=st.floats(0.1, 4.8),
)
def test_a_burst_of_failures_under_the_threshold_is_not_a_lost_link(
    last_ok: float, burst: float
) -> None:
    state, _ = link.step(link.LinkState(), True, last_ok, 5.0)
    t = last_ok
    while t < last_ok + burst:
        t += DT
        state, events = link.step(state, False, t, 5.0)
        assert events == []
        state, events = link.tick(state, t, 5.0)
        assert events == []
    state, events = link.step(state, True, last_ok + burst + DT, 5.0)
    assert events == [] and not state.lost
