"""``liftwatch-fleet events``: stored events, oldest first."""

from __future__ import annotations

import argparse

from fleet.cli.common import (
    StoreCommand,
    UsageError,
    open_readonly,
    positive_int,
    print_json,
)
from fleet.read.shape import to_json
from fleet.read.views import (
    EVENT_TABLE_COLUMNS,
    EventsView,
    EventView,
    event_cells,
    event_type_number,
    table,
)
from fleet.store.base import EventQuery


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], store_command: StoreCommand
) -> None:
    """Add the `events` command (``store_command`` adds --config, --db and --json)."""
    events_cmd = store_command("events", "list stored events, oldest first")
    events_cmd.add_argument("--unit", help="only this unit_id")
    events_cmd.add_argument("--type", help="event type, e.g. ENTRAPMENT")
    events_cmd.add_argument(
        "--limit", type=positive_int, default=100, help="newest N events (default 100)"
    )


def run(args: argparse.Namespace) -> int:
    """Print the newest stored events matching --unit / --type; returns the exit status."""
    try:
        type_number = event_type_number(args.type) if args.type else 0
    except ValueError as exc:
        raise UsageError(f"--type: {exc}") from None
    store, config = open_readonly(args)
    try:
        events = store.list_events(
            EventQuery(unit_id=args.unit or "", type=type_number, limit=args.limit)
        )
    finally:
        store.close()
    if args.json:
        print_json(to_json(EventsView(tuple(EventView.of(e) for e in events))))
        return 0
    rows = [event_cells(e) for e in events]
    zone = config.http.time_zone
    print(table([c.upper() for c in EVENT_TABLE_COLUMNS], rows, time_zone=zone))
    return 0
