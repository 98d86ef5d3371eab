"""Every scenario in hil_tests/scenarios passes through `liftwatch-rig run`, as CI runs it.

The rig runs them all at once (four at a time, each with its own fleet, emulator and
agent processes); each scenario then gets its own test result here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hil_tests.scenario import SCENARIO_DIR, load_scenario

pytestmark = pytest.mark.e2e

SCENARIOS = sorted(SCENARIO_DIR.glob("*.toml"))


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    work = tmp_path_factory.mktemp("scenarios")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hil_tests",
            "run",
            "--json",
            "--parallel",
            "4",
            "--work-dir",
            str(work),
            *map(str, SCENARIOS),
        ],
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    results = json.loads(done.stdout)["scenarios"]
    return {r["name"]: {**r, "work": work / r["name"]} for r in results}


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_passes(path: Path, report: dict[str, dict[str, Any]]) -> None:
    scenario = load_scenario(path)
    result = report[scenario.name]
    assert result["passed"], json.dumps(result, indent=1, default=str)
    assert result["transport"] == scenario.transport
    for event in result["events"]:
        # The fleet commits what the agent decided within moments, not seconds.
        assert event["fleet_latency_ms"] - event["agent_latency_ms"] < 1000, event
