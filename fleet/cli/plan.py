"""``liftwatch-fleet maintenance plan``: the plan by need (issue 17, item 4).

Each registered unit's next due date and why, from the policy in ``[maintenance.plan]``
(`fleet.reports.plan`); ``--overdue`` lists the overdue units only, ``--week`` each
contractor's units due within ``due_soon_days``; ``--format`` prints a table, JSON
(``{"units": [{"unit_id", "due", "why", ...}]}``, also ``--json``), CSV or an iCalendar
file (``ics``, RFC 5545) for a calendar program. Registered in the ``maintenance`` group
(`fleet.cli.maintenance`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

from fleet.cli.common import add_store_command, print_json
from fleet.clock import utc_now
from fleet.config import LANGUAGES, FleetConfig
from fleet.csv_cells import csv_text
from fleet.read.shape import out, to_json
from fleet.read.views import table
from fleet.reports.plan import (
    PLAN_CSV_COLUMNS,
    PlanUnitView,
    due_this_week,
    maintenance_plan,
    plan_ics,
    plan_rows,
)
from fleet.store.open import open_store

PLAN_FORMATS = ("text", "json", "csv", "ics")
Target = Callable[[argparse.Namespace], tuple[str, FleetConfig]]


@dataclass(frozen=True, slots=True)
class PlanListing:
    """``maintenance plan --json``: the units as the API's plan lists them (`PlanUnitView`)
    and, with ``--week``, each contractor's units due this week."""

    units: tuple[PlanUnitView, ...] = out()
    due_this_week: dict[str, tuple[str, ...]] | None = out(
        "--week: each contractor's unit_ids due within due_soon_days", omit_none=True
    )


def add_plan_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add ``plan`` to the maintenance group's sub-commands."""
    sub = add_store_command(
        commands,
        "plan",
        "each unit's next maintenance due date and why (plan by need)",
        "Each registered unit's next due date under [maintenance.plan]: TSG T5002's 15 days, "
        "stretched for lightly used, healthy units in the on-demand programme, shortened at "
        "once by a fault or a door-time trend; every date says why.",
    )
    sub.add_argument("--contractor", default="", help="only this contractor's units")
    sub.add_argument("--overdue", action="store_true", help="only the units past their due date")
    sub.add_argument(
        "--week",
        action="store_true",
        help="each contractor's units due within due_soon_days (7), overdue included",
    )
    sub.add_argument(
        "--format",
        choices=PLAN_FORMATS,
        default="text",
        help="text table (default), json (as --json), csv, or ics (iCalendar, RFC 5545)",
    )
    sub.add_argument(
        "--lang",
        choices=LANGUAGES,
        default="",
        help="the language of the reasons (default: [http] language of the config)",
    )
    return sub


def run_plan(args: argparse.Namespace, target: Target) -> int:
    """Print the plan as ``args`` ask (see the module docstring); exit status 0."""
    where, config = target(args)
    policy = config.maintenance.plan
    now = utc_now()
    lang = args.lang or config.http.language
    store = open_store(where, readonly=True)
    try:
        entries = maintenance_plan(store, policy, now, args.contractor)
    finally:
        store.close()
    if args.overdue:
        entries = [e for e in entries if e.overdue]
    week = due_this_week(entries, policy) if args.week else {}
    if args.week:
        entries = [e for group in week.values() for e in group]
    fmt = "json" if args.json else args.format
    if fmt == "json":
        listing = PlanListing(
            units=tuple(PlanUnitView.of(e, lang) for e in entries),
            due_this_week={c: tuple(e.unit_id for e in g) for c, g in week.items()}
            if args.week
            else None,
        )
        print_json(to_json(listing))
    elif fmt == "csv":
        sys.stdout.write(csv_text(PLAN_CSV_COLUMNS, plan_rows(entries, lang)))
    elif fmt == "ics":
        sys.stdout.write(plan_ics(entries, lang, now))
    else:
        rows = [[str(c) for c in row] for row in plan_rows(entries, lang)]
        print(table([c.upper() for c in PLAN_CSV_COLUMNS], rows))
        overdue = sum(1 for e in entries if e.overdue)
        print(f"{len(entries)} unit(s), {overdue} overdue", file=sys.stderr)
    return 0
