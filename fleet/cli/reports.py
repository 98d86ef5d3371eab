"""The lifecycle commands of ``liftwatch-fleet``: alarms, report, audit (verify-history
is in `fleet.cli.history`).

``fleet.cli.main`` adds them with `add_parsers` and dispatches to `COMMANDS`; they take the
same ``--config`` / ``--db`` as the other store commands. Bad input (an unknown alarm id,
a step the alarm's state forbids, a bad date, an unusable claims file) is one line on
stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fleet.alarms.crew import CrewError, crew_and_eta
from fleet.cli.common import EXIT_USAGE, PROG, StoreCommand, print_json
from fleet.clock import utc_now
from fleet.config import LANGUAGES, FleetConfig
from fleet.csv_cells import csv_text
from fleet.read.lifecycle_views import AlarmsView, AlarmView, alarm_json
from fleet.read.selection import BadRequestError
from fleet.read.shape import out, to_json
from fleet.read.views import table
from fleet.reports.claims import (
    ClaimProblem,
    ClaimsError,
    VerdictView,
    audit_claim,
    read_claims,
)
from fleet.reports.compute import (
    fault_rate_report,
    scorecard_report,
    service_life_report,
)
from fleet.reports.fault_rate import (
    CSV_COLUMNS,
    GROUPS,
    RateRow,
    header_lines,
    period,
    rate_csv,
    rate_table,
)
from fleet.reports.view import ReportRow, report_view
from fleet.store.base import AlarmActionError
from fleet.store.open import open_store
from fleet.web.params import integer_param

Target = Callable[[argparse.Namespace], tuple[str, FleetConfig]]


@dataclass(frozen=True, slots=True)
class FileAuditView:
    """`audit claims FILE --json` (fleet.read.shape's definition; the API answers the
    ClaimsAudit of an upload instead): each claim's verdict, and the rows skipped."""

    file: str = out()
    claims: tuple[VerdictView, ...] = out()
    problems: tuple[ClaimProblem, ...] = out("rows that are no claim, by line")


ALARM_ACTIONS = {"ack": "ack", "dispatch": "dispatch", "on-site": "on_site", "resolve": "resolve"}


class LifecycleUsageError(Exception):
    """Bad input to a lifecycle command; reported in one line, exit status 2."""


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], store_command: StoreCommand
) -> None:
    """Add the lifecycle sub-commands to ``commands`` (``store_command`` adds --config,
    --db and --json the way every store command has them)."""
    alarms = store_command(
        "alarms",
        "list alarms, or ack / dispatch / on-site / resolve one",
        "List alarms newest first with every disposal step (raised, dispatched, "
        "acknowledged, on site, resolved or false alarm), or record a step: "
        "`alarms ack ID --by NAME`, "
        "`alarms dispatch ID --by NAME --crew WHO (--eta-minutes N | --eta-at HH:MM)` "
        "(on an acknowledged alarm: who was sent and when expected, HH:MM in the site's "
        "time zone, not earlier than now), `alarms on-site ID --by NAME`, "
        "`alarms resolve ID --by NAME [--false-alarm] [--reason TEXT]`. An alarm whose "
        "event is still raised (no CLEARED record: the passenger may still be inside) is "
        "closed only with --reason, kept in its history and counted apart by the scorecard.",
    )
    alarms.add_argument("action", nargs="?", choices=list(ALARM_ACTIONS), help="a disposal step")
    alarms.add_argument("alarm_id", nargs="?", help="the alarm's id (see the listing)")
    alarms.add_argument("--by", help="who acts (required with an action)")
    alarms.add_argument(
        "--false-alarm", action="store_true", help="with resolve: close it as a false alarm"
    )
    alarms.add_argument(
        "--reason",
        default="",
        help="with resolve: why it is closed while its event is still raised (required then)",
    )
    alarms.add_argument("--crew", help="with dispatch: who was sent (a name or team)")
    alarms.add_argument(
        "--eta-minutes", type=float, help="with dispatch: expected in N minutes (0-1440)"
    )
    alarms.add_argument(
        "--eta-at",
        help="with dispatch: expected at HH:MM (or YYYY-MM-DDTHH:MM) in the site's time zone",
    )
    alarms.add_argument("--open", action="store_true", help="only alarms not yet closed")
    alarms.add_argument("--unit", help="only this unit_id")
    alarms.add_argument("--limit", type=int, default=0, help="newest N (default all)")

    report = store_command(
        "report",
        "fault-rate, service-life or scorecard reports, worst first",
        "fault-rate: lift faults per 1,000 trips and per unit-month by unit, building, street "
        "or contractor, with each row's exposure (trips, watched days); rows short of "
        "[reports] min_trips / min_watched_days are marked low and listed last (what counts "
        "and why: the report's header, fleet/reports/fault_rate.py); service-life: units by age, "
        "past 10 and 15 years flagged for a safety assessment, oldest-and-worst first; "
        "scorecard: per maintenance contractor, coverage, fault rate, alarm response and "
        "rescue times.",
    )
    report.add_argument("report", choices=["fault-rate", "service-life", "scorecard"])
    report.add_argument("--by", choices=GROUPS, default="unit", help="fault-rate grouping")
    report.add_argument("--since", type=_date, help="first day (default: a year before --until)")
    report.add_argument("--until", type=_date, help="day after the last (default: tomorrow)")
    report.add_argument("--csv", action="store_true", help="print CSV (fault-rate)")
    report.add_argument("--limit", type=int, default=0, help="first N rows (default all)")

    audit = store_command(
        "audit",
        "audit a contractor's claimed faults against the recorded data",
        "`audit claims FILE.csv`: for each claimed fault (columns unit_id or "
        "registration_code, time, fault_type; a time without a UTC offset is [http] "
        "time_zone) say whether the data supports it, finds it overstated (a lesser fault "
        "watched), contradicts it (watched and normal then) or cannot tell (not watched, "
        "or the unit cannot see that fault), with the reason. See fleet/reports/claims.py.",
    )
    audit.add_argument("what", choices=["claims"])
    audit.add_argument("file", type=Path, help="the claims CSV")
    audit.add_argument(
        "--window", type=_positive, default=30.0, help="minutes either side of a claim (30)"
    )
    audit.add_argument(
        "--max-gap", type=_positive, default=60.0, help="longest silence still 'watched', s (60)"
    )
    audit.add_argument("--csv", action="store_true", help="print CSV")
    audit.add_argument(
        "--lang",
        choices=LANGUAGES,
        default=_env_language(),
        help="language of the reasons (default: from LC_ALL / LC_MESSAGES / LANG, else en)",
    )


def _env_language() -> str:
    """zh when the environment's locale is Chinese, else en."""
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name, "")
        if value:
            return "zh" if value.lower().startswith("zh") else "en"
    return "en"


def _out_csv(header: list[str], rows: list[list[object]]) -> None:
    sys.stdout.write(csv_text(header, rows))


def _alarms(args: argparse.Namespace, target: Target) -> int:
    where, config = target(args)
    if args.action is None:
        if args.alarm_id is not None:
            raise LifecycleUsageError(
                f"unexpected argument {args.alarm_id!r} (did you mean `alarms ack ID`?)"
            )
        store = open_store(where, readonly=True)
        try:
            rows = store.alarms(open_only=args.open, unit_id=args.unit or "", limit=args.limit)
        finally:
            store.close()
        now = utc_now()
        listing = to_json(AlarmsView(tuple(AlarmView.of(a, now) for a in rows)))
        rendered = listing["alarms"]
        if args.json:
            print_json(listing)
            return 0
        columns = (
            "alarm_id",
            "unit_id",
            "type",
            "state",
            "onset",
            "cleared",
            "acknowledged_by",
            "closed",
        )
        rows_out = [[a[c] for c in columns] for a in rendered]
        zone = config.http.time_zone
        print(table([c.upper() for c in columns], rows_out, time_zone=zone))
        return 0
    if args.alarm_id is None:
        raise LifecycleUsageError(f"alarms {args.action}: name the alarm by its number (ID)")
    try:
        alarm_id = integer_param("alarm id", args.alarm_id, 0, minimum=1)
    except BadRequestError as exc:
        raise LifecycleUsageError(f"alarms {args.action}: {exc}") from None
    if not args.by or not args.by.strip():
        raise LifecycleUsageError(f"alarms {args.action}: say who with --by NAME")
    if args.false_alarm and args.action != "resolve":
        raise LifecycleUsageError("--false-alarm goes with `alarms resolve`")
    action = "false_alarm" if args.false_alarm else ALARM_ACTIONS[args.action]
    now = utc_now()
    crew, eta = _crew(args, now, zoneinfo.ZoneInfo(config.http.time_zone))
    store = open_store(where)
    try:
        row = store.alarm_action(alarm_id, action, args.by, now, args.reason, crew, eta)
    finally:
        store.close()
    shown = alarm_json(row, utc_now())
    if args.json:
        print_json(shown)
    else:
        note = f" while its event was still raised ({row.close_reason})" if row.close_reason else ""
        print(
            f"alarm {row.alarm_id} ({shown['type']}, unit {row.unit_id}) is now {row.state}{note}"
        )
    return 0


def _crew(
    args: argparse.Namespace, now: dt.datetime, zone: zoneinfo.ZoneInfo
) -> tuple[str, dt.datetime | None]:
    """--crew and the ETA of `alarms dispatch`, checked as the API checks them (one
    function, `fleet.alarms.crew.crew_and_eta`); ("", None) for the other steps, which
    take neither."""
    given = args.crew is not None or args.eta_minutes is not None or args.eta_at is not None
    if args.action != "dispatch":
        if given:
            raise LifecycleUsageError(
                "--crew, --eta-minutes and --eta-at go with `alarms dispatch`"
            )
        return "", None
    try:
        return crew_and_eta(args.crew, args.eta_minutes, args.eta_at, now, zone)
    except CrewError as exc:
        raise LifecycleUsageError(f"alarms dispatch: {exc}") from None


def _report(args: argparse.Namespace, target: Target) -> int:
    where, config = target(args)
    now = utc_now()
    try:
        span = period(args.since, args.until, now.date())
    except ValueError as exc:
        raise LifecycleUsageError(f"--since/--until: {exc}") from None
    store = open_store(where, readonly=True)
    rows: Sequence[ReportRow]
    try:
        if args.report == "fault-rate":
            rows = fault_rate_report(store, args.by, span, config.reports, now)
        elif args.report == "service-life":
            rows = service_life_report(store, span, now.date(), config.reports)
        else:
            rows = scorecard_report(store, span, now, config.coverage)
    finally:
        store.close()
    if args.limit > 0:
        rows = rows[: args.limit]
    if args.json:
        print_json(to_json(report_view(args.report, span, rows, config.reports, named=True)))
        return 0
    if args.report == "fault-rate":
        rates = [r for r in rows if isinstance(r, RateRow)]
        if args.csv:
            sys.stdout.write(rate_csv(rates, span, config.reports))
            return 0
        print("\n".join(header_lines(span, config.reports)))
        header = list(CSV_COLUMNS)
        body = rate_table(rates)
    else:
        shown = [to_json(r) for r in rows]
        header = [k for k in (shown[0] if shown else {}) if k != "by_type"]
        body = [[r[k] for k in header] for r in shown]
    if args.csv:
        _out_csv(header, body)
    else:
        print(table([h.upper() for h in header], body))
    return 0


def _audit(args: argparse.Namespace, target: Target) -> int:
    where, config = target(args)
    claims, problems = read_claims(args.file, zoneinfo.ZoneInfo(config.http.time_zone))
    for problem in problems:
        print(
            f"{PROG}: {args.file}: line {problem.line}: {problem.reason} (row skipped)",
            file=sys.stderr,
        )
    window = dt.timedelta(minutes=args.window)
    gap = dt.timedelta(seconds=args.max_gap)
    store = open_store(where, readonly=True)
    try:
        verdicts = tuple(
            VerdictView.of(audit_claim(store, c, window, gap), args.lang) for c in claims
        )
    finally:
        store.close()
    shown = to_json(FileAuditView(str(args.file), verdicts, tuple(problems)))
    if args.json:
        print_json(shown)
        return 0
    columns = ["line", "unit_id", "time", "fault_type", "verdict", "evidence"]
    rows = [[v[c] for c in columns] for v in shown["claims"]]
    if args.csv:
        _out_csv(columns, rows)
    else:
        print(table([c.upper() for c in columns], rows))
    return 0


def commands(target: Target) -> dict[str, Callable[[argparse.Namespace], int]]:
    """The handlers by command name; ``target`` resolves --config / --db to a store."""

    def guard(
        handler: Callable[[argparse.Namespace, Target], int],
    ) -> Callable[[argparse.Namespace], int]:
        def run(args: argparse.Namespace) -> int:
            try:
                return handler(args, target)
            except (LifecycleUsageError, AlarmActionError, ClaimsError) as exc:
                print(f"{PROG}: error: {exc}", file=sys.stderr)
                return EXIT_USAGE

        return run

    return {
        "alarms": guard(_alarms),
        "report": guard(_report),
        "audit": guard(_audit),
    }
