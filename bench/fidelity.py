"""Phase independence of every detection rule (issue 13, 1.7), over the emulator.

For every event of the taxonomy, its fault is injected at many moments of the car's
cycle (departing, accelerating, cruising, decelerating, levelling, doors opening, open,
closing, parked; at a landing and between floors where it applies), each at a random point
of that moment and of the poll period, in a one-car emulated group on a virtual clock; the
registers are sampled every poll period through the agent's real `reference` profile into
its real `UnitDetectors` (`hil_tests/fidelity.py` says how each event is played, what its
near miss is, and what each phase name means for it). CONTROLLER_LINK_LOST is the
controller falling silent, polled by the agent's real back-off policy and judged by
`agent.detect.link`.

Prints one JSON object with ``--json``::

    {"poll_period_ms": P, "trials": N, "wall_s": S,
     "events": [{"type", "phases", "missed", "false_alarms", "worst_beyond_threshold_ms",
                 "runs", "near_miss_runs", "not_shown", "also_raised", "misses",
                 "false_alarm_details"}]}

``phases`` lists the injection phases exercised (the fault showed in the registers);
``missed`` counts injections not raised within threshold + one poll period of the time
the register image first showed the fault; ``false_alarms`` counts near-miss trials that
raised the event, raises of it in healthy service (every trial's warm-up), and raises of
it in another event's fault trial that are no consequence of that fault
(`hil_tests.fidelity.CONSEQUENCES`);
``worst_beyond_threshold_ms`` is the worst (raised - visible - threshold); ``not_shown``
names phases where the fault never showed (a play the emulator could not stage: no
verdict either way); ``also_raised`` counts the other events its fault trials raised
(consequences such as an entrapment after a safety stop, or a second verdict worth a
look); ``misses`` and ``false_alarm_details`` say where and what.

Exit status 0 when nothing was missed or falsely raised and every event has at least 6
phases, else 1. Run from the repository root: ``python bench/fidelity.py --json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hil_tests.fidelity import POLL_PERIOD_S, TrialResult, run_spec, summarize, trial_specs

MIN_PHASES = 6


def run(repeats: int, seed: int, workers: int) -> dict[str, object]:
    """Every trial, ``repeats`` times over, on ``workers`` processes; the JSON object."""
    began = time.perf_counter()
    specs = trial_specs(repeats, seed)
    results: list[TrialResult]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(run_spec, specs, chunksize=8))
    else:
        results = [run_spec(spec) for spec in specs]
    return {
        "poll_period_ms": round(POLL_PERIOD_S * 1000.0, 1),
        "trials": len(specs),
        "wall_s": round(time.perf_counter() - began, 1),
        "events": summarize(results),
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the bench, print the result; returns the exit status."""
    parser = argparse.ArgumentParser(
        description="Inject every event's fault at many phases of the car's cycle and judge "
        "the real detectors: missed, false alarms, worst latency beyond threshold."
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--repeats", type=int, default=2, help="trials per event and phase (default 2)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--workers", type=int, default=0, help="worker processes (default: one per CPU)"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.workers < 0:
        parser.error("--repeats must be >= 1 and --workers >= 0")
    report = run(args.repeats, args.seed, args.workers or os.cpu_count() or 1)
    events = report["events"]
    assert isinstance(events, list)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print(
            f"poll period {report['poll_period_ms']} ms, {report['trials']} trials, "
            f"{report['wall_s']} s"
        )
        for e in events:
            print(
                f"{e['type']:26} phases {len(e['phases']):2}  missed {e['missed']:3}  "
                f"false {e['false_alarms']:3}  worst beyond {e['worst_beyond_threshold_ms']} ms"
            )
            for m in e["misses"] + e["false_alarm_details"]:
                print(f"    {m['phase']}: {m['what']}")
    clean = all(
        e["missed"] == 0 and e["false_alarms"] == 0 and len(e["phases"]) >= MIN_PHASES
        for e in events
    )
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
