"""``liftwatch-fleet units``: list units with their live status, or import the district register."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from fleet.cli.common import (
    PROG,
    StoreCommand,
    UsageError,
    open_readonly,
    print_json,
    store_target,
)
from fleet.clock import utc_now
from fleet.read.selection import UnitFilter, select_units
from fleet.read.shape import out, to_json
from fleet.read.views import (
    UnitView,
    iso,
    table,
)
from fleet.store.open import open_store
from fleet.units.coverage import UnitStatus
from fleet.units.registry import read_register

# What `units --json` and `units import --json` print: one definition each
# (fleet.read.shape), like the API's answers, but not API components.


@dataclass(frozen=True, slots=True)
class UnitsView:
    """`units --json`: every matching unit (the API's Unit), no paging."""

    units: tuple[UnitView, ...] = out()


@dataclass(frozen=True, slots=True)
class SkippedRow:
    """A register row `units import` skipped."""

    line: int = out(minimum=1)
    reason: str = out()


@dataclass(frozen=True, slots=True)
class ImportedView:
    """`units import --json`."""

    file: str = out()
    imported: int = out("units added or updated", minimum=0)
    skipped: int = out(minimum=0)
    problems: tuple[SkippedRow, ...] = out()


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], store_command: StoreCommand
) -> None:
    """Add the `units` command (``store_command`` adds --config, --db and --json)."""
    units_cmd = store_command(
        "units",
        "list units, or `units import FILE.csv` to load the district register",
        "List units (registered or ever reported) with their live status, or with "
        "`import FILE.csv` load the district unit register: every bad row is reported "
        "with its line and reason, the rest imported; re-importing updates units.",
    )
    units_cmd.add_argument(
        "action", nargs="?", choices=["import"], help="import: load FILE into the register"
    )
    units_cmd.add_argument("file", nargs="?", type=Path, help="the register CSV to import")
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
    units_cmd.add_argument(
        "--unregistered", action="store_true", help="only units that report but are not registered"
    )


def run(args: argparse.Namespace) -> int:
    """List units (filtered), or with ``import FILE`` load the register; returns the exit status."""
    """List units, or with ``import FILE`` load the register; returns the exit status."""
    if args.action == "import":
        return _import_units(args)
    if args.file is not None:
        raise UsageError(f"unexpected argument {str(args.file)!r} (did you mean `units import`?)")
    store, config = open_readonly(args)
    wanted = UnitFilter(
        street=args.street or "",
        building=args.building or "",
        contractor=args.contractor or "",
        model=args.model or "",
        firmware=args.firmware or "",
        status=UnitStatus(args.status) if args.status else None,
        monitored=args.monitored or args.unregistered,
    )
    try:
        rows = store.list_units(wanted.store_query())
    finally:
        store.close()
    if args.unregistered:
        rows = [u for u in rows if not u.registered]
    listed = select_units(rows, wanted, utc_now(), config.coverage).units
    if args.json:
        print_json(to_json(UnitsView(tuple(UnitView.of(u, s) for u, s in listed))))
        return 0
    headers = ("UNIT_ID", "STATUS", "REG", "STREET", "BUILDING", "CONTRACTOR", "MODEL")
    rows_out = [
        (
            u.unit_id,
            s.value,
            "yes" if u.registered else "NO",
            u.register.street,
            u.register.building,
            u.register.contractor,
            u.model,
            u.controller.firmware,
            u.agent_id,
            iso(u.last_seen),
        )
        for u, s in listed
    ]
    zone = config.http.time_zone
    print(table([*headers, "FIRMWARE", "AGENT", "LAST_SEEN"], rows_out, time_zone=zone))
    return 0


def _import_units(args: argparse.Namespace) -> int:
    if args.file is None:
        raise UsageError("units import: name the register CSV file")
    target, _ = store_target(args)
    register = read_register(args.file)
    for problem in register.problems:
        print(f"{PROG}: {args.file}: {problem} (row skipped)", file=sys.stderr)
    store = open_store(target)
    try:
        imported = store.upsert_register(register.entries)
        store.upsert_register_details(register.details, register.optional)
    finally:
        store.close()
    result = ImportedView(
        str(args.file),
        imported,
        len(register.problems),
        tuple(SkippedRow(p.line, p.message) for p in register.problems),
    )
    if args.json:
        print_json(to_json(result))
    else:
        print(
            f"imported {imported} unit(s) from {args.file}; skipped {len(register.problems)} row(s)"
        )
    # Bad rows are reported, not fatal: the rest is in. A wholly bad file exits 2 above.
    return 0
