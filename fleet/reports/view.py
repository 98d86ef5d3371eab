"""A report as the API and ``report --json`` answer it: the period, the fault-rate report's
header (what it counts, when it ranks a row), and the rows of the report asked for, each
its report's own row definition. One definition (`ReportView`) for both, and for the
OpenAPI schema of ``/api/reports/{report}``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from fleet.config import ReportsConfig
from fleet.read.shape import out, response
from fleet.reports.fault_rate import (
    Classification,
    Period,
    Ranking,
    RateRow,
    classification,
    ranking,
)
from fleet.reports.scorecard import Scorecard
from fleet.reports.service_life import LifeRow

# The row definition of each report, by the name the API and the CLI call it.
REPORT_ROWS: dict[str, type] = {
    "fault-rate": RateRow,
    "service-life": LifeRow,
    "scorecard": Scorecard,
}
ReportRow = RateRow | LifeRow | Scorecard


@response("Report")
@dataclass(frozen=True, slots=True, kw_only=True)
class ReportView:
    """A report over a period, its rows worst first."""

    report: str | None = out("the report's name (the CLI's JSON only)", omit_none=True)
    since: dt.date = out("first day (UTC)")
    until: dt.date = out("day after the last (UTC)")
    classification: Classification | None = out("fault-rate only", omit_none=True)
    ranking: Ranking | None = out("fault-rate only", omit_none=True)
    rows: tuple[ReportRow, ...] = out("the report's own rows (FaultRateRow, ...)")


def report_view(
    name: str,
    span: Period,
    rows: Sequence[ReportRow],
    rules: ReportsConfig,
    *,
    named: bool = False,
) -> ReportView:
    """Report ``name``'s ``rows`` over ``span``; the fault-rate report carries its header
    (`classification`, `ranking` by ``rules``). ``named``: the JSON names the report too
    (the CLI's; the API's URL names it)."""
    fault_rate = name == "fault-rate"
    return ReportView(
        report=name if named else None,
        since=span.since,
        until=span.until,
        classification=classification() if fault_rate else None,
        ranking=ranking(rules) if fault_rate else None,
        rows=tuple(rows),
    )
