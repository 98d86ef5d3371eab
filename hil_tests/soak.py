"""`liftwatch-rig soak`: a week of traffic through the real detectors, in minutes.

The emulator's car model runs on a virtual clock; every ``--sample-s`` its 44 registers
are decoded by the agent's real `reference` profile and fed to the agent's real
`UnitDetectors`: no processes, no sockets, no wall clock. Cars are independent here (each
its own passengers and seed), so they are spread over worker processes.

Faults (``--faults N``) are injected at random moments, one at a time per car, each held
long enough for its rule and then cleared. A fault is *detected* when its expected event
is RAISED on that car between injection and clearance (plus a grace period); any RAISED
event on a car outside such a window is a *false alarm*; other events inside a window
(a safety circuit opening also stops the car between floors) are consequences, counted
but not held against the rules. ``delay_beyond_threshold_ms`` is, per detected fault,
how long after the rule's own threshold the event was raised (what sampling costs).

Prints one JSON object with ``--json``::

    {"cars", "days", "sample_s", "faults_injected", "events_raised", "detected",
     "false_alarms", "missed", "delay_beyond_threshold_ms": {"p50", "p99"},
     "missed_by_fault": {...}, "false_alarms_by_type": {...}, "wall_s"}
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from agent.bus.plan import Table
from agent.decode.decoder import car_state, decode
from agent.decode.parser import load_profile
from agent.detect.engine import DetectionConfig, UnitDetectors
from agent.detect.events import Event, EventType, Phase
from hil_tests.emulator.faults import NO_OPTIONS, Fault, FaultOptions
from hil_tests.emulator.group import CarGroup, GroupConfig

DAY_S = 86_400.0
SETTLE_S = 120.0  # after a clearance: relevelling, door cycles, CLEARED phases
# A nuisance event is not raised again within this long after the previous one of its type
# cleared, and door faults raise DOOR_HELD_OPEN as a consequence: a nuisance plan's window
# opens at least this long after the previous window settled, or it would be held back.
NUISANCE_GAP_S = DetectionConfig().nuisance_dedup_s


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """How to provoke one event type with the emulator, and for how long to hold it."""

    fault: Fault
    expected: EventType
    hold_s: float
    options: FaultOptions = NO_OPTIONS
    nuisance: bool = False  # expects a de-duplicated event: see `NUISANCE_GAP_S`


PLANS: tuple[FaultPlan, ...] = (
    FaultPlan(Fault.ENTRAPMENT, EventType.ENTRAPMENT, 120.0),
    FaultPlan(Fault.DOOR_CLOSE_FAILURE, EventType.DOOR_CLOSE_FAILURE, 90.0),
    FaultPlan(Fault.DOOR_OPEN_FAILURE, EventType.DOOR_OPEN_FAILURE, 90.0),
    FaultPlan(Fault.DOOR_LOCK_BYPASS, EventType.DOOR_LOCK_BYPASS, 60.0),
    FaultPlan(Fault.DOOR_OPEN_WHILE_MOVING, EventType.DOOR_OPEN_WHILE_MOVING, 60.0),
    # Held 75 s from fully open, at most half a minute after the injection (a long run to
    # the next stop first): DOOR_HELD_OPEN (60 s) is raised and cleared within the hold.
    FaultPlan(
        Fault.DOOR_HELD, EventType.DOOR_HELD_OPEN, 120.0, FaultOptions(held_s=75.0), nuisance=True
    ),
    FaultPlan(Fault.SAFETY_CIRCUIT_OPEN, EventType.SAFETY_CIRCUIT_OPEN, 60.0),
    FaultPlan(Fault.UNINTENDED_MOVEMENT, EventType.UNINTENDED_MOVEMENT, 60.0),
    FaultPlan(Fault.OVERSPEED, EventType.OVERSPEED, 60.0),
    FaultPlan(Fault.OVERTRAVEL_TOP, EventType.OVERTRAVEL_TOP, 120.0),
    FaultPlan(Fault.OVERTRAVEL_BOTTOM, EventType.OVERTRAVEL_BOTTOM, 120.0),
    FaultPlan(Fault.MAINS_FAILURE, EventType.POWER_FAILURE, 60.0),
    FaultPlan(Fault.FAULT_CODE, EventType.RESTART_PREVENTED, 60.0),
    FaultPlan(Fault.POSITION_LOST, EventType.POSITION_LOST, 60.0),
    FaultPlan(Fault.RUN_TIME_EXCEEDED, EventType.RUN_TIME_EXCEEDED, 120.0),
    FaultPlan(Fault.LEVELLING_ERROR, EventType.STOPPED_OUTSIDE_DOOR_ZONE, 90.0),
    FaultPlan(Fault.ALARM_BUTTON, EventType.ALARM_BUTTON, 30.0, FaultOptions(held_s=5.0)),
    FaultPlan(Fault.MODE, EventType.MODE_CHANGE, 60.0),
    FaultPlan(Fault.DOOR_OBSTRUCTION, EventType.DOOR_REOPEN_LOOP, 240.0, nuisance=True),
)


def thresholds(config: DetectionConfig) -> dict[EventType, tuple[float, ...]]:
    """Each rule's own waiting times (seconds); 0 for rules that raise at once."""
    return {
        EventType.ENTRAPMENT: (
            config.entrapment_between_floors_s,
            config.entrapment_at_landing_s,
            config.entrapment_alarm_debounce_s,
        ),
        EventType.DOOR_CLOSE_FAILURE: (config.door_close_failure_s,),
        EventType.DOOR_OPEN_FAILURE: (config.door_open_failure_s,),
        EventType.DOOR_LOCK_BYPASS: (config.door_lock_bypass_s,),
        EventType.SAFETY_CIRCUIT_OPEN: (config.safety_circuit_debounce_s,),
        EventType.OVERSPEED: (config.overspeed_s,),
        EventType.RUN_TIME_EXCEEDED: (config.run_time_limit_s,),
        EventType.STOPPED_OUTSIDE_DOOR_ZONE: (config.stopped_outside_door_zone_s,),
        EventType.ALARM_BUTTON: (config.alarm_button_debounce_s,),
        EventType.DOOR_OPEN_WHILE_MOVING: (config.door_open_while_moving_debounce_s,),
        EventType.DOOR_HELD_OPEN: (config.door_held_open_s,),
    }


def delay_beyond(event: Event, waits: dict[EventType, tuple[float, ...]], sample_s: float) -> float:
    """Seconds between the rule's threshold passing and the event being raised.

    A rule counts its threshold from the last sample that did not show the condition
    (docs/events.md), up to one sample interval before the onset sample, so a threshold
    has passed once the raise is within ``sample_s`` of it after the onset."""
    elapsed = event.at - event.onset
    reach = elapsed + sample_s + 1e-6
    passed = [w for w in waits.get(event.type, (0.0,)) if w <= reach] or [0.0]
    return max(0.0, elapsed - max(passed))


@dataclass
class CarResult:
    injected: int = 0
    detected: int = 0
    raised: int = 0
    delays: list[tuple[str, float]] = field(default_factory=list)
    missed: Counter[str] = field(default_factory=Counter)
    false_alarms: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class CarJob:
    car: int
    cars: int
    days: float
    faults: int
    seed: int
    sample_s: float


def detection_config(landings: int, rated_speed_mm_s: float) -> DetectionConfig:
    """The rules as a site would configure them for the emulated installation."""
    return DetectionConfig.from_mapping(
        {"rated_speed_mm_s": rated_speed_mm_s, "top_landing": landings, "bottom_landing": 1}
    )


def schedule(job: CarJob, rng: random.Random) -> list[tuple[float, FaultPlan]]:
    """Random, non-overlapping injection times for this car's share of the faults."""
    share = job.faults // job.cars + (1 if job.car <= job.faults % job.cars else 0)
    horizon = job.days * DAY_S
    plans = [PLANS[rng.randrange(len(PLANS))] for _ in range(share)]
    leads = [NUISANCE_GAP_S if p.nuisance else 0.0 for p in plans]
    busy = sum(p.hold_s + SETTLE_S for p in plans) + sum(leads)
    if busy > horizon * 0.9:
        raise ValueError(f"{share} faults on one car do not fit into {job.days} day(s)")
    # Spread the idle time randomly between the fault windows.
    cuts = sorted(rng.uniform(0, horizon - busy) for _ in plans)
    timeline, spent = [], 0.0
    for cut, plan, lead in zip(cuts, plans, leads, strict=True):
        spent += lead
        timeline.append((cut + spent + 60.0, plan))
        spent += plan.hold_s + SETTLE_S
    return timeline


def soak_car(job: CarJob) -> CarResult:
    """Simulate one car for ``job.days`` and judge every event its detectors raise."""
    rng = random.Random(job.seed * 1000 + job.car)
    group = CarGroup(GroupConfig(cars=job.cars, seed=job.seed), now=0.0)
    car = group.car(job.car)
    config = car.config
    landings = len(config.landing_heights_mm)
    rules = detection_config(landings, config.motion.rated_speed * 1000.0)
    waits = thresholds(rules)
    detectors = UnitDetectors(rules)
    profile = load_profile("reference")
    timeline = schedule(job, rng)
    result = CarResult(injected=len(timeline))
    window: tuple[float, float, FaultPlan] | None = None
    found = False
    t, horizon = 0.0, job.days * DAY_S
    next_index = 0
    while t < horizon:
        t += job.sample_s
        # The whole group moves: hall calls go to whichever car the controller picks, and
        # only this car is faulted and judged (the other cars are its traffic).
        group.step(job.sample_s)
        if window is None and next_index < len(timeline) and t >= timeline[next_index][0]:
            _, plan = timeline[next_index]
            next_index += 1
            group.inject(job.car, plan.fault, plan.options)
            window, found = (t, t + plan.hold_s, plan), False
        if (
            window is not None
            and window[2] is not None
            and t >= window[1]
            and (window[2].fault in car.faults)
        ):
            group.clear(job.car, window[2].fault)
        if window is not None and t >= window[1] + SETTLE_S:
            if not found:
                result.missed[window[2].fault.value] += 1
            window = None
        registers = group.registers(job.car)
        values = {(Table.HOLDING, address): value for address, value in enumerate(registers)}
        decoded = decode(profile, values)
        for event in detectors.feed(car_state(t, [decoded.fields])):
            if event.phase is not Phase.RAISED:
                continue
            result.raised += 1
            if window is None:
                result.false_alarms[event.type.value] += 1
            elif event.type is window[2].expected and not found:
                found = True
                result.detected += 1
                result.delays.append((event.type.value, delay_beyond(event, waits, job.sample_s)))
    if window is not None and not found:
        result.missed[window[2].fault.value] += 1
    return result


def soak(
    cars: int, days: float, faults: int, seed: int, sample_s: float, workers: int
) -> dict[str, object]:
    """Run every car (in ``workers`` processes) and merge the verdicts."""
    began = time.perf_counter()
    jobs = [CarJob(car, cars, days, faults, seed, sample_s) for car in range(1, cars + 1)]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(soak_car, jobs))
    else:
        results = [soak_car(job) for job in jobs]
    # Count-based rules (reopenings) have no time threshold to be late against.
    timed = [(k, d) for r in results for k, d in r.delays if k != "DOOR_REOPEN_LOOP"]
    delays = sorted(d for _, d in timed)
    worst: dict[str, float] = {}
    for kind, d in timed:
        worst[kind] = max(worst.get(kind, 0.0), round(d * 1000, 1))
    missed: Counter[str] = sum((r.missed for r in results), Counter())
    false_alarms: Counter[str] = sum((r.false_alarms for r in results), Counter())

    def quantile(q: float) -> float | None:
        if not delays:
            return None
        return round(delays[min(len(delays) - 1, int(q * len(delays)))] * 1000, 1)

    return {
        "cars": cars,
        "days": days,
        "sample_s": sample_s,
        "faults_injected": sum(r.injected for r in results),
        "events_raised": sum(r.raised for r in results),
        "detected": sum(r.detected for r in results),
        "false_alarms": sum(false_alarms.values()),
        "missed": sum(missed.values()),
        "delay_beyond_threshold_ms": {
            "p50": quantile(0.5),
            "p99": quantile(0.99),
            "mean": round(statistics.fmean(delays) * 1000, 1) if delays else None,
        },
        "worst_delay_ms_by_type": worst,
        "missed_by_fault": dict(missed),
        "false_alarms_by_type": dict(false_alarms),
        "wall_s": round(time.perf_counter() - began, 1),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `liftwatch-rig soak`."""
    parser.add_argument("--cars", type=int, default=8, help="cars to simulate (default 8)")
    parser.add_argument("--days", type=float, default=7.0, help="simulated days (default 7)")
    parser.add_argument(
        "--faults", type=int, default=0, help="faults injected at random over all cars (default 0)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--sample-s",
        type=float,
        default=0.5,
        help="seconds between samples fed to the detectors (default 0.5)",
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="worker processes (default: one per CPU)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    """Run the soak; exit 1 when it missed a fault or raised a false alarm."""
    import os

    if args.cars < 1 or args.days <= 0 or args.faults < 0 or args.sample_s <= 0:
        print(
            "liftwatch-rig soak: --cars, --days and --sample-s must be > 0, --faults >= 0",
            file=sys.stderr,
        )
        return 2
    workers = args.workers or min(args.cars, os.cpu_count() or 1)
    try:
        report = soak(args.cars, args.days, args.faults, args.seed, args.sample_s, workers)
    except ValueError as exc:
        print(f"liftwatch-rig soak: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        for key, value in report.items():
            print(f"{key:28} {value}")
    return 0 if report["missed"] == 0 and report["false_alarms"] == 0 else 1
