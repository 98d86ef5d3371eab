"""``liftwatch-fleet``: serve the fleet, or read its store (units, coverage, events).

The read commands open the SQLite file read-only; WAL lets them run beside ``serve``.
Errors in configuration or database are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from fleet.clock import utc_now
from fleet.config import (
    MEMORY,
    ConfigError,
    FleetConfig,
    default_config,
    load_config,
    split_listen,
)
from fleet.coverage import UnitStatus, coverage, status_of
from fleet.registry import RegistryError
from fleet.server import ServeError, serve
from fleet.store.base import EventQuery, StoreError, UnitQuery
from fleet.store.sqlite import SqliteStore
from fleet.views import (
    coverage_json,
    event_json,
    event_type_number,
    iso,
    table,
    unit_json,
)

PROG = "liftwatch-fleet"
EXIT_USAGE = 2
EXIT_RUNTIME = 1

log = logging.getLogger("fleet")


class UsageError(Exception):
    """A bad argument, config or database: reported in one line, exit status 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="LiftWatch fleet manager: ingest agent streams, report coverage."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_cmd = commands.add_parser(
        "serve",
        help="run the gRPC server until SIGTERM/SIGINT",
        description="Run the fleet manager. Prints one JSON line "
        '{"ready": true, "grpc": "HOST:PORT"} on stdout once the port is bound; '
        "logs go to stderr.",
    )
    serve_cmd.add_argument("--config", type=Path, help="TOML config (default: built-in)")
    serve_cmd.add_argument("--listen", help="HOST:PORT to bind, overrides server.listen")
    serve_cmd.add_argument("--db", help="SQLite file or :memory:, overrides store.path")
    serve_cmd.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )

    def read_command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        source = sub.add_mutually_exclusive_group()
        source.add_argument("--config", type=Path, help="TOML config naming the store")
        source.add_argument("--db", type=Path, help="the fleet's SQLite file")
        sub.add_argument("--json", action="store_true", help="print one JSON object")
        return sub

    units_cmd = read_command("units", "list units (registered or ever reported)")
    units_cmd.add_argument("--street")
    units_cmd.add_argument("--building")
    units_cmd.add_argument("--contractor")
    units_cmd.add_argument("--model")
    units_cmd.add_argument("--firmware")
    units_cmd.add_argument("--status", choices=[s.value for s in UnitStatus])
    units_cmd.add_argument(
        "--monitored",
        action="store_true",
        help="only units that have reported (ignored with --status never_seen)",
    )

    read_command("coverage", "count registered, monitored, online, ... units")

    events_cmd = read_command("events", "list stored events, oldest first")
    events_cmd.add_argument("--unit", help="only this unit_id")
    events_cmd.add_argument("--type", help="event type, e.g. ENTRAPMENT")
    events_cmd.add_argument(
        "--limit", type=_positive_int, default=100, help="newest N events (default 100)"
    )
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _config(path: Path | None) -> FleetConfig:
    return load_config(path) if path is not None else default_config(Path.cwd())


def _open_store(args: argparse.Namespace) -> tuple[SqliteStore, FleetConfig]:
    config = default_config(Path.cwd()) if args.db is not None else _config(args.config)
    path = str(args.db) if args.db is not None else config.store.path
    if path == MEMORY:
        raise UsageError("the store is :memory:, which only the serving process can read")
    return SqliteStore.open(path, readonly=True), config


def _cmd_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = _config(args.config)
    if args.listen is not None:
        try:
            split_listen(args.listen)
        except ValueError as exc:
            raise UsageError(f"--listen: {exc}") from None
        config = dataclasses.replace(
            config, server=dataclasses.replace(config.server, listen=args.listen)
        )
    if args.db is not None:
        db = args.db if args.db == MEMORY else str(Path(args.db).resolve())
        config = dataclasses.replace(config, store=dataclasses.replace(config.store, path=db))

    def ready(address: str) -> None:
        print(json.dumps({"ready": True, "grpc": address}), flush=True)

    asyncio.run(serve(config, ready))
    return 0


def _cmd_units(args: argparse.Namespace) -> int:
    store, config = _open_store(args)
    wanted = UnitStatus(args.status) if args.status else None
    try:
        units = store.list_units(
            UnitQuery(
                street=args.street or "",
                building=args.building or "",
                contractor=args.contractor or "",
                model=args.model or "",
                firmware=args.firmware or "",
                reported_only=args.monitored and wanted is not UnitStatus.NEVER_SEEN,
            )
        )
    finally:
        store.close()
    now = utc_now()
    listed = [(u, status_of(u, now, config.coverage)) for u in units]
    listed = [(u, s) for u, s in listed if wanted is None or s is wanted]
    if args.json:
        print(json.dumps({"units": [unit_json(u, s) for u, s in listed]}, ensure_ascii=False))
        return 0
    headers = ("UNIT_ID", "STATUS", "REG", "STREET", "BUILDING", "MODEL", "FIRMWARE", "AGENT")
    rows = [
        (
            u.unit_id,
            s.value,
            "yes" if u.registered else "NO",
            u.register.street,
            u.register.building,
            u.model,
            u.controller.firmware,
            u.agent_id,
            iso(u.last_seen),
        )
        for u, s in listed
    ]
    print(table([*headers, "LAST_SEEN"], rows))
    return 0


def _cmd_coverage(args: argparse.Namespace) -> int:
    store, config = _open_store(args)
    try:
        units = store.list_units(UnitQuery())
    finally:
        store.close()
    counts = coverage_json(coverage(units, utc_now(), config.coverage))
    if args.json:
        print(json.dumps(counts))
    else:
        print(table(("", "UNITS"), list(counts.items())))
    return 0


def _cmd_events(args: argparse.Namespace) -> int:
    try:
        type_number = event_type_number(args.type) if args.type else 0
    except ValueError as exc:
        raise UsageError(f"--type: {exc}") from None
    store, _ = _open_store(args)
    try:
        events = store.list_events(
            EventQuery(unit_id=args.unit or "", type=type_number, limit=args.limit)
        )
    finally:
        store.close()
    rendered = [event_json(e) for e in events]
    if args.json:
        print(json.dumps({"events": rendered}, ensure_ascii=False))
        return 0
    columns = ("time", "unit_id", "type", "phase", "floor", "onset", "event_id", "reason")
    print(table([c.upper() for c in columns], [[e[c] for c in columns] for e in rendered]))
    return 0


_COMMANDS = {
    "serve": _cmd_serve,
    "units": _cmd_units,
    "coverage": _cmd_coverage,
    "events": _cmd_events,
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
    except (UsageError, ConfigError, StoreError, RegistryError) as exc:
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
