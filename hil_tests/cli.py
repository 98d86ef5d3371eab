"""`liftwatch-rig`: emulated controllers, scenarios, the soak, and the whole-system demo."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from types import ModuleType

from hil_tests import demo, runner, soak
from hil_tests.emulator import command as emulate

# Each sub-command is a module with a docstring (its --help text), `add_arguments(parser)`
# and `run(args) -> int`.
COMMANDS: dict[str, tuple[ModuleType, str]] = {
    "emulate": (emulate, "serve the reference register map for N emulated cars"),
    "run": (
        runner,
        "run scenarios against the real agent and fleet, report pass/fail and latencies",
    ),
    "soak": (soak, "days of emulated traffic through the real detectors, on a virtual clock"),
    "demo": (demo, "run fleet, emulator and agent together and inject an entrapment"),
}


def build_parser() -> argparse.ArgumentParser:
    """The rig's argument parser, one sub-command per job."""
    parser = argparse.ArgumentParser(
        prog="liftwatch-rig",
        description="LiftWatch hardware-in-the-loop rig: emulated elevator controllers, "
        "scenarios and soak runs against the real agent, and a demo of the whole system.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        module.add_arguments(
            sub.add_parser(
                name,
                help=summary,
                description=module.__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `liftwatch-rig`; returns the process exit status."""
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = COMMANDS[args.command][0].run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
