"""``liftwatch-fleet coverage``: counts of units by live status, per group, and transitions."""

from __future__ import annotations

import argparse

from fleet.cli.common import (
    StoreCommand,
    open_readonly,
    positive_int,
    print_json,
)
from fleet.clock import utc_now
from fleet.read.shape import to_json
from fleet.read.views import (
    CoverageChangeView,
    CoverageHistoryView,
    coverage_view,
    table,
)
from fleet.store.base import UnitQuery
from fleet.units.coverage import GROUP_KEYS, coverage, coverage_by


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], store_command: StoreCommand
) -> None:
    """Add the `coverage` command (``store_command`` adds --config, --db and --json)."""
    coverage_cmd = store_command(
        "coverage",
        "count registered, monitored, online, ... units",
        "Coverage of the district: units online, stale, offline, blind (agent up, controller "
        "link down) or never seen, and unregistered units reporting. See fleet/units/coverage.py "
        "for the thresholds ([coverage] in the config).",
    )
    coverage_cmd.add_argument("--by", choices=GROUP_KEYS, help="also count per group")
    coverage_cmd.add_argument(
        "--history", metavar="UNIT", help="the coverage transitions of UNIT ('all' for every unit)"
    )
    coverage_cmd.add_argument(
        "--limit", type=positive_int, default=100, help="newest N transitions (default 100)"
    )


def run(args: argparse.Namespace) -> int:
    """Print the coverage counts (per group with --by) or transitions; returns the exit status."""
    store, config = open_readonly(args)
    try:
        units = store.list_units(UnitQuery())
        history = (
            store.coverage_history("" if args.history == "all" else args.history, args.limit)
            if args.history
            else None
        )
    finally:
        store.close()
    now = utc_now()
    if history is not None:
        shown = to_json(CoverageHistoryView(tuple(CoverageChangeView.of(c) for c in history)))
        changes = shown["history"]
        if args.json:
            print_json(shown)
        else:
            columns = ("at", "unit_id", "old_status", "new_status", "cause")
            rows = [[c[k] for k in columns] for c in changes]
            zone = config.http.time_zone
            print(table([c.upper() for c in columns], rows, time_zone=zone))
        return 0
    by_group = coverage_by(units, args.by, now, config.coverage) if args.by else None
    view = coverage_view(coverage(units, now, config.coverage), by_group)
    counts = to_json(view.counts)
    groups = to_json(view.groups or ())
    if args.json:
        print_json(to_json(view))
    elif args.by:
        names = ("name", *counts)
        print(table([c.upper() for c in names], [[g[c] for c in names] for g in groups]))
    else:
        print(table(("", "UNITS"), list(counts.items())))
    return 0
