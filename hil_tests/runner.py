"""`liftwatch-rig run`: scenarios against the real agent and fleet processes.

For each scenario: start fleet, emulator and agent (`hil_tests.system`), wait until the
fleet reports every car online, play the injection timeline through the emulator's
control port, and watch what the fleet commits. A scenario passes when every expected
event is committed by its deadline and nothing unexpected is raised.

Latencies are measured from the injection (the moment the control request was sent):
``agent_latency_ms`` to the record's time, which the agent stamps when it decides the
event and appends it to its outbox in the same step; ``fleet_latency_ms`` to the fleet's
commit. For faults that take a while to show (a trapped car first has to stop between
floors) the latency includes that, plus the rule's own threshold.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hil_tests.evidence_checks import CHECKS
from hil_tests.scenario import Scenario, ScenarioError, load_scenario, resolve
from hil_tests.system import FleetView, RunningSystem, SystemSpec, running_system
from protos.evidence import EvidenceError, decode_samples
from protos.liftwatch.v1 import records_pb2

ONLINE_TIMEOUT_S = 60.0
POLL_S = 0.25


@dataclass
class ExpectedResult:
    type: str
    unit_id: str
    phase: str
    deadline_s: float
    agent_latency_ms: float | None = None
    fleet_latency_ms: float | None = None

    @property
    def met(self) -> bool:
        return self.fleet_latency_ms is not None and self.fleet_latency_ms <= self.deadline_s * 1e3


@dataclass
class EvidenceResult:
    """An ``[[evidence]]`` of the scenario: what the stored window showed."""

    type: str
    unit_id: str
    shows: str
    event_id: str = ""
    end: str = ""  # the window judged (EvidenceEnd name), "" while the fleet has none
    samples: int = 0
    problem: str | None = "no evidence stored for the event"

    @property
    def met(self) -> bool:
        return bool(self.end) and self.problem is None


@dataclass
class ScenarioResult:
    name: str
    transport: str
    expected: list[ExpectedResult] = field(default_factory=list)
    unexpected: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    evidence: list[EvidenceResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (
            not self.error
            and not self.unexpected
            and all(e.met for e in self.expected)
            and all(e.met for e in self.evidence)
        )

    def as_json(self) -> dict[str, Any]:
        """The per-scenario object of ``--json``."""
        return {
            "name": self.name,
            "transport": self.transport,
            "passed": self.passed,
            "events": [
                {
                    "type": e.type,
                    "unit_id": e.unit_id,
                    "phase": e.phase,
                    "deadline_s": e.deadline_s,
                    "agent_latency_ms": _round(e.agent_latency_ms),
                    "fleet_latency_ms": _round(e.fleet_latency_ms),
                }
                for e in self.expected
            ],
            "unexpected": self.unexpected,
            "evidence": [
                {
                    "type": e.type,
                    "unit_id": e.unit_id,
                    "shows": e.shows,
                    "event_id": e.event_id,
                    "end": e.end or None,
                    "samples": e.samples,
                    "met": e.met,
                    "problem": e.problem,
                }
                for e in self.evidence
            ],
            "error": self.error or None,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def unit_ids_for(scenario: Scenario) -> tuple[str, ...]:
    """Unit ids of a scenario's cars: stable, and plainly not real register codes."""
    return tuple(f"RIG-{scenario.name}-{car}" for car in range(1, scenario.cars + 1))


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def run_scenario(scenario: Scenario, work_dir: Path) -> ScenarioResult:
    """Run one scenario on real processes in ``work_dir``; never raises for a failed run."""
    result = ScenarioResult(scenario.name, scenario.transport)
    spec = SystemSpec(
        unit_ids=unit_ids_for(scenario),
        register_csv=None,
        detect=scenario.detect,
        seed=scenario.seed,
        transport=scenario.transport,
        traffic=scenario.traffic,
    )
    try:
        async with running_system(spec, work_dir) as system:
            view = FleetView(system.query_address, spec.unit_ids)
            try:
                await _play(scenario, system, view, result)
            finally:
                await view.close()
    except Exception as exc:  # a run that could not even start is a failed scenario
        result.error = f"{type(exc).__name__}: {exc}"
    return result


async def _wait_online(system: RunningSystem, view: FleetView) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ONLINE_TIMEOUT_S
    while loop.time() < deadline:
        if dead := system.alive():
            raise RuntimeError(f"{', '.join(dead)} exited:\n{system.agent.log_tail()}")
        units = await view.units()
        if len(units) == len(system.spec.unit_ids) and all(u["status"] == "online" for u in units):
            return
        await asyncio.sleep(POLL_S)
    raise TimeoutError(f"cars not all online after {ONLINE_TIMEOUT_S} s")


async def _play(
    scenario: Scenario, system: RunningSystem, view: FleetView, result: ScenarioResult
) -> None:
    await _wait_online(system, view)
    loop = asyncio.get_running_loop()
    start = loop.time()
    unit_ids = system.spec.unit_ids
    # Each step: (seconds after start, injection index, "inject" | "clear").
    steps = sorted(
        [(inj.at_s, i, "inject") for i, inj in enumerate(scenario.injections)]
        + [
            (inj.clear_at_s, i, "clear")
            for i, inj in enumerate(scenario.injections)
            if inj.clear_at_s is not None
        ]
    )
    injected_at: dict[int, float] = {}  # injection index -> wall-clock epoch seconds
    result.expected = [
        ExpectedResult(x.type, unit_ids[x.car - 1], x.phase, x.within_s)
        for x in scenario.expectations
    ]
    result.evidence = [
        EvidenceResult(
            scenario.expectations[x.expect].type,
            unit_ids[scenario.expectations[x.expect].car - 1],
            x.shows,
        )
        for x in scenario.evidence
    ]
    # The event id each expectation matched (an [[evidence]] judges that event's window).
    matched_ids: dict[int, str] = {}
    matched_seqs: set[int] = set()
    events: list[dict[str, Any]] = []
    all_met_at: float | None = None
    while True:
        now = loop.time() - start
        while steps and steps[0][0] <= now:
            _, index, op = steps.pop(0)
            injection = scenario.injections[index]
            # Options shape an injection; a clear names only the fault.
            request: dict[str, object] = {
                **(injection.options if op == "inject" else {}),
                "op": op,
                "car": injection.car,
                "fault": injection.fault,
            }
            if op == "inject":
                injected_at[index] = time.time()
            await system.control_request(request)
        if dead := system.alive():
            raise RuntimeError(f"{', '.join(dead)} exited unexpectedly")
        events = await view.events()
        for number, (expectation, outcome) in enumerate(
            zip(scenario.expectations, result.expected, strict=True)
        ):
            if outcome.fleet_latency_ms is not None or expectation.after not in injected_at:
                continue
            since = injected_at[expectation.after]
            for event in events:
                committed = _epoch(event.get("committed"))
                if (
                    (event["type"], event["phase"], event["unit_id"])
                    == (outcome.type, outcome.phase, outcome.unit_id)
                    and event["seq"] not in matched_seqs
                    and committed is not None
                ):
                    # The record's time is the agent's decision; before the injection it
                    # cannot be this injection's doing.
                    decided = _epoch(event["time"])
                    if decided is None or decided < since:
                        continue
                    matched_seqs.add(event["seq"])
                    matched_ids[number] = event["event_id"]
                    outcome.agent_latency_ms = (decided - since) * 1e3
                    outcome.fleet_latency_ms = (committed - since) * 1e3
                    break
        await _judge_evidence(scenario, view, matched_ids, result.evidence)
        if (
            all(o.fleet_latency_ms is not None for o in result.expected)
            and all(e.met for e in result.evidence)
            and not steps
        ):
            all_met_at = all_met_at if all_met_at is not None else now
            if now - all_met_at >= scenario.quiet_s:
                break
        if now >= scenario.duration_s:
            break
        await asyncio.sleep(POLL_S)
    expected_keys = {(o.type, o.unit_id) for o in result.expected}
    result.unexpected = [
        {"type": e["type"], "unit_id": e["unit_id"], "phase": e["phase"], "reason": e["reason"]}
        for e in events
        if e["phase"] == "RAISED"
        and e["seq"] not in matched_seqs
        and e["type"] not in scenario.allow
        and (e["type"], e["unit_id"]) not in expected_keys
    ]


async def _judge_evidence(
    scenario: Scenario,
    view: FleetView,
    matched_ids: dict[int, str],
    results: list[EvidenceResult],
) -> None:
    """Judge the newest stored window of each matched event an ``[[evidence]]`` names,
    until it shows what it must (a later window may: it supersedes the raise's)."""
    for wanted, outcome in zip(scenario.evidence, results, strict=True):
        event_id = matched_ids.get(wanted.expect)
        if outcome.met or event_id is None:
            continue
        evidence = await view.evidence(event_id)
        if evidence is None:
            continue
        outcome.event_id = event_id
        outcome.end = records_pb2.EvidenceEnd.Name(evidence.end).removeprefix("EVIDENCE_END_")
        outcome.samples = evidence.samples
        try:
            samples = decode_samples(evidence)
        except EvidenceError as exc:
            outcome.problem = f"malformed evidence: {exc}"
            continue
        outcome.problem = CHECKS[wanted.shows](evidence, samples)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `liftwatch-rig run`."""
    parser.add_argument(
        "scenarios",
        nargs="+",
        metavar="SCENARIO",
        help="scenario files, or names of files in hil_tests/scenarios/",
    )
    parser.add_argument(
        "--transport",
        choices=["tcp", "rtu"],
        default=None,
        help="override each scenario's transport (rtu: Modbus RTU over a pty serial line)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print one JSON object {"scenarios": [{"name", "passed", "events", "unexpected"}]}',
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="keep each run's databases and logs under this directory",
    )
    parser.add_argument(
        "--parallel",
        type=int,
        default=1,
        metavar="N",
        help="run up to N scenarios at once, each with its own processes (default 1)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the scenarios; exit status 1 if any failed, 2 if a file is invalid."""
    scenarios: list[Scenario] = []
    problems: list[str] = []
    for name in args.scenarios:
        try:
            scenarios.append(load_scenario(resolve(name)))
        except ScenarioError as exc:
            problems.append(str(exc))
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    if args.transport is not None:
        scenarios = [_with_transport(s, args.transport) for s in scenarios]
    if args.parallel < 1:
        print("liftwatch-rig run: --parallel must be >= 1", file=sys.stderr)
        return 2
    results = asyncio.run(_run_all(scenarios, args.work_dir, args.json, args.parallel))
    if args.json:
        print(json.dumps({"scenarios": [r.as_json() for r in results]}, ensure_ascii=False))
    return 0 if all(r.passed for r in results) else 1


def _with_transport(scenario: Scenario, transport: str) -> Scenario:
    return replace(scenario, transport=transport)


async def run_scenarios(
    scenarios: list[Scenario], base: Path, parallel: int = 1, quiet: bool = True
) -> list[ScenarioResult]:
    """Run ``scenarios`` (at most ``parallel`` at once) under ``base``; results in order."""
    slots = asyncio.Semaphore(parallel)

    async def one(scenario: Scenario) -> ScenarioResult:
        async with slots:
            result = await run_scenario(scenario, base / scenario.name)
        if not quiet:
            _print_result(result, base / scenario.name)
        return result

    return list(await asyncio.gather(*(one(s) for s in scenarios)))


async def _run_all(
    scenarios: list[Scenario], work_dir: Path | None, quiet: bool, parallel: int
) -> list[ScenarioResult]:
    with contextlib.ExitStack() as stack:
        base = work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rig-")))
        return await run_scenarios(scenarios, base, parallel, quiet)


def _print_result(result: ScenarioResult, work_dir: Path) -> None:
    verdict = "PASS" if result.passed else "FAIL"
    print(f"{verdict} {result.name} ({result.transport})", flush=True)
    for e in result.expected:
        if e.fleet_latency_ms is None:
            print(f"  missing  {e.type} {e.phase} on {e.unit_id} (deadline {e.deadline_s} s)")
        else:
            mark = "ok" if e.met else "LATE"
            print(
                f"  {mark:8} {e.type} {e.phase} on {e.unit_id}: agent "
                f"{e.agent_latency_ms:.0f} ms, fleet {e.fleet_latency_ms:.0f} ms"
            )
    for x in result.evidence:
        mark = "ok" if x.met else "NOT SHOWN"
        window = f"{x.end} window, {x.samples} samples" if x.end else "no evidence stored"
        print(f"  {mark:8} evidence of {x.type} on {x.unit_id} shows {x.shows} ({window})")
        if x.problem:
            print(f"           {x.problem}")
    for u in result.unexpected:
        print(f"  unexpected {u['type']} {u['phase']} on {u['unit_id']}: {u['reason']}")
    if result.error:
        print(f"  error: {result.error} (logs in {work_dir})")
