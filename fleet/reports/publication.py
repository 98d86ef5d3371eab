"""The lists the district publishes (issue 17, item 5; the notice's sections 二 and 十二).

`draw_lists` computes them when a regulator drafts a publication; the draft keeps them as
JSON (`fleet.store.publication`), so that what is approved is what goes public:

- ``high_fault``: lifts ranked by the lift-fault rate over the last
  ``[publication] period_days``: the rows of the fault-rate report
  (`fleet.reports.compute.fault_rate_report`, grouped by unit, the same numbers) that are
  ranked (they have the report's minimum exposure, ``[reports]``) and had a fault, worst
  first, the first ``high_fault_count``.
- ``three_no``: lifts with no use unit (使用单位), no maintenance contractor or no
  maintenance fund, from the register; each of the three says ``yes``, ``no`` or
  ``unknown`` (a column the register never had is unknown, never no). A lift is listed
  when at least one is known to be ``no``; ``missing`` counts those.
- ``aged_without_assessment``: lifts ``aged_years`` (15) or older by their install date
  with no safety assessment on record; ``unknown`` counts the aged lifts whose register
  never said (not listed: unknown is not none).
- ``overdue``: lifts past their maintenance due date (`fleet.reports.plan`), with why in
  both languages.
- ``contradicted_contractors``: contractors with at least one maintenance record the
  controller contradicts in the period, with their share (`fleet.read.maintenance`).

No personal data: no contact, no user or worker name, only what identifies the lift
(registration code, building, address, street) and the contractor.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fleet.config import ReportsConfig
from fleet.csv_cells import csv_text
from fleet.read.maintenance import verdict_shares
from fleet.read.scope import EVERY_UNIT
from fleet.read.shape import out, response
from fleet.reports.compute import fault_rate_report
from fleet.reports.fault_rate import Period, rate_json
from fleet.reports.plan import PlanEntry, maintenance_plan, why
from fleet.reports.plan_config import PlanConfig, PublicationConfig
from fleet.store.base import UnitQuery, UnitRow
from fleet.store.publication import Publication, PublicationStep, RegisterDetails, State
from fleet.store.sql import SqlStore

LISTS = (
    "high_fault",
    "three_no",
    "aged_without_assessment",
    "overdue",
    "contradicted_contractors",
)
_RATE_KEYS = (
    "faults",
    "trips",
    "watched_days",
    "faults_per_1000_trips",
    "faults_per_unit_month",
)


def _lift(unit: UnitRow) -> dict[str, object]:
    """What identifies a lift in public: no person is named."""
    r = unit.register
    return {
        "unit_id": unit.unit_id,
        "building": r.building,
        "address": r.address,
        "street": r.street,
        "contractor": r.contractor,
    }


def _yes_no(value: str | None) -> str:
    return "unknown" if value is None else value


def draw_lists(
    store: SqlStore,
    now: dt.datetime,
    rules: PublicationConfig,
    reports: ReportsConfig,
    plan: PlanConfig,
    planned: Sequence[PlanEntry] | None = None,
) -> dict[str, Any]:
    """Every list as of ``now`` (see the module docstring), as the JSON a draft keeps;
    ``planned``: the plan as of ``now`` when the caller has it (else it is computed)."""
    units = [u for u in store.list_units(UnitQuery()) if u.registered]
    by_id = {u.unit_id: u for u in units}
    details = store.register_details()
    today = now.date()
    span = Period(today - dt.timedelta(days=rules.period_days - 1), today + dt.timedelta(days=1))
    since = span.start
    rates = fault_rate_report(store, "unit", span, reports, now)
    high: list[dict[str, object]] = []
    for row in rates:
        if row.exposure != "qualified" or not row.faults or row.name not in by_id:
            continue
        body = rate_json(row)
        high.append(
            {"rank": len(high) + 1, **_lift(by_id[row.name]), **{k: body[k] for k in _RATE_KEYS}}
        )
        if len(high) >= rules.high_fault_count:
            break
    three_no = []
    for unit in units:
        d = details.get(unit.unit_id, RegisterDetails(unit.unit_id))
        marks = {
            "use_unit": "yes" if unit.register.use_unit else "no",
            "maintenance_contractor": "yes" if unit.register.contractor else "no",
            "maintenance_fund": _yes_no(d.maintenance_fund),
        }
        missing = sum(1 for v in marks.values() if v == "no")
        if missing:
            three_no.append({**_lift(unit), **marks, "missing": missing})
    three_no.sort(key=lambda r: (-int(str(r["missing"])), str(r["unit_id"])))
    aged, unknown = [], 0
    for unit in units:
        install = unit.register.install_date
        if install is None:
            continue
        years = (today - install).days / 365.25
        if years < rules.aged_years:
            continue
        assessed = details.get(unit.unit_id, RegisterDetails(unit.unit_id)).safety_assessments
        if assessed is None:
            unknown += 1
        elif not assessed:
            aged.append(
                {**_lift(unit), "install_date": install.isoformat(), "age_years": int(years)}
            )
    aged.sort(key=lambda r: (str(r["install_date"]), str(r["unit_id"])))
    overdue = [
        {
            **_lift(by_id[e.unit_id]),
            "due": e.due.isoformat(),
            "days_overdue": -e.days_left,
            "why_zh": why(e, "zh"),
            "why_en": why(e, "en"),
        }
        for e in (maintenance_plan(store, plan, now) if planned is None else planned)
        if e.overdue and e.unit_id in by_id
    ]
    contradicted = [
        {
            "contractor": s.contractor,
            "records": s.records,
            "contradicted": s.contradicted,
            "contradicted_pct": s.contradicted_pct,
        }
        for s in verdict_shares(store, EVERY_UNIT, since)
        if s.contradicted
    ]
    return {
        "as_of": now.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        "period": {"since": span.since.isoformat(), "until": span.until.isoformat()},
        "high_fault": {
            "min_trips": reports.min_trips,
            "min_watched_days": reports.min_watched_days,
            "rows": high,
        },
        "three_no": {"rows": three_no},
        "aged_without_assessment": {
            "aged_years": rules.aged_years,
            "unknown": unknown,
            "rows": aged,
        },
        "overdue": {"rows": overdue},
        "contradicted_contractors": {"rows": contradicted},
    }


CSV_COLUMNS = (
    "list",
    "rank",
    "unit_id",
    "building",
    "address",
    "street",
    "contractor",
    "detail",
)


def lists_csv(lists: dict[str, Any]) -> str:
    """The published lists as one CSV: a row per listed lift or contractor, its list
    first, what it is listed for in ``detail`` (``key=value`` pairs); a UTF-8 byte-order
    mark first (spreadsheets on Chinese Windows), cells spreadsheet-safe."""
    rows: list[Sequence[object]] = []
    shown = set(CSV_COLUMNS)
    for name in LISTS:
        for rank, row in enumerate(lists.get(name, {}).get("rows", []), start=1):
            detail = "; ".join(f"{k}={v}" for k, v in row.items() if k not in shown)
            rows.append([name, rank, *(row.get(c, "") for c in CSV_COLUMNS[2:7]), detail])
    return "\ufeff" + csv_text(CSV_COLUMNS, rows)


# -- the publications as the regulators' API, the CLI and /public/lists.json answer ------


def _at(moment: dt.datetime) -> str:
    """A stored time as the publication's JSON writes it (UTC, to the microsecond)."""
    return moment.isoformat().replace("+00:00", "Z")


@response("Publication")
@dataclass(frozen=True, slots=True, kw_only=True)
class PublicationView:
    """A publication: its state, each step's time and who took it, how many rows each list
    has, and (where asked for) the lists as drafted."""

    id: int = out()
    state: State = out()
    as_of: str = out("the time the lists were drawn as of")
    drafted_by: str = out()
    drafted: str = out()
    approved_by: str | None = out()
    approved: str | None = out()
    published_by: str | None = out()
    published: str | None = out()
    counts: dict[str, int] = out("rows of each list, by the list's name")
    lists: dict[str, Any] | None = out(
        "the lists as drafted (as /public/lists.json's lists)", omit_none=True
    )

    @classmethod
    def of(cls, found: Publication, *, lists: bool) -> PublicationView:
        """``found``, with its lists when ``lists``, else only their row counts."""
        return cls(
            id=found.id,
            state=found.state,
            as_of=_at(found.as_of),
            drafted_by=found.drafted_by,
            drafted=_at(found.drafted),
            approved_by=found.approved_by or None,
            approved=None if found.approved is None else _at(found.approved),
            published_by=found.published_by or None,
            published=None if found.published is None else _at(found.published),
            counts={n: len(found.lists.get(n, {}).get("rows", [])) for n in LISTS},
            lists=found.lists if lists else None,
        )


@response("PublicationStep")
@dataclass(frozen=True, slots=True)
class PublicationStepView:
    """One step of a publication's history: who drafted, approved or published it, when."""

    publication_id: int = out()
    step: str = out("drafted, approved or published")
    username: str = out()
    at: str = out()

    @classmethod
    def of(cls, step: PublicationStep) -> PublicationStepView:
        """The stored ``step``."""
        return cls(step.publication_id, step.step, step.username, _at(step.at))


@response("Publications")
@dataclass(frozen=True, slots=True)
class PublicationsView:
    """``GET /api/publication``: the newest publications and their steps."""

    approval_by_another: bool = out("[publication] approval_by_another")
    publications: tuple[PublicationView, ...] = out("newest first, without their lists")
    steps: tuple[PublicationStepView, ...] = out("oldest first")


@dataclass(frozen=True, slots=True)
class PublicationStatusView:
    """``publish status --json``: which publication is public now, the publications and
    every step."""

    public: int | None = out("the id of the publication /public/ serves; null: none yet")
    publications: tuple[PublicationView, ...] = out("newest first, without their lists")
    steps: tuple[PublicationStepView, ...] = out("oldest first")


@dataclass(frozen=True, slots=True)
class PublicListsView:
    """``/public/lists.json``: the published time and lists, nothing of who did it;
    ``published`` null and ``lists`` empty before the first publication."""

    published: str | None = out()
    lists: dict[str, Any] = out("the lists as drafted (`draw_lists`)")

    @classmethod
    def of(cls, found: Publication | None) -> PublicListsView:
        """What the public sees of ``found``, the publication published last."""
        if found is None or found.published is None:
            return cls(None, {})
        return cls(_at(found.published), found.lists)
