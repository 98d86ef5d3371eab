"""The lists the district publishes (issue 17, item 5; the notice's sections 二 and 十二).

`draw_lists` computes them when a regulator drafts a publication; the draft keeps them as
JSON (`fleet.store.publication`), so that what is approved is what goes public. Their one
definition is `ListsView` (each list's rows a definition of their own): the JSON kept,
the OpenAPI schema of a publication's ``lists`` and the CSV's lift columns come from it.

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
from typing import Any, Literal

from fleet.config import ReportsConfig
from fleet.csv_cells import csv_text
from fleet.read.maintenance import verdict_shares
from fleet.read.scope import EVERY_UNIT
from fleet.read.shape import keys_of, out, response, to_json
from fleet.reports.compute import fault_rate_report
from fleet.reports.fault_rate import Period
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
Mark = Literal["yes", "no", "unknown"]


@dataclass(frozen=True, slots=True)
class LiftView:
    """What identifies a lift in public: no person is named."""

    unit_id: str = out("the registration code")
    building: str = out()
    address: str = out()
    street: str = out()
    contractor: str = out("the maintenance contractor")

    @classmethod
    def of(cls, unit: UnitRow) -> LiftView:
        """``unit`` as the lists name it."""
        r = unit.register
        return cls(unit.unit_id, r.building, r.address, r.street, r.contractor)


@response("ListedHighFault")
@dataclass(frozen=True, slots=True)
class HighFaultRow:
    """A lift of the high-fault list: its fault-rate report row's numbers."""

    rank: int = out(minimum=1)
    lift: LiftView = out(flatten=True)
    faults: int = out("lift faults in the period", minimum=0)
    trips: int | None = out("null: the unit counts no trips")
    watched_days: float = out()
    faults_per_1000_trips: float | None = out()
    faults_per_unit_month: float | None = out()


@response("ListedThreeNo")
@dataclass(frozen=True, slots=True)
class ThreeNoRow:
    """A lift with no use unit, no maintenance contractor or no maintenance fund."""

    lift: LiftView = out(flatten=True)
    use_unit: Mark = out()
    maintenance_contractor: Mark = out()
    maintenance_fund: Mark = out("unknown: the register never said")
    missing: int = out("how many of the three are known to be no", minimum=1)


@response("ListedAged")
@dataclass(frozen=True, slots=True)
class AgedRow:
    """An aged lift with no safety assessment on record."""

    lift: LiftView = out(flatten=True)
    install_date: dt.date = out()
    age_years: int = out(minimum=0)


@response("ListedOverdue")
@dataclass(frozen=True, slots=True)
class OverdueRow:
    """A lift past its maintenance due date, and why in both languages."""

    lift: LiftView = out(flatten=True)
    due: dt.date = out()
    days_overdue: int = out(minimum=1)
    why_zh: str = out()
    why_en: str = out()


@response("ListedContractor")
@dataclass(frozen=True, slots=True)
class ContradictedRow:
    """A contractor with maintenance records the controllers contradict in the period."""

    contractor: str = out()
    records: int = out(minimum=0)
    contradicted: int = out(minimum=1)
    contradicted_pct: float | None = out("the contradicted share of its records, percent")


@dataclass(frozen=True, slots=True)
class HighFaultList:
    """The high-fault list and the exposure a lift needs to be ranked ([reports])."""

    min_trips: int = out()
    min_watched_days: float = out()
    rows: tuple[HighFaultRow, ...] = out("worst first")


@dataclass(frozen=True, slots=True)
class ThreeNoList:
    """The three-no list, the most missing first."""

    rows: tuple[ThreeNoRow, ...] = out()


@dataclass(frozen=True, slots=True)
class AgedList:
    """The aged lifts without a safety assessment, oldest first."""

    aged_years: float = out("[publication] aged_years")
    unknown: int = out("aged lifts whose register never said (not listed)", minimum=0)
    rows: tuple[AgedRow, ...] = out()


@dataclass(frozen=True, slots=True)
class OverdueList:
    """The lifts overdue for maintenance, as the plan orders them."""

    rows: tuple[OverdueRow, ...] = out()


@dataclass(frozen=True, slots=True)
class ContradictedList:
    """The contractors with contradicted records, the most contradicted share first."""

    rows: tuple[ContradictedRow, ...] = out()


@response("PublishedLists")
@dataclass(frozen=True, slots=True)
class ListsView:
    """Every list of a publication, as drawn (`draw_lists`) and kept by the draft."""

    as_of: str = out("the time the lists were drawn as of", fmt="date-time")
    period: Period = out("the UTC days the high-fault and contradicted lists count")
    high_fault: HighFaultList = out()
    three_no: ThreeNoList = out()
    aged_without_assessment: AgedList = out()
    overdue: OverdueList = out()
    contradicted_contractors: ContradictedList = out()


def draw_lists(
    store: SqlStore,
    now: dt.datetime,
    rules: PublicationConfig,
    reports: ReportsConfig,
    plan: PlanConfig,
    planned: Sequence[PlanEntry] | None = None,
) -> dict[str, Any]:
    """Every list as of ``now`` (see the module docstring), as the JSON a draft keeps (of
    `ListsView`); ``planned``: the plan as of ``now`` when the caller has it (else it is
    computed)."""
    units = [u for u in store.list_units(UnitQuery()) if u.registered]
    by_id = {u.unit_id: u for u in units}
    details = store.register_details()
    today = now.date()
    span = Period(today - dt.timedelta(days=rules.period_days - 1), today + dt.timedelta(days=1))
    since = span.start
    rates = fault_rate_report(store, "unit", span, reports, now)
    high: list[HighFaultRow] = []
    for row in rates:
        if row.exposure != "qualified" or not row.faults or row.name not in by_id:
            continue
        high.append(
            HighFaultRow(
                rank=len(high) + 1,
                lift=LiftView.of(by_id[row.name]),
                faults=row.faults,
                trips=row.trips,
                watched_days=row.watched_days,
                faults_per_1000_trips=row.per_1000_trips,
                faults_per_unit_month=row.per_unit_month,
            )
        )
        if len(high) >= rules.high_fault_count:
            break
    three_no = []
    for unit in units:
        d = details.get(unit.unit_id, RegisterDetails(unit.unit_id))
        marks: tuple[Mark, Mark, Mark] = (
            "yes" if unit.register.use_unit else "no",
            "yes" if unit.register.contractor else "no",
            "unknown" if d.maintenance_fund is None else d.maintenance_fund,
        )
        missing = marks.count("no")
        if missing:
            three_no.append(ThreeNoRow(LiftView.of(unit), *marks, missing))
    three_no.sort(key=lambda r: (-r.missing, r.lift.unit_id))
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
            aged.append(AgedRow(LiftView.of(unit), install, int(years)))
    aged.sort(key=lambda r: (r.install_date, r.lift.unit_id))
    overdue = [
        OverdueRow(LiftView.of(by_id[e.unit_id]), e.due, -e.days_left, why(e, "zh"), why(e, "en"))
        for e in (maintenance_plan(store, plan, now) if planned is None else planned)
        if e.overdue and e.unit_id in by_id
    ]
    contradicted = [
        ContradictedRow(s.contractor, s.records, s.contradicted, s.contradicted_pct)
        for s in verdict_shares(store, EVERY_UNIT, since)
        if s.contradicted
    ]
    lists = ListsView(
        as_of=now.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        period=span,
        high_fault=HighFaultList(reports.min_trips, reports.min_watched_days, tuple(high)),
        three_no=ThreeNoList(tuple(three_no)),
        aged_without_assessment=AgedList(rules.aged_years, unknown, tuple(aged)),
        overdue=OverdueList(tuple(overdue)),
        contradicted_contractors=ContradictedList(tuple(contradicted)),
    )
    return dict(to_json(lists))


# The list, the row's rank in it, what identifies the lift (`LiftView`'s keys), and the
# row's other keys as ``key=value`` pairs.
CSV_COLUMNS = ("list", "rank", *keys_of(LiftView), "detail")


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
        "the lists as drafted (as /public/lists.json's lists)", omit_none=True, shape=ListsView
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
    lists: dict[str, Any] = out(
        "the lists as drafted (`ListsView`'s JSON); empty before the first publication"
    )

    @classmethod
    def of(cls, found: Publication | None) -> PublicListsView:
        """What the public sees of ``found``, the publication published last."""
        if found is None or found.published is None:
            return cls(None, {})
        return cls(_at(found.published), found.lists)
