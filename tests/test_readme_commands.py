"""README.md's command table names every command of every LiftWatch program (issue 19,
item 9): a command added to a parser and not to the README fails here."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from agent.cli import build_parser as agent_parser
from fleet.cli.main import _parser as fleet_parser
from hil_tests.cli import build_parser as rig_parser

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(sub.choices)


@pytest.mark.parametrize(
    ("program", "parser"),
    [
        ("liftwatch-agent", agent_parser()),
        ("liftwatch-fleet", fleet_parser()),
        ("liftwatch-rig", rig_parser()),
    ],
)
def test_the_readme_lists_every_command(program: str, parser: argparse.ArgumentParser) -> None:
    commands = _commands(parser)
    assert commands, f"{program}: no commands found"
    missing = [c for c in commands if f"`{program} {c}" not in README]
    assert missing == [], f"README.md's command table lacks {program} {missing}"


def test_the_fleet_has_a_version() -> None:
    with pytest.raises(SystemExit) as done:
        fleet_parser().parse_args(["--version"])
    assert done.value.code == 0
