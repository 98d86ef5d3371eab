"""`liftwatch-agent`: the edge agent that watches elevator controllers over Modbus."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from agent import __version__
from agent.config import ConfigError, load_config


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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `liftwatch-agent`; returns the process exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        try:
            config = load_config(args.config)
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
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    from agent.app import run  # imported late: check-config must not need pymodbus

    return run(config)
