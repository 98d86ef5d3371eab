"""`liftwatch-rig`: emulated controllers and the demo that runs the whole system."""

from __future__ import annotations

import argparse
import sys

from hil_tests import demo, runner, soak
from hil_tests.emulator import command as emulate


def build_parser() -> argparse.ArgumentParser:
    """The rig's argument parser, one sub-command per job."""
    parser = argparse.ArgumentParser(
        prog="liftwatch-rig",
        description="LiftWatch hardware-in-the-loop rig: emulated elevator controllers, "
        "and a demo running emulator, agent and fleet together.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    emulate.add_arguments(
        sub.add_parser(
            "emulate",
            help="serve the reference register map for N emulated cars",
            description=emulate.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    demo.add_arguments(
        sub.add_parser(
            "demo",
            help="run fleet, emulator and agent together and inject an entrapment",
            description=demo.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    runner.add_arguments(
        sub.add_parser(
            "run",
            help="run scenarios against the real agent and fleet, report pass/fail and latencies",
            description=runner.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    soak.add_arguments(
        sub.add_parser(
            "soak",
            help="days of emulated traffic through the real detectors, on a virtual clock",
            description=soak.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `liftwatch-rig`; returns the process exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "emulate":
        return emulate.run(args)
    if args.command == "run":
        return runner.run(args)
    if args.command == "soak":
        return soak.run(args)
    return demo.run(args)


if __name__ == "__main__":
    sys.exit(main())
