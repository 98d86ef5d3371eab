"""`liftwatch-agent`: the edge agent that watches elevator controllers over Modbus."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from agent import __version__
from agent.config import ConfigError, check_config, read_toml


def build_parser() -> argparse.ArgumentParser:
    """The agent's argument parser, one sub-command per job."""
    parser = argparse.ArgumentParser(
        prog="liftwatch-agent",
        description="LiftWatch edge agent: polls elevator controllers over Modbus (read-only), "
        "detects door faults and entrapment, and streams records to the fleet manager.",
    )
    parser.add_argument("--version", action="version", version=f"liftwatch-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="run the agent",
        description="Poll the configured units, detect events, keep every record in the "
        "outbox and stream it to the fleet. Stops on SIGTERM or Ctrl-C.",
    )
    run.add_argument("--config", type=Path, required=True, help="agent config (TOML)")
    run.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity on stderr (default INFO)",
    )
    check = sub.add_parser(
        "check-config",
        help="validate a config file and list every problem",
        description="Validate an agent config. Prints every problem with the key that has "
        "it; exit status 1 when there is one, 0 when the config is good.",
    )
    check.add_argument("config", type=Path, help="agent config (TOML)")
    probe = sub.add_parser(
        "probe",
        help="find controllers on a line and show their live state (read-only)",
        description="Commissioning: scan slave ids 1..247 (or --slave N) with a short "
        "timeout, read their identity strings, and show the decoded live state with link "
        "statistics, refreshing until Ctrl-C. --once --json prints one JSON object: "
        '{"slaves": [{"slave", "identity", "state", "link"}]}. Sends read requests only.',
    )
    add_probe_arguments(probe)
    return parser


def add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    """The probe's command-line options."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial port of the RS-485 line, e.g. /dev/ttyUSB0")
    where.add_argument("--tcp", metavar="HOST:PORT", help="a Modbus TCP gateway instead")
    parser.add_argument("--baud", type=int, default=19200, help="baud rate (default 19200)")
    parser.add_argument("--parity", choices=["N", "E", "O"], default="E", help="default E")
    parser.add_argument("--bytesize", type=int, choices=[7, 8], default=8, help="default 8")
    parser.add_argument("--stopbits", type=int, choices=[1, 2], default=1, help="default 1")
    parser.add_argument(
        "--slave", type=int, choices=range(1, 248), metavar="N", help="only this id (1..247)"
    )
    parser.add_argument(
        "--profile", default="reference", help="register map: shipped name or .toml path"
    )
    parser.add_argument(
        "--timeout", type=float, default=0.1, help="per request, seconds (default 0.1)"
    )
    parser.add_argument("--poll-hz", type=float, default=5.0, help="live polling rate")
    parser.add_argument("--refresh", type=float, default=0.5, help="screen refresh, seconds")
    parser.add_argument("--once", action="store_true", help="one poll, print, exit")
    parser.add_argument("--json", action="store_true", help="with --once: one JSON line")


def main(argv: list[str] | None = None) -> int:
    """Entry point of `liftwatch-agent`; returns the process exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "probe":
        from agent.probe import main as probe_main

        return probe_main(args)
    if args.command == "check-config":
        try:
            config = check_config(
                read_toml(args.config), args.config.resolve().parent, str(args.config)
            )
        except ConfigError as exc:
            for problem in exc.problems:
                print(f"{exc.source}: {problem}")
            return 1
        print(f"{args.config}: OK ({len(config.units)} unit(s) on {len(config.buses)} bus(es))")
        return 0
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from agent.remote_config import load_running_config

    try:
        # The box's file, with the fleet document it last applied (agent.remote_config).
        config, applied = load_running_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    from agent.app import run  # imported late: check-config must not need pymodbus

    return run(config, config_path=args.config, applied=applied)
