"""The README's first command: `liftwatch-rig demo --json` runs the whole system and reports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_demo_runs_the_system_and_reports_the_entrapment() -> None:
    done = subprocess.run(
        # Port 0 rather than the default 8080: a developer's own demo may hold that one.
        [
            sys.executable,
            "-m",
            "hil_tests",
            "demo",
            "--duration",
            "45",
            "--json",
            "--dashboard-port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert len(report["units"]) == 4
    assert {u["status"] for u in report["units"]} == {"online"}
    assert all(u["firmware"] for u in report["units"])
    raised = [e for e in report["events"] if (e["type"], e["phase"]) == ("ENTRAPMENT", "RAISED")]
    assert len(raised) == 1, report["events"]
    assert report["coverage"]["registered"] == 10_525
    assert report["coverage"]["online"] == 4
    # The dashboard was served, with a login for every role.
    assert report["dashboard"].startswith("http://127.0.0.1:")
    assert {login["role"] for login in report["logins"]} == {
        "regulator",
        "dispatcher",
        "contractor",
        "admin",
    }
