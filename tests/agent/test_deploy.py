"""The shipped systemd units (the agent's and the updater's) pass `systemd-analyze verify`
without a single warning."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import require_binary

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "agent"


def verify(
    unit_text: str, tmp_path: Path, name: str = "liftwatch-agent.service"
) -> subprocess.CompletedProcess[str]:
    # verify checks that ExecStart binaries exist: point them at this venv's programs.
    bin_dir = Path(sys.executable).parent
    unit = tmp_path / name
    unit.write_text(
        unit_text.replace("/opt/liftwatch/current/bin/", f"{bin_dir}/").replace(
            "/opt/liftwatch/updater/bin/liftwatch-updater", sys.executable
        )
    )
    return subprocess.run(
        [require_binary("systemd-analyze"), "verify", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_agent_unit_verifies_cleanly(tmp_path: Path) -> None:
    text = (DEPLOY / "liftwatch-agent.service").read_text()
    assert "Type=notify" in text and "WatchdogSec=" in text
    result = verify(text, tmp_path)
    assert result.returncode == 0, result.stderr
    assert str(tmp_path) not in result.stderr + result.stdout, result.stderr


def test_the_check_catches_a_broken_unit(tmp_path: Path) -> None:
    text = (DEPLOY / "liftwatch-agent.service").read_text().replace("Type=notify", "Type=notifyy")
    result = verify(text, tmp_path)
    assert "Failed to parse service type" in result.stderr


def test_updater_unit_verifies_cleanly(tmp_path: Path) -> None:
    text = (DEPLOY / "liftwatch-updater.service").read_text()
    # Its own virtualenv, never the one it switches; the agent runs through `current`.
    assert "/opt/liftwatch/updater/bin/liftwatch-updater" in text
    assert (
        "/opt/liftwatch/current/bin/liftwatch-agent"
        in (DEPLOY / "liftwatch-agent.service").read_text()
    )
    result = verify(text, tmp_path, "liftwatch-updater.service")
    assert result.returncode == 0, result.stderr
    assert str(tmp_path) not in result.stderr + result.stdout, result.stderr
