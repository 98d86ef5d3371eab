"""scripts/check_system.py, which `make test` runs first (issue 19, item 9): on a machine
without the service packages it names each with what needs it, and one install command."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.check_system import NEEDS, main


def test_a_bare_machine_is_told_every_package_and_one_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LIFTWATCH_REQUIRE_SERVICES", raising=False)
    assert main(path=str(tmp_path)) == 0  # a developer's machine: told, not stopped
    said = capsys.readouterr().err
    packages = [n.package for n in NEEDS if n.package != "postgresql"]
    for package in packages:
        assert f"  {package} " in said, said
    (command,) = [line for line in said.splitlines() if "apt-get install" in line]
    assert all(p in command.split() for p in packages), command
    monkeypatch.setenv("LIFTWATCH_REQUIRE_SERVICES", "1")
    assert main(path=str(tmp_path)) == 1  # CI: missing is a failure, at the start


def test_a_program_on_the_path_counts_as_installed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    socat = tmp_path / "socat"
    socat.write_text("#!/bin/sh\n")
    socat.chmod(0o755)
    main(path=str(tmp_path))
    assert "  socat " not in capsys.readouterr().err
