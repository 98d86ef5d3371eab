"""Phase independence over the emulator: every event, its fault landing at many moments of
the car's cycle, judged by the agent's real detectors (issue 13, 1.7).

One *trial* builds a one-car group on a virtual clock, lets it serve its passengers for
a random warm-up, waits for the chosen moment of its cycle (`cycle.CYCLE_PHASES`, at a
random point inside it and a random point of the poll period), injects the fault there,
and samples the registers every poll period through the real `reference` profile into the
real `UnitDetectors`, as `soak.py` does. The emulator records when the register image
first showed the fault (`CarGroup.visibility`); the trial records when the event was
RAISED. A fault trial *misses* when the event is not raised within threshold + one poll
period of that moment; a *near-miss* trial plays the legal behaviour next to the fault
(`Play.near`) and any RAISED of the event there is a false alarm, as is any RAISED
during a trial's healthy warm-up, and any RAISED of another event in a fault trial that
is no consequence of that fault (`CONSEQUENCES`).

Phases (`Variant.name`). The nine cycle phases mean what `cycle.py` says. Where a fault
cannot land in one of them physically, its play says what an injection there means:

- *latent* faults (a stalling door operator, a jumpered lock, a levelling error, an
  obstruction, a fast drive) are injected in any phase and show at their next moment
  (the next close, the next stop); the phase still changes what the detector has seen
  before the fault shows (a door mid-stroke, a car mid-run);
- SAFETY_CIRCUIT_OPEN, DOOR_OPEN_WHILE_MOVING, MAINS_FAILURE and UNINTENDED_MOVEMENT
  use `at_once`: the fault shows at the injection, wherever the car is;
- ENTRAPMENT adds `at_landing:waiting` (someone stands shut in a level car) and
  `at_landing:door_jammed` (a door that will not open on arrival, riders aboard), the
  at-landing threshold T2;
- CONTROLLER_LINK_LOST is the controller falling silent in each cycle phase, at a random
  point of the poll period, judged by `agent.detect.link` behind the real scheduler's
  back-off (`agent.bus.scheduler.BusPolicy`).

`python bench/fidelity.py --json` runs every play; `hil_tests/test_fidelity.py` plays a
few of them over the real processes.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from agent.bus.plan import Table, plan_polls
from agent.bus.scheduler import BusPolicy, Station
from agent.decode.decoder import car_state, decode
from agent.decode.model import Profile
from agent.decode.parser import load_profile
from agent.detect import link
from agent.detect.engine import DetectionConfig, UnitDetectors
from agent.detect.events import Event, EventType, Phase
from hil_tests.emulator.car import CarSnapshot
from hil_tests.emulator.cycle import (
    CYCLE_PHASES,
    RUN_PHASES,
    STANDING_PHASES,
    Watch,
    cycle_phase,
)
from hil_tests.emulator.faults import NO_OPTIONS, Fault, FaultOptions
from hil_tests.emulator.group import CarGroup, GroupConfig
from hil_tests.emulator.link import LinkAction
from hil_tests.emulator.modes import ServiceMode
from hil_tests.soak import detection_config

POLL_PERIOD_S = 0.1  # the agent's default poll_hz = 10 (agent/config.py)
LINK_TIMEOUT_S = 0.5  # the agent's default timeout_s
LINK_BACKOFF_MAX_S = 2.0  # the agent's default backoff_max_s
LINK_LOST_AFTER_S = 5.0  # the agent's default link_lost_after_s
PHASE_SEARCH_S = 600.0  # give up on a phase the car does not reach in this long
_SLACK_S = 1e-6


@dataclass(frozen=True, slots=True)
class Variant:
    """One injection phase of a play: the cycle phase to wait for, and what to inject."""

    name: str
    phase: str
    fault: Fault
    options: FaultOptions = NO_OPTIONS
    # Injected just before the fault, at the same moment (e.g. inspection mode first).
    setup: tuple[tuple[Fault, FaultOptions], ...] = ()
    # The register image that shows this variant's fault, where it is not the emulator's
    # signature of `fault` (an entrapment at a landing made with a door that will not open).
    visible: Callable[[CarSnapshot], bool] | None = None
    # Park the car where it stands first, so the group sends it nowhere (someone waiting
    # in a car that others would call away).
    park_here: bool = False


Threshold = Callable[[DetectionConfig, CarSnapshot], float]


@dataclass(frozen=True, slots=True)
class Play:
    """How to provoke one event at many phases, and its near miss.

    ``threshold`` gives the rule's waiting time for the image the fault first showed in;
    ``horizon_s`` how long after that to watch (at least threshold + a margin);
    ``near_window_s`` how long a near miss is watched after its injection.
    ``warmup_s`` is the least healthy service before the injection (the door-slowing
    baseline needs door cycles).
    """

    event: EventType
    variants: tuple[Variant, ...]
    near: tuple[Variant, ...]
    near_meaning: str
    threshold: Threshold
    horizon_s: float
    near_window_s: float
    warmup_s: float = 20.0
    # A rule counted in door strokes, not seconds: the threshold ends when this many
    # full strokes of one direction (closed to open, or open to closed, with no reversal)
    # have completed since the injection; it is read off the trial.
    strokes: int = 0
    # A rule timed per attempt (a door close): a passenger's re-opening starts a new
    # attempt, so the fault is visible from the start of the attempt that is raised.
    per_attempt: bool = False


def _each(
    phases: Iterable[str], fault: Fault, options: FaultOptions = NO_OPTIONS
) -> tuple[Variant, ...]:
    return tuple(Variant(p, p, fault, options) for p in phases)


def _fixed(key: str, default: float) -> Threshold:
    """The rule's threshold is config key ``key`` (``default`` while the key is absent)."""
    return lambda config, _snap: float(getattr(config, key, default))


def _trapped_at_landing(s: CarSnapshot) -> bool:
    return not s.moving and s.door_fully_closed and s.occupied and s.door_zone and s.levelled


def _entrapment(config: DetectionConfig, snap: CarSnapshot) -> float:
    at_landing = snap.door_zone and snap.levelled
    return config.entrapment_at_landing_s if at_landing else config.entrapment_between_floors_s


def _unintended(config: DetectionConfig, _snap: CarSnapshot) -> float:
    # N consecutive samples outside the zone: the N-th comes (N - 1) periods after the first.
    return (config.unintended_movement_samples - 1) * POLL_PERIOD_S


def _instant(_config: DetectionConfig, _snap: CarSnapshot) -> float:
    return 0.0


ALL = CYCLE_PHASES
STANDING = STANDING_PHASES
OUT_OF_ZONE_RUN = ("accelerating", "cruising", "decelerating")
AT_ONCE = FaultOptions(at_once=True)
# The drift out of the zone must beat a closing door (3 s stroke) to show with the doors
# still open when the slip lands in the close stroke.
DRIFT = FaultOptions(at_once=True, drift_mm_s=150)


E = EventType
#: What a fault trial may raise besides its own event: true descriptions of what the fault
#: does to the car (a stop between floors strands the car and its riders; a final limit
#: opens the safety circuit; the reference profile maps no fault codes, so a position
#: loss's code 30 is RESTART_PREVENTED). Anything else a fault trial raises is counted a
#: false alarm of that event: a verdict the field would not give (a mains cut published as
#: a door fault, a running car's door called an unintended movement, passengers blamed
#: with DOOR_HELD_OPEN for doors the lift itself fails to close or keeps reopening).
CONSEQUENCES: dict[EventType, frozenset[EventType]] = {
    E.SAFETY_CIRCUIT_OPEN: frozenset(
        {E.STOPPED_OUTSIDE_DOOR_ZONE, E.LEVELLING_FAULT, E.ENTRAPMENT}
    ),
    E.DOOR_CLOSE_FAILURE: frozenset(),
    E.DOOR_OPEN_FAILURE: frozenset({E.ENTRAPMENT}),
    E.STOPPED_OUTSIDE_DOOR_ZONE: frozenset({E.ENTRAPMENT}),
    E.LEVELLING_FAULT: frozenset({E.ENTRAPMENT}),
    E.UNINTENDED_MOVEMENT: frozenset({E.STOPPED_OUTSIDE_DOOR_ZONE}),
    E.POSITION_LOST: frozenset({E.RESTART_PREVENTED}),
    E.OVERTRAVEL_TOP: frozenset({E.SAFETY_CIRCUIT_OPEN}),
    E.OVERTRAVEL_BOTTOM: frozenset({E.SAFETY_CIRCUIT_OPEN}),
    E.DOOR_OPEN_WHILE_MOVING: frozenset(
        {E.STOPPED_OUTSIDE_DOOR_ZONE, E.LEVELLING_FAULT, E.ENTRAPMENT}
    ),
    E.ENTRAPMENT: frozenset({E.STOPPED_OUTSIDE_DOOR_ZONE, E.DOOR_OPEN_FAILURE}),
    E.DOOR_REOPEN_LOOP: frozenset(),
    # A car stranded by the cut is POWER_FAILURE (and ENTRAPMENT if occupied), not code 4.
    E.POWER_FAILURE: frozenset({E.ENTRAPMENT}),
}


def plays() -> tuple[Play, ...]:
    """Every taxonomy event's play (CONTROLLER_LINK_LOST's is `link_trial`)."""
    return (
        Play(
            EventType.SAFETY_CIRCUIT_OPEN,
            _each(RUN_PHASES, Fault.SAFETY_CIRCUIT_OPEN, AT_ONCE)
            # Latent: a worn contact injected while the car stands opens on its next run.
            + _each(STANDING, Fault.SAFETY_CIRCUIT_OPEN),
            _each(STANDING, Fault.SAFETY_CIRCUIT_OPEN, AT_ONCE),
            "the safety circuit opens while the car stands (a stop switch pressed): not "
            "code 1, which is 'while running'",
            _fixed("safety_circuit_debounce_s", 0.15),
            20.0,
            20.0,
        ),
        Play(
            EventType.DOOR_CLOSE_FAILURE,
            _each(ALL, Fault.DOOR_CLOSE_FAILURE),
            _each(ALL, Fault.DOOR_SLOWING, FaultOptions(factor=2.5)),
            "a slow door operator (strokes 2.5 x longer) that still closes within T",
            _fixed("door_close_failure_s", 20.0),
            90.0,
            60.0,
            per_attempt=True,
        ),
        Play(
            EventType.DOOR_OPEN_FAILURE,
            _each(ALL, Fault.DOOR_OPEN_FAILURE),
            _each(ALL, Fault.DOOR_SLOWING, FaultOptions(factor=3.0)),
            "a slow door operator (strokes 3 x longer) that still opens within T",
            _fixed("door_open_failure_s", 10.0),
            30.0,
            60.0,
        ),
        Play(
            EventType.STOPPED_OUTSIDE_DOOR_ZONE,
            _each(ALL, Fault.LEVELLING_ERROR, FaultOptions(offset_mm=250)),
            _each(ALL, Fault.LEVELLING_ERROR, FaultOptions(offset_mm=60)),
            "the car stops 60 mm off level, inside the door zone: a levelling fault",
            _fixed("stopped_outside_door_zone_s", 15.0),
            30.0,
            60.0,
        ),
        Play(
            EventType.LEVELLING_FAULT,
            _each(ALL, Fault.LEVELLING_ERROR, FaultOptions(offset_mm=60)),
            _each(ALL, Fault.LEVELLING_ERROR, FaultOptions(offset_mm=8)),
            "the car stops 8 mm off level, inside the 10 mm levelled band",
            _fixed("levelling_fault_s", 5.0),
            30.0,
            60.0,
        ),
        Play(
            EventType.UNINTENDED_MOVEMENT,
            _each(("opening", "open", "closing"), Fault.UNINTENDED_MOVEMENT, DRIFT)
            # Latent: the brake slips at the next stop's dwell.
            + _each(("accelerating", "levelling", "parked"), Fault.UNINTENDED_MOVEMENT, DRIFT),
            _each(
                ("opening", "open", "closing"),
                Fault.UNINTENDED_MOVEMENT,
                replace(DRIFT, drift_mm_s=40, distance_mm=100),
            ),
            "the car creeps 100 mm with its doors open and stops inside the door zone",
            _unintended,
            20.0,
            20.0,
        ),
        Play(
            EventType.RUN_TIME_EXCEEDED,
            _each(ALL, Fault.RUN_TIME_EXCEEDED),
            _each(ALL, Fault.RUN_TIME_EXCEEDED, FaultOptions(speed_mm_s=900)),
            "a slow drive (0.9 m/s) whose longest run still ends within T",
            _fixed("run_time_limit_s", 60.0),
            90.0,
            150.0,
        ),
        Play(
            EventType.POSITION_LOST,
            _each(ALL, Fault.POSITION_LOST),
            _each(ALL, Fault.FAULT_CODE),
            "the controller reports another fault code (25) with its position known",
            _instant,
            10.0,
            30.0,
        ),
        Play(
            EventType.RESTART_PREVENTED,
            _each(ALL, Fault.FAULT_CODE),
            tuple(
                replace(v, setup=((Fault.MODE, FaultOptions(mode=ServiceMode.INSPECTION)),))
                for v in _each(ALL, Fault.FAULT_CODE)
            ),
            "a fault code while a mechanic has the car in inspection",
            _instant,
            10.0,
            30.0,
        ),
        Play(
            EventType.OVERTRAVEL_TOP,
            _each(ALL, Fault.OVERTRAVEL_TOP),
            _each(ALL, Fault.PARK, FaultOptions(landing=12)),
            "the car runs to the top landing and parks there, level",
            _instant,
            10.0,
            120.0,
        ),
        Play(
            EventType.OVERTRAVEL_BOTTOM,
            _each(ALL, Fault.OVERTRAVEL_BOTTOM),
            _each(ALL, Fault.PARK, FaultOptions(landing=1)),
            "the car runs to the bottom landing and parks there, level",
            _instant,
            10.0,
            120.0,
        ),
        Play(
            EventType.OVERSPEED,
            _each(ALL, Fault.OVERSPEED),
            _each(ALL, Fault.OVERSPEED, FaultOptions(factor=1.1)),
            "a drive 10 % fast, under the 1.15 x rated speed rule",
            _fixed("overspeed_s", 0.1),
            10.0,
            120.0,
        ),
        Play(
            EventType.DOOR_OPEN_WHILE_MOVING,
            _each(OUT_OF_ZONE_RUN, Fault.DOOR_OPEN_WHILE_MOVING, AT_ONCE)
            # Latent: forced ajar on the next fast run.
            + _each(("opening", "open", "closing", "parked"), Fault.DOOR_OPEN_WHILE_MOVING),
            _each(("departing", "levelling"), Fault.DOOR_OPEN_WHILE_MOVING, AT_ONCE),
            "the door leaves closed while the car runs inside a door zone (levelling or "
            "departing), where doors may legally open",
            _fixed("door_open_while_moving_debounce_s", 0.1),
            10.0,
            20.0,
        ),
        Play(
            EventType.DOOR_LOCK_BYPASS,
            _each(ALL, Fault.DOOR_LOCK_BYPASS),
            _each(ALL, Fault.DOOR_HELD, FaultOptions(held_s=20.0)),
            "a passenger holds the doors 20 s: the lock circuit stays open as it must",
            _fixed("door_lock_bypass_s", 2.0),
            20.0,
            90.0,
        ),
        Play(
            EventType.ENTRAPMENT,
            (
                *_each(ALL, Fault.ENTRAPMENT),
                Variant("at_landing:waiting", "parked", Fault.WAITING_PASSENGER, park_here=True),
                # Riders board in the dwell; the doors will not open where they get off.
                Variant(
                    "at_landing:door_jammed",
                    "open",
                    Fault.DOOR_OPEN_FAILURE,
                    visible=_trapped_at_landing,
                ),
            ),
            tuple(
                replace(v, park_here=True)
                for v in _each(ALL, Fault.WAITING_PASSENGER, FaultOptions(wait_s=40.0))
            ),
            "a passenger stands 40 s in a level car with the doors shut, then steps out",
            _entrapment,
            80.0,
            100.0,
        ),
        Play(
            EventType.DOOR_REOPEN_LOOP,
            _each(ALL, Fault.DOOR_OBSTRUCTION),
            _each(ALL, Fault.DOOR_HELD, FaultOptions(held_s=45.0)),
            "a passenger holds the doors 45 s, then lets them close",
            _fixed("door_reopen_loop_s", 60.0),
            90.0,
            120.0,
        ),
        Play(
            EventType.DOOR_HELD_OPEN,
            _each(ALL, Fault.DOOR_HELD),
            _each(ALL, Fault.DOOR_HELD, FaultOptions(held_s=30.0)),
            "a passenger holds the doors 30 s",
            _fixed("door_held_open_s", 60.0),
            90.0,
            120.0,
        ),
        Play(
            EventType.DOOR_SLOWING,
            _each(ALL, Fault.DOOR_SLOWING, FaultOptions(factor=1.6)),
            _each(ALL, Fault.DOOR_SLOWING, FaultOptions(factor=1.1)),
            "a door 10 % slower, under the p95 + 30 % rule",
            _instant,
            300.0,
            300.0,
            # The baseline needs door_slowing_min_cycles (20) strokes each way first;
            # a quiet car makes them slowly.
            warmup_s=1800.0,
            strokes=3,
        ),
        Play(
            EventType.POWER_FAILURE,
            _each(ALL, Fault.MAINS_FAILURE, AT_ONCE),
            _each(ALL, Fault.MODE, FaultOptions(mode=ServiceMode.EMERGENCY_POWER)),
            "the group runs on its emergency supply (mode 5) with mains reading OK",
            _instant,
            10.0,
            30.0,
        ),
        Play(
            EventType.MODE_CHANGE,
            _each(ALL, Fault.MODE),
            _each(ALL, Fault.MODE, FaultOptions(mode=ServiceMode.UNKNOWN)),
            "the mode register reads a value the map does not know",
            _instant,
            10.0,
            30.0,
        ),
        Play(
            EventType.ALARM_BUTTON,
            _each(ALL, Fault.ALARM_BUTTON),
            _each(ALL, Fault.ALARM_BUTTON, FaultOptions(held_s=0.5)),
            "the alarm button brushed for half a second",
            _fixed("alarm_button_debounce_s", 1.0),
            10.0,
            20.0,
        ),
    )


@dataclass(frozen=True, slots=True)
class TrialResult:
    """The verdict of one trial (see the module)."""

    event: EventType
    phase: str
    near: bool
    reached: bool  # the car reached the phase and the fault showed in the registers
    beyond_s: float | None = None  # raised - visible - threshold, for a raised fault
    missed: bool = False
    false_alarm: bool = False
    healthy_false: Counter[str] = field(default_factory=Counter)
    note: str = ""
    # Other events RAISED after the injection: consequences, or verdicts worth a look.
    also_raised: Counter[str] = field(default_factory=Counter)
    # Those of them that are no consequence of the fault (`CONSEQUENCES`): false alarms.
    stray: Counter[str] = field(default_factory=Counter)


class _Sampler:
    """The agent's side of a trial: registers -> real profile -> real detectors."""

    def __init__(self, group: CarGroup, profile: Profile) -> None:
        self.group = group
        car = group.car(1)
        landings = len(car.config.landing_heights_mm)
        self.config = detection_config(landings, car.config.motion.rated_speed * 1000.0)
        self.detectors = UnitDetectors(self.config)
        self.profile = profile

    def sample(self, t: float) -> list[Event]:
        """Feed the registers as of now, sampled at time ``t``; the RAISED events."""
        registers = self.group.registers(1)
        values = {(Table.HOLDING, address): value for address, value in enumerate(registers)}
        decoded = decode(self.profile, values)
        events = self.detectors.feed(car_state(t, [decoded.fields]))
        return [e for e in events if e.phase is Phase.RAISED]


def _shown(group: CarGroup, variant: Variant, own: Watch | None) -> float | None:
    """When the register image first showed the variant's fault (None: not yet)."""
    if own is not None:
        return own.first
    shown = group.visibility(1, variant.fault)
    return shown[1] if shown is not None else None


def group_rises(group: CarGroup, variant: Variant, own: Watch | None) -> list[float]:
    """Every time the variant's fault began to show (a new attempt of a per-attempt rule)."""
    if own is not None:
        return own.rises
    watch = group.signature_watch(1, variant.fault)
    return watch.rises if watch is not None else []


def _full_strokes(opening: bool) -> Callable[[CarSnapshot], bool]:
    """True on the image in which a full door stroke (``opening``: closed to open, else
    open to closed) completes; a reversal on the way (a re-opening) voids that stroke."""
    armed = [False]

    def seen(s: CarSnapshot) -> bool:
        start, end = (
            (s.door_fully_closed, s.door_fully_open)
            if opening
            else (s.door_fully_open, s.door_fully_closed)
        )
        if start:
            armed[0] = True
            return False
        if (s.door_closing if opening else s.door_opening) and not end:
            armed[0] = False  # reversed before its limit: not a full stroke
        if end and armed[0]:
            armed[0] = False
            return True
        return False

    return seen


def _start(seed: int) -> tuple[CarGroup, random.Random]:
    rng = random.Random(seed)
    return CarGroup(GroupConfig(cars=1, seed=seed), now=0.0), rng


def _reach(
    group: CarGroup,
    sampler: _Sampler,
    rng: random.Random,
    t: float,
    phase: str,
    healthy: Counter[str],
) -> tuple[float, bool]:
    """Sample on until car 1 is in ``phase`` at a random point of it; returns the time of
    the last sample and whether the phase came. Raises during the search are healthy
    service's false alarms. A parked phase the traffic does not give is made with PARK."""
    car = group.car(1)
    deadline = t + PHASE_SEARCH_S
    parking = False
    while t < deadline:
        if phase == "parked" and not parking and t > deadline - PHASE_SEARCH_S / 2:
            group.inject(1, Fault.PARK, FaultOptions(landing=rng.randint(1, 12)))
            parking = True
        if cycle_phase(car) == phase and rng.random() < 0.35:
            if parking:
                group.clear(1, Fault.PARK)
            return t, True
        t += POLL_PERIOD_S
        group.step(POLL_PERIOD_S)
        for e in sampler.sample(t):
            healthy[e.type.value] += 1
    return t, False


def run_trial(play: Play, variant: Variant, near: bool, seed: int) -> TrialResult:
    """One trial of ``play`` at ``variant`` (a near miss when ``near``), seeded."""
    also: Counter[str] = Counter()
    result = _trial(play, variant, near, seed, also)
    allowed = {t.value for t in CONSEQUENCES.get(play.event, frozenset())}
    stray = Counter({t: n for t, n in also.items() if t not in allowed})
    return replace(result, also_raised=also, stray=stray if not near else Counter())


def _trial(play: Play, variant: Variant, near: bool, seed: int, also: Counter[str]) -> TrialResult:
    group, rng = _start(seed)
    sampler = _Sampler(group, load_profile("reference"))
    healthy: Counter[str] = Counter()
    t = 0.0
    warm = play.warmup_s + rng.uniform(0.0, 90.0)
    while t < warm:
        t += POLL_PERIOD_S
        group.step(POLL_PERIOD_S)
        for e in sampler.sample(t):
            healthy[e.type.value] += 1
    t, reached = _reach(group, sampler, rng, t, variant.phase, healthy)
    if not reached:
        return TrialResult(play.event, variant.name, near, False, healthy_false=healthy)
    # Land inside the poll period, not on a sample.
    lead = rng.uniform(0.0, POLL_PERIOD_S)
    group.step(lead)
    if variant.park_here:
        here = group.car(1).nearest_landing() + 1
        group.inject(1, Fault.PARK, FaultOptions(landing=here))
    for fault, options in variant.setup:
        group.inject(1, fault, options)
    group.inject(1, variant.fault, variant.options)
    injected = group.time
    own = group.watch(1, variant.visible) if variant.visible is not None else None
    # Full strokes each way, for rules counted in strokes.
    strokes = (
        (group.watch(1, _full_strokes(True)), group.watch(1, _full_strokes(False)))
        if play.strokes
        else None
    )
    t += POLL_PERIOD_S
    group.step(POLL_PERIOD_S - lead)
    raised: float | None = None
    visible_snap: CarSnapshot | None = None
    end = injected + (play.near_window_s if near else PHASE_SEARCH_S)
    while t < end:
        if visible_snap is None:
            shown = _shown(group, variant, own)
            if shown is not None:
                visible_snap = group.snapshot(1)
                if not near:
                    end = min(end, shown + play.horizon_s)
        for e in sampler.sample(t):
            if e.type is play.event and raised is None:
                raised = e.at
            elif e.type is not play.event:
                also[e.type.value] += 1
        if near and raised is not None:
            break
        t += POLL_PERIOD_S
        group.step(POLL_PERIOD_S)
    if near:
        return TrialResult(
            play.event,
            variant.name,
            True,
            True,
            false_alarm=raised is not None,
            healthy_false=healthy,
            note=f"raised {raised - injected:.1f} s after the near miss" if raised else "",
        )
    visible = _shown(group, variant, own)
    if visible is not None and play.per_attempt and raised is not None:
        rises = group_rises(group, variant, own)
        visible = max((r for r in rises if r <= raised), default=visible)
    if visible is None or visible_snap is None:
        note = "raised, but the fault never showed" if raised is not None else "never showed"
        return TrialResult(play.event, variant.name, False, False, healthy_false=healthy, note=note)
    threshold = play.threshold(sampler.config, visible_snap)
    if strokes is not None:
        # Counted in strokes: the threshold ends with the stroke that completes the count
        # in either direction (a stroke under way at the injection is not counted: the
        # watches arm only at a limit seen after it).
        done = [w.rises[play.strokes - 1] for w in strokes if len(w.rises) >= play.strokes]
        if not done:
            note = f"fewer than {play.strokes} full strokes either way after the injection"
            return TrialResult(
                play.event, variant.name, False, False, healthy_false=healthy, note=note
            )
        threshold = min(done) - visible
    if raised is None:
        return TrialResult(
            play.event,
            variant.name,
            False,
            True,
            missed=True,
            healthy_false=healthy,
            note=f"not raised within {play.horizon_s:.0f} s of showing",
        )
    beyond = raised - visible - threshold
    missed = beyond > POLL_PERIOD_S + _SLACK_S
    return TrialResult(
        play.event,
        variant.name,
        False,
        True,
        beyond_s=beyond,
        missed=missed,
        healthy_false=healthy,
        note=f"raised {beyond:.2f} s beyond its threshold" if missed else "",
    )


def link_trial(phase: str, near: bool, seed: int) -> TrialResult:
    """CONTROLLER_LINK_LOST: the controller falls silent in cycle phase ``phase`` (for 3 s
    only when ``near``), polled every poll period by the agent's real back-off policy, each
    request's outcome fed to the real `agent.detect.link` (and its per-cycle ``tick``)."""
    group, rng = _start(seed)
    sampler = _Sampler(group, load_profile("reference"))
    healthy: Counter[str] = Counter()
    t = 0.0
    while t < 20.0 + rng.uniform(0.0, 90.0):
        t += POLL_PERIOD_S
        group.step(POLL_PERIOD_S)
        for e in sampler.sample(t):
            healthy[e.type.value] += 1
    t, reached = _reach(group, sampler, rng, t, phase, healthy)
    event = EventType.CONTROLLER_LINK_LOST
    if not reached:
        return TrialResult(event, phase, near, False, healthy_false=healthy)
    policy = BusPolicy(
        [Station(1, plan_polls([]))],
        period_s=POLL_PERIOD_S,
        slow_poll_s=5.0,
        identity_poll_s=3600.0,
        backoff_max_s=LINK_BACKOFF_MAX_S,
    )
    tick = getattr(link, "tick", None)  # the per-cycle check, where the rule has one
    state = link.LinkState()
    # After the answer to the cycle at t: the silence is measured from a valid answer.
    silent_from = t + 0.01 + rng.uniform(0.0, POLL_PERIOD_S)
    silent_until = silent_from + 3.0 if near else float("inf")
    last_ok: float | None = None
    raised: float | None = None
    cycle = t
    while cycle < silent_from + LINK_LOST_AFTER_S + 5.0 and raised is None:
        finished = cycle
        for turn in policy.turns(cycle):
            silent = silent_from <= cycle < silent_until
            if silent and Fault.NO_ANSWER not in group.faults(1):
                group.inject(1, Fault.NO_ANSWER)
            elif not silent and Fault.NO_ANSWER in group.faults(1):
                group.clear(1, Fault.NO_ANSWER)
            ok = group.links[1].decide(cycle).action is LinkAction.ANSWER
            # An answer takes a few milliseconds; a silent slave costs the whole timeout.
            finished = cycle + (0.005 if ok else LINK_TIMEOUT_S)
            policy.turn_done(turn, ok, finished)
            state, events = link.step(state, ok, finished, LINK_LOST_AFTER_S)
            if ok and not near:
                last_ok = finished
            raised = raised if raised is not None else _first_raised(events)
        if tick is not None:
            state, events = tick(state, finished, LINK_LOST_AFTER_S)
            raised = raised if raised is not None else _first_raised(events)
        cycle = max(cycle + POLL_PERIOD_S, finished)
    if near:
        return TrialResult(
            event, phase, True, True, false_alarm=raised is not None, healthy_false=healthy
        )
    assert last_ok is not None  # the cycle before the silence was answered
    if raised is None:
        return TrialResult(
            event, phase, False, True, missed=True, healthy_false=healthy, note="not raised"
        )
    beyond = raised - last_ok - LINK_LOST_AFTER_S
    missed = beyond > POLL_PERIOD_S + _SLACK_S
    return TrialResult(
        event,
        phase,
        False,
        True,
        beyond_s=beyond,
        missed=missed,
        healthy_false=healthy,
        note=f"raised {beyond:.2f} s beyond its threshold" if missed else "",
    )


def _first_raised(events: list[Event]) -> float | None:
    return next((e.at for e in events if e.phase is Phase.RAISED), None)


@dataclass(frozen=True, slots=True)
class TrialSpec:
    """What a worker process runs: play index (-1: the link trial), variant index, near."""

    play: int
    variant: int
    near: bool
    seed: int


def trial_specs(repeats: int, seed: int) -> list[TrialSpec]:
    """Every play's every variant and near miss, ``repeats`` times each with its own seed."""
    specs = []
    n = 0
    for index, play in enumerate(plays()):
        for near, variants in ((False, play.variants), (True, play.near)):
            for v in range(len(variants)):
                for _ in range(repeats):
                    n += 1
                    specs.append(TrialSpec(index, v, near, seed * 100_003 + n))
    for near in (False, True):
        for v in range(len(CYCLE_PHASES)):
            for _ in range(repeats):
                n += 1
                specs.append(TrialSpec(-1, v, near, seed * 100_003 + n))
    return specs


def run_spec(spec: TrialSpec) -> TrialResult:
    """Run one `TrialSpec` (picklable, for worker processes)."""
    if spec.play < 0:
        return link_trial(CYCLE_PHASES[spec.variant], spec.near, spec.seed)
    play = plays()[spec.play]
    variants = play.near if spec.near else play.variants
    return run_trial(play, variants[spec.variant], spec.near, spec.seed)


def summarize(results: Iterable[TrialResult]) -> list[dict[str, object]]:
    """One entry per taxonomy event: the phases exercised (fault trials whose fault
    showed), missed, false alarms (near misses that raised it, and raises of it in
    healthy service), the worst (raised - visible - threshold) in ms, and the details."""
    results = list(results)
    healthy: Counter[str] = sum((r.healthy_false for r in results), Counter())
    # event type -> (the trial's event, its phase) of each stray raise
    strays: dict[str, list[tuple[str, str]]] = {}
    for r in results:
        for kind, n in r.stray.items():
            strays.setdefault(kind, []).extend([(r.event.value, r.phase)] * n)
    entries: list[dict[str, object]] = []
    for event in EventType:
        mine = [r for r in results if r.event is event]
        faults = [r for r in mine if not r.near]
        nears = [r for r in mine if r.near]
        phases = sorted({r.phase for r in faults if r.reached}, key=_phase_order)
        beyond = [r.beyond_s for r in faults if r.beyond_s is not None]
        entries.append(
            {
                "type": event.value,
                "phases": phases,
                "missed": sum(r.missed for r in faults),
                "false_alarms": sum(r.false_alarm for r in nears)
                + healthy[event.value]
                + len(strays.get(event.value, [])),
                "worst_beyond_threshold_ms": round(max(beyond) * 1000.0, 1) if beyond else None,
                "runs": sum(r.reached for r in faults),
                "near_miss_runs": sum(r.reached for r in nears),
                "not_shown": sorted({r.phase for r in faults if not r.reached}),
                "also_raised": dict(sum((r.also_raised for r in faults), Counter())),
                "misses": [{"phase": r.phase, "what": r.note} for r in faults if r.missed],
                "false_alarm_details": [
                    {"phase": r.phase, "what": r.note or "raised by the near miss"}
                    for r in nears
                    if r.false_alarm
                ]
                + (
                    [{"phase": "healthy service", "what": f"raised {healthy[event.value]} x"}]
                    if healthy[event.value]
                    else []
                )
                + [
                    {"phase": phase, "what": f"raised in a {trial} trial"}
                    for trial, phase in strays.get(event.value, [])
                ],
            }
        )
    return entries


def _phase_order(name: str) -> tuple[int, str]:
    base = name.split(":")[0]
    return (CYCLE_PHASES.index(base) if base in CYCLE_PHASES else len(CYCLE_PHASES), name)
