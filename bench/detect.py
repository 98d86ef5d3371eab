"""Detection cost per car sample: every detector family plus the health counters.

Builds a deterministic trace of normal traffic for one car (seeded), feeds it through a
fresh `UnitDetectors` several times, timing each ``feed`` with ``time.perf_counter_ns``,
and prints one JSON object: ``{"ns_per_sample": {"p50": ..., "p99": ...}, "samples": N,
"python": "3.11.x"}``. Run from the repository root: ``python bench/detect.py --json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.detect.engine import DetectionConfig, UnitDetectors
from agent.state import CarState
from tests.agent.detect_traffic import normal_operation


def _percentile(ordered: list[int], q: float) -> int:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(trace: list[CarState], rounds: int) -> list[int]:
    """Nanoseconds of each ``feed`` over ``rounds`` passes of ``trace`` (fresh detectors
    per pass, so every pass sees the same states)."""
    config = DetectionConfig.from_mapping(
        {"rated_speed_mm_s": 1000, "top_landing": 9, "bottom_landing": 0}
    )
    timings: list[int] = []
    clock = time.perf_counter_ns
    gc.collect()
    for _ in range(rounds):
        unit = UnitDetectors(config)
        feed = unit.feed
        for sample in trace:
            start = clock()
            feed(sample)
            timings.append(clock() - start)
    return timings


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmark, print the result; returns the exit status."""
    parser = argparse.ArgumentParser(
        description="Time all detectors per car sample over a recorded normal-traffic trace."
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object (default)")
    parser.add_argument("--samples", type=int, default=5000, help="trace length (default 5000)")
    parser.add_argument("--rounds", type=int, default=20, help="passes over the trace")
    parser.add_argument("--seed", type=int, default=2024, help="trace seed")
    args = parser.parse_args(argv)
    trace = normal_operation(random.Random(args.seed), args.samples)[: args.samples]
    measure(trace, 2)  # warm-up: imports, caches, allocator
    ordered = sorted(measure(trace, args.rounds))
    result = {
        "ns_per_sample": {"p50": _percentile(ordered, 0.50), "p99": _percentile(ordered, 0.99)},
        "samples": len(trace),
        "python": platform.python_version(),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
