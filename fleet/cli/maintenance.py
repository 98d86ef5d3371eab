"""``liftwatch-fleet maintenance``: watched visits, maintenance records and their verdicts.

- ``maintenance visits [--unit U] [--contractor C] [--since D] [--derive]``: the visits
  derived from the units' car-state records (``--derive`` first folds records not folded
  yet; serve does it every ``[maintenance.verdicts] derive_interval_s``).
- ``maintenance records import FILE.csv --contractor C [--by NAME]``: take a contractor's
  records (bad rows and other contractors' units named by line, the rest kept) and judge
  them; ``maintenance records list``: the records with their verdicts.
- ``maintenance audit [--since D] [--contractor C]``: derive visits, judge the records
  again (a late record from an agent's outbox may change a verdict), print each
  contractor's share of each verdict.

They take ``--config`` / ``--db`` like every store command and ``--json``. Bad input is
one line on stderr and exit status 2. See fleet/reports/maintenance.py for the rules.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import zoneinfo
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fleet.cli.common import (
    EXIT_USAGE,
    PROG,
    StoreCommand,
    UsageError,
    add_store_command,
    print_json,
    store_target,
)
from fleet.cli.plan import add_plan_parser, run_plan
from fleet.clock import utc_now
from fleet.config import LANGUAGES, FleetConfig
from fleet.read.maintenance import (
    ImportView,
    VerdictShare,
    VerdictSharesView,
    records_for,
    records_view,
    share_of,
    visits_view,
)
from fleet.read.scope import EVERY_UNIT
from fleet.read.shape import out, to_json
from fleet.read.views import table
from fleet.reports.maintenance import (
    RecordsError,
    audit,
    parse_records,
    take_records,
)
from fleet.reports.visits import derive_visits
from fleet.store.maintenance import RECORD_VERDICTS
from fleet.store.open import open_store

Target = Callable[[argparse.Namespace], tuple[str, FleetConfig]]


@dataclass(frozen=True, slots=True)
class AuditView:
    """``maintenance audit --json``: how many records were judged again and how many
    verdicts changed, the records by verdict, and each contractor's shares (the API's
    `VerdictShare`, as ``GET /api/maintenance/shares`` lists them)."""

    records: int = out("records judged", minimum=0)
    changed: int = out("verdicts that changed", minimum=0)
    verdicts: dict[str, int] = out("records by verdict (supported, too_short, ...)")
    contractors: tuple[VerdictShare, ...] = out("by contractor's name")


def _day(text: str) -> dt.datetime:
    try:
        return dt.datetime.combine(dt.date.fromisoformat(text), dt.time(), dt.UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], store_command: StoreCommand
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """Add ``maintenance`` and its sub-commands; returns the sub-command set, to which
    other features add theirs (``plan``)."""
    group = commands.add_parser(
        "maintenance",
        help="watched maintenance visits, maintenance records and their verdicts",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = group.add_subparsers(dest="maintenance_command", required=True, metavar="SUBCOMMAND")

    def leaf(name: str, help_text: str) -> argparse.ArgumentParser:
        # The --config / --db / --json of every store command, on the leaf.
        return add_store_command(sub, name, help_text)

    del store_command  # the leaves are store commands themselves (see leaf)
    visits = leaf("visits", "the maintenance visits watched on the units' controllers")
    visits.add_argument("--unit", default="", help="one unit")
    visits.add_argument("--contractor", default="", help="the units of one contractor")
    visits.add_argument("--since", type=_day, help="visits going on from this day (UTC)")
    visits.add_argument("--limit", type=int, default=200, help="newest N (200; 0 = all)")
    visits.add_argument(
        "--derive", action="store_true", help="first derive visits from records not folded yet"
    )

    records = sub.add_parser(
        "records",
        help="import maintenance records, or list them with their verdicts",
        description="`records import FILE.csv --contractor C`: columns unit_id (or "
        "registration_code), date, start, end, type (half_monthly, quarterly, half_yearly, "
        "annual), workers; a time without a UTC offset is [http] time_zone. `records list`: "
        "the records with their verdicts and evidence.",
    )
    actions = records.add_subparsers(dest="records_command", required=True, metavar="ACTION")
    take = add_store_command(actions, "import", "take a contractor's records from a CSV file")
    take.add_argument("file", type=Path, help="the records CSV (UTF-8)")
    take.add_argument(
        "--contractor", required=True, help="the contractor filing them (its units only)"
    )
    take.add_argument("--by", default="cli", help="who uploads them, for the history (cli)")
    listing = add_store_command(actions, "list", "the records with their verdicts")
    listing.add_argument("--unit", default="", help="one unit")
    listing.add_argument("--contractor", default="", help="one contractor's records")
    listing.add_argument("--verdict", choices=RECORD_VERDICTS, default="", help="one verdict")
    listing.add_argument("--since", type=_day, help="windows from this day (UTC)")
    listing.add_argument("--limit", type=int, default=500, help="newest N (500; 0 = all)")
    for parser in (take, listing):
        parser.add_argument("--lang", choices=LANGUAGES, default="en", help="evidence language")

    check = leaf("audit", "derive visits, judge every record again, print verdict shares")
    check.add_argument("--since", type=_day, help="records whose window begins from this day")
    check.add_argument("--contractor", default="", help="one contractor's records")
    add_plan_parser(sub)  # the plan by need (fleet.cli.plan)
    return sub


def _visits(args: argparse.Namespace, target: Target) -> int:
    where, config = target(args)
    store = open_store(where, readonly=not args.derive)
    try:
        if args.derive:
            derive_visits(store, config.maintenance.verdicts, utc_now())
        view = visits_view(
            store,
            EVERY_UNIT,
            unit_id=args.unit,
            contractor=args.contractor,
            since=args.since,
            limit=args.limit,
        )
    finally:
        store.close()
    if args.json:
        print_json(to_json(view))
        return 0
    for unit_id in view.unknown_units:
        print(f"{unit_id}: its profile cannot see the service mode; its visits are unknown")
    columns = ["id", "unit_id", "start", "end", "duration_s", "watched_s", "mode"]
    columns += ["inspection_runs", "landings_visited", "door_cycles"]
    rows = [[getattr(v, c) for c in columns] for v in view.visits]
    print(table([c.upper() for c in columns], rows))
    return 0


def _records(args: argparse.Namespace, target: Target) -> int:
    where, config = target(args)
    if args.records_command == "import":
        zone = zoneinfo.ZoneInfo(config.http.time_zone)
        try:
            with args.file.open(encoding="utf-8-sig", newline="") as f:
                found, problems = parse_records(f, str(args.file), zone)
        except FileNotFoundError:
            raise UsageError(f"records {args.file}: file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"records {args.file}: cannot read: {exc}") from None
        store = open_store(where)
        try:
            result = take_records(
                store,
                found,
                problems,
                contractor=args.contractor,
                uploaded_by=args.by,
                source="csv",
                now=utc_now(),
                config=config.maintenance,
            )
            stored = store.maintenance_records(ids=result.stored) if result.stored else []
        finally:
            store.close()
        for problem in result.problems:
            print(
                f"{PROG}: {args.file}: line {problem.line}: {problem.reason} (row skipped)",
                file=sys.stderr,
            )
        view = ImportView(
            len(result.stored), result.duplicates, result.problems, records_for(stored, args.lang)
        )
        if args.json:
            print_json(to_json(view))
        else:
            print(
                f"{view.stored} record(s) stored, {view.duplicates} already there, "
                f"{len(view.problems)} row(s) refused"
            )
        return 0
    store = open_store(where, readonly=True)
    try:
        listed = records_view(
            store,
            EVERY_UNIT,
            args.lang,
            unit_id=args.unit,
            contractor=args.contractor,
            verdict=args.verdict,
            since=args.since,
            limit=args.limit,
        )
    finally:
        store.close()
    if args.json:
        print_json(to_json(listed))
        return 0
    columns = ["id", "unit_id", "contractor", "kind", "start", "end", "verdict", "evidence"]
    print(
        table(
            [c.upper() for c in columns], [[getattr(r, c) for c in columns] for r in listed.records]
        )
    )
    return 0


def _audit(args: argparse.Namespace, target: Target) -> int:
    where, config = target(args)
    store = open_store(where)
    try:
        changed, counts = audit(
            store, config.maintenance, utc_now(), since=args.since, contractor=args.contractor
        )
        by_contractor: dict[str, dict[str, int]] = {}
        for record in store.maintenance_records(since=args.since, contractor=args.contractor):
            mine = by_contractor.setdefault(record.contractor, dict.fromkeys(RECORD_VERDICTS, 0))
            mine[record.verdict] += 1
    finally:
        store.close()
    shares = VerdictSharesView(
        None if args.since is None else args.since.date().isoformat(),
        tuple(share_of(name, Counter(c)) for name, c in sorted(by_contractor.items())),
    )
    if args.json:
        verdicts = {v: counts[v] for v in RECORD_VERDICTS}
        print_json(to_json(AuditView(sum(counts.values()), changed, verdicts, shares.contractors)))
        return 0
    print(f"{sum(counts.values())} record(s) judged, {changed} verdict(s) changed")
    columns = ["contractor", "records", *RECORD_VERDICTS]
    print(
        table(
            [c.upper() for c in columns],
            [[getattr(s, c) for c in columns] for s in shares.contractors],
        )
    )
    return 0


# Sub-commands other features add to the group (the plan by need: ``plan``), by name:
# handler(args, target). Their parsers go on the set `add_parser` returns.
EXTRA: dict[str, Callable[[argparse.Namespace, Target], int]] = {"plan": run_plan}


def run(args: argparse.Namespace) -> int:
    """Run ``liftwatch-fleet maintenance SUBCOMMAND``; exit status 2 for bad input."""
    handlers: dict[str, Callable[[argparse.Namespace, Target], int]] = {
        "visits": _visits,
        "records": _records,
        "audit": _audit,
        **EXTRA,
    }
    try:
        return handlers[args.maintenance_command](args, store_target)
    except RecordsError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
