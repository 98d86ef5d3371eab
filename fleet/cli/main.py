"""``liftwatch-fleet``: serve the fleet, import the register, or read its store.

Commands: serve, units (list; ``units import FILE`` loads the register), coverage,
firmware, events, pki (certificates for mutual TLS), agents (the units each agent may
report for), users (dashboard and API accounts, see fleet.cli.users), releases and
rollout (signed agent releases in staged waves, see fleet.cli.releases), config (agents'
configuration documents, see fleet.cli.configs). The read commands
open the store read-only (a SQLite file, which WAL lets them read beside ``serve``, or a
``postgresql://`` URL). Errors in arguments, configuration, policy or database are one
line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from collections.abc import Sequence

from fleet.cli import (
    agents,
    configs,
    coverage,
    events,
    firmware,
    maintenance,
    northbound,
    pki,
    publish,
    releases,
    retention,
    serve,
    units,
)
from fleet.cli.common import (
    EXIT_RUNTIME,
    EXIT_USAGE,
    PROG,
    UsageError,
    add_store_command,
    existing_store_target,
    store_target,
)
from fleet.cli.history import add_parsers as add_history_parsers
from fleet.cli.history import commands as history_commands
from fleet.cli.reports import add_parsers as add_lifecycle_parsers
from fleet.cli.reports import commands as lifecycle_commands
from fleet.cli.users import add_parser as add_users_parser
from fleet.cli.users import commands as users_commands
from fleet.config import ConfigError
from fleet.serve.server import ServeError
from fleet.store.base import StoreError
from fleet.units.firmware import PolicyError
from fleet.units.registry import RegistryError


def _version() -> str:
    """The installed package's version ("unknown" when run from a tree not installed)."""
    try:
        return importlib.metadata.version("liftwatch")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="LiftWatch fleet manager: ingest agent streams; report units, coverage, "
        "firmware and events.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve.add_parser(commands)

    def store_command(name: str, help_text: str, description: str = "") -> argparse.ArgumentParser:
        return add_store_command(commands, name, help_text, description)

    units.add_parser(commands, store_command)
    coverage.add_parser(commands, store_command)
    firmware.add_parser(commands, store_command)
    add_lifecycle_parsers(commands, store_command)  # alarms, report, audit
    add_history_parsers(commands, store_command)  # verify-history, history, db
    events.add_parser(commands, store_command)
    maintenance.add_parser(commands, store_command)
    publish.add_parser(commands, store_command)
    northbound.add_parser(commands, store_command)
    retention.add_parser(commands)
    releases.add_parser(commands)
    configs.add_parser(commands)
    pki.add_parser(commands)
    agents.add_parser(commands)
    add_users_parser(commands)
    return parser


_COMMANDS = {
    "pki": pki.run,
    "agents": agents.run,
    "serve": serve.run,
    "units": units.run,
    "coverage": coverage.run,
    "firmware": firmware.run,
    "events": events.run,
    "maintenance": maintenance.run,
    "publish": publish.run,
    "northbound": northbound.run,
    "retention": retention.run,
    "releases": releases.run_releases,
    "rollout": releases.run_rollout,
    "config": configs.run,
    **lifecycle_commands(existing_store_target),
    **history_commands(existing_store_target),
    **users_commands(store_target),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``liftwatch-fleet`` with ``argv`` (default: sys.argv[1:]); returns the exit status.

    0 on success and after SIGTERM/SIGINT; 2 for bad arguments, config or database
    (one line on stderr, no traceback); 1 when the server cannot start otherwise.
    """
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits for --help and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return _COMMANDS[args.command](args)
    except (UsageError, ConfigError, StoreError, RegistryError, PolicyError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ServeError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers are installed
        return 0
    except BrokenPipeError:
        # The reader (e.g. `| head`) left; silence the flush at exit that would fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
