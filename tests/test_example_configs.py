"""The shipped agent example configs pass `liftwatch-agent check-config` after the
README's pki steps (issue 19, item 9): `liftwatch-fleet pki init tls` and `pki agent tls
ID` write the files the examples name, where they name them."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from agent.cli import main as agent_main
from agent.config import load_config
from fleet.cli.main import main as fleet_main

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "agent"


@pytest.mark.parametrize("example", ["agent.example.toml", "agent.rtu.example.toml"])
def test_the_examples_pass_after_the_readme_pki_steps(
    example: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / example
    shutil.copy(DEPLOY / example, config)
    found = re.search(r'^id = "([^"]+)"', config.read_text(encoding="utf-8"), re.M)
    assert found is not None
    monkeypatch.chdir(tmp_path)
    assert fleet_main(["pki", "init", "tls"]) == 0
    assert fleet_main(["pki", "agent", "tls", found[1]]) == 0
    loaded = load_config(config)  # every file it names exists
    assert loaded.fleet.cert == tmp_path / "tls" / "agents" / f"{found[1]}.pem"
    if example == "agent.example.toml":
        # The RTU example's serial port is the box's, not this machine's.
        assert agent_main(["check-config", str(config)]) == 0
