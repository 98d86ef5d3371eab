"""Fault rate per unit, building, street or maintenance contractor, worst first.

What counts as a fault: the RAISED record of every event whose class is ``lift_fault``
(`fleet.taxonomy.is_lift_fault`: the lift failed). Not counted, each for its reason
(`NOT_COUNTED_BECAUSE`): ``usage`` (an alarm-button press, doors held by passengers: what
passengers do), ``health`` (a slowing door: an early sign, not yet a failure),
``external`` (a mains failure: a cause outside the lift) and ``monitoring`` (a lost
controller link, a service mode change: the monitoring or the operators, not the lift).
Entrapments count: a passenger shut in is the lift failing its one duty. Events are placed
in the period by the time the agent recorded them. The report states this classification
in its header (`classification`), in its JSON and as comment lines atop its CSV.

Exposure, from the Counters records the agents send (every ``counters_interval_s``, 60 s
by default, and only after a good read of the controller):

- **trips**: per unit and UTC day the store keeps the lowest and highest trip counter
  seen; trips in the period are the sum of each day's span plus the climb between
  consecutive days (a counter that went backwards, e.g. a replaced controller, adds
  nothing for that step). A unit whose counter never moved in the period (none sent, or a
  profile that cannot count trips) has no trip count: its per-1,000-trips rate is empty.
- **watched days**: the half-hours (48 to a UTC day) in which the unit's agent sent a
  Counters record, i.e. was reading its controller, divided by 48. Counters carry the
  agent's own time, so a unit watched while its uplink was down (records buffered and sent
  later) counts as watched; a unit whose controller did not answer does not. A half-hour
  with one record counts whole: an outage is undercounted by at most an hour.

Rates: faults per 1,000 trips counts the faults of the units with a trip count over their
trips. Faults per unit-month is faults over watched unit-months (watched days / 30.44), so
a 7-day or a 1-day period gives a per-month rate, not the count of a month; a row with no
watched time has none. Faults per month is the group's faults over the period's months,
the period cut at the time of the report (a period ending tomorrow counts today only as
far as it went).

Ranking (`ReportsConfig`): a row is ranked when it has the exposure its rate rests on:
``min_trips`` trips (1,000), or, for a row without a trip count, ``min_watched_days``
watched days (30). Rows short of it are marked ``low`` and listed after every ranked row,
so one fault in 9 trips never tops the list. Within each of the two tiers: rows with a
per-1,000-trips rate, highest first; then rows with faults but no trip count, by faults
per unit-month (unknown usage does not make a lift look better than one with no faults);
then rows without faults; ties by name.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fleet.config import ReportsConfig
from fleet.csv_cells import csv_text
from fleet.read.shape import keys_of, out, response, to_json
from fleet.store.base import FaultEvent, TripSpan, UnitRow
from fleet.taxonomy import EVENT_CLASSES, EventClass, is_lift_fault
from protos.liftwatch.v1 import records_pb2

GROUPS = ("unit", "building", "street", "contractor")
DAYS_PER_MONTH = 365.25 / 12
SLOTS_PER_DAY = 48  # half-hours, see TripSpan.watched_slots
QUALIFIED = "qualified"
LOW = "low"

NOT_COUNTED_BECAUSE: dict[EventClass, str] = {
    EventClass.USAGE: "what passengers do (alarm button pressed; doors held open), not a "
    "failure of the lift",
    EventClass.HEALTH: "an early sign of wear (a slowing door), not yet a failure",
    EventClass.EXTERNAL: "a cause outside the lift (mains failure)",
    EventClass.MONITORING: "the monitoring or the operators (controller link lost; a "
    "service mode change), not the lift",
}


def _type_name(event_type: int) -> str:
    return records_pb2.EventType.Name(event_type).removeprefix("EVENT_TYPE_")


def _types_of(cls: EventClass) -> list[str]:
    return sorted(_type_name(t) for t, c in EVENT_CLASSES.items() if c is cls)


@response("NotCounted")
@dataclass(frozen=True, slots=True)
class NotCounted:
    """An event class the fault-rate report does not count, with why."""

    event_class: str = out(key="class")
    types: tuple[str, ...] = out()
    why: str = out()


@response("Classification")
@dataclass(frozen=True, slots=True)
class Classification:
    """Which event types the fault-rate report counts and which it does not."""

    counted: tuple[str, ...] = out("the lift_fault event types")
    not_counted: tuple[NotCounted, ...] = out()


@response("Ranking")
@dataclass(frozen=True, slots=True)
class Ranking:
    """When the fault-rate report ranks a row (`ReportsConfig`)."""

    min_trips: int = out(minimum=0)
    min_watched_days: float = out()
    rule: str = out("the rule in words")


def classification() -> Classification:
    """Which event types the report counts and which it does not, with why."""
    return Classification(
        tuple(_types_of(EventClass.LIFT_FAULT)),
        tuple(
            NotCounted(cls.value, tuple(_types_of(cls)), why)
            for cls, why in NOT_COUNTED_BECAUSE.items()
        ),
    )


@dataclass(frozen=True, slots=True)
class Period:
    """The UTC days [since, until) a report covers."""

    since: dt.date
    until: dt.date

    @property
    def start(self) -> dt.datetime:
        """Midnight UTC of ``since``."""
        return dt.datetime.combine(self.since, dt.time(), dt.UTC)

    @property
    def end(self) -> dt.datetime:
        """Midnight UTC of ``until`` (exclusive)."""
        return dt.datetime.combine(self.until, dt.time(), dt.UTC)

    @property
    def months(self) -> float:
        """The length in (average) months."""
        return (self.until - self.since).days / DAYS_PER_MONTH

    def months_until(self, now: dt.datetime | None) -> float:
        """The length in months of the part of the period before ``now`` (the whole
        period when ``now`` is None or past its end); 0 when it has not begun."""
        end = self.end if now is None else min(self.end, max(now, self.start))
        return (end - self.start).total_seconds() / 86400 / DAYS_PER_MONTH


def period(since: dt.date | None, until: dt.date | None, today: dt.date) -> Period:
    """The period from optional bounds: ``until`` defaults to tomorrow (today included),
    ``since`` to a year before ``until``. Raises ValueError when it is empty."""
    end = until or today + dt.timedelta(days=1)
    start = since or end - dt.timedelta(days=365)
    if start >= end:
        raise ValueError(f"the period is empty: since {start} is not before until {end}")
    return Period(start, end)


@response("FaultRateRow")
@dataclass(frozen=True, slots=True)
class RateRow:
    """One group: its units, faults, exposure and rates over the period (a row of the
    report's JSON as it stands, `rate_json`)."""

    name: str = out("the unit, building, street or contractor")
    units: int = out(minimum=0)
    faults: int = out("lift faults raised in the period", minimum=0)
    trips: int | None = out("trips counted; null where no unit counts trips")
    watched_days: float = out("days the group's units were watched")
    exposure: str = out("qualified: ranked; low: listed after the ranked rows")
    per_1000_trips: float | None = out(key="faults_per_1000_trips")
    per_month: float = out(key="faults_per_month")
    per_unit_month: float | None = out(key="faults_per_unit_month")
    by_type: dict[str, int] = out("faults per event type")


@dataclass(frozen=True, slots=True)
class Exposure:
    """What one unit was watched over in the period."""

    trips: int | None
    watched_days: float


def exposure_by_unit(spans: Iterable[TripSpan]) -> dict[str, Exposure]:
    """Trips and watched days per unit from daily counter spans (see the module docstring)."""
    by_unit: dict[str, list[TripSpan]] = defaultdict(list)
    for span in spans:
        by_unit[span.unit_id].append(span)
    totals: dict[str, Exposure] = {}
    for unit_id, days in by_unit.items():
        days.sort(key=lambda s: s.day)
        total = 0
        slots = 0
        previous: TripSpan | None = None
        for span in days:
            total += span.max_trips - span.min_trips
            if previous is not None and span.min_trips >= previous.max_trips:
                total += span.min_trips - previous.max_trips
            slots += span.watched_slots.bit_count()
            previous = span
        totals[unit_id] = Exposure(total or None, slots / SLOTS_PER_DAY)
    return totals


def group_of(unit: UnitRow | None, unit_id: str, by: str) -> str:
    """The name of the group ``unit`` falls in when grouping ``by`` (unknown: "")."""
    if by == "unit":
        return unit_id
    return "" if unit is None else str(getattr(unit.register, by))


def qualifies(trips: int | None, watched_days: float, rules: ReportsConfig) -> bool:
    """Whether a row has the exposure its ranking rate rests on (module docstring)."""
    if trips:
        return trips >= rules.min_trips
    return watched_days >= rules.min_watched_days


def fault_rates(
    units: Sequence[UnitRow],
    events: Iterable[FaultEvent],
    spans: Iterable[TripSpan],
    span: Period,
    by: str = "unit",
    rules: ReportsConfig | None = None,
    now: dt.datetime | None = None,
) -> list[RateRow]:
    """Rank the groups of ``units`` (registered or reporting) by fault rate, worst first,
    as the module docstring says; ``now`` cuts the period for faults per month."""
    if by not in GROUPS:
        raise ValueError(f"cannot group by {by!r}; choose {', '.join(GROUPS)}")
    rules = rules or ReportsConfig()
    known = {u.unit_id: u for u in units}
    members: dict[str, set[str]] = defaultdict(set)
    for unit in units:
        members[group_of(unit, unit.unit_id, by)].add(unit.unit_id)
    faults_of: dict[str, int] = defaultdict(int)  # per unit
    types: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for event in events:
        if not is_lift_fault(event.type):
            continue
        name = group_of(known.get(event.unit_id), event.unit_id, by)
        members[name].add(event.unit_id)
        faults_of[event.unit_id] += 1
        types[name][_type_name(event.type)] += 1
    exposure = exposure_by_unit(spans)
    months = span.months_until(now)
    rows: list[RateRow] = []
    for name, ids in members.items():
        count = sum(faults_of.get(u, 0) for u in ids)
        counted = [u for u in ids if u in exposure and exposure[u].trips]
        trips = sum(exposure[u].trips or 0 for u in counted) or None
        trip_faults = sum(faults_of.get(u, 0) for u in counted)
        watched = sum(exposure[u].watched_days for u in ids if u in exposure)
        rows.append(
            RateRow(
                name=name,
                units=len(ids),
                faults=count,
                trips=trips,
                per_1000_trips=round(trip_faults * 1000 / trips, 3) if trips else None,
                per_month=round(count / months, 3) if months > 0 else 0.0,
                per_unit_month=round(count * DAYS_PER_MONTH / watched, 4) if watched else None,
                by_type=dict(sorted(types.get(name, {}).items())),
                watched_days=round(watched, 2),
                exposure=QUALIFIED if qualifies(trips, watched, rules) else LOW,
            )
        )
    rows.sort(key=_rank_key)
    return rows


def _rank_key(row: RateRow) -> tuple[bool, int, float, str]:
    if row.per_1000_trips:
        band, value = 0, row.per_1000_trips
    elif row.faults:
        band, value = 1, row.per_unit_month or 0.0
    else:
        band, value = 2, 0.0
    return (row.exposure != QUALIFIED, band, -value, row.name)


def rate_json(row: RateRow) -> dict[str, object]:
    """One row of the report as JSON (`RateRow` is its definition)."""
    return dict(to_json(row))


# The rank, then every key of the row's definition but the per-type map (a cell per type
# would change the columns with the data).
CSV_COLUMNS = ("rank", *(k for k in keys_of(RateRow) if k != "by_type"))


def header_lines(span: Period, rules: ReportsConfig) -> list[str]:
    """What the report counts and ranks, in lines to print above it (text and CSV)."""
    lines = [
        f"LiftWatch fault rate: UTC days {span.since} to {span.until} (exclusive)",
        f"Counted (lift faults): {' '.join(_types_of(EventClass.LIFT_FAULT))}",
    ]
    lines += [
        f"Not counted ({cls.value}: {why}): {' '.join(_types_of(cls))}"
        for cls, why in NOT_COUNTED_BECAUSE.items()
    ]
    lines.append(
        f"Ranked: rows with at least {rules.min_trips} trips or (without a trip count) "
        f"{rules.min_watched_days:g} watched days; rows marked low are listed after them"
    )
    return lines


def ranking(rules: ReportsConfig) -> Ranking:
    """When the report ranks a row, as its header says it."""
    return Ranking(
        rules.min_trips,
        rules.min_watched_days,
        f"ranked with at least {rules.min_trips} trips or, without a trip "
        f"count, {rules.min_watched_days:g} watched days; rows marked low come after",
    )


def rate_table(rows: Sequence[RateRow]) -> list[list[object]]:
    """The rows as `CSV_COLUMNS` cells, ranked from 1 (the CSV's and the CLI table's body)."""
    return [
        [rank, *(shown[c] for c in CSV_COLUMNS[1:])]
        for rank, shown in enumerate((rate_json(r) for r in rows), start=1)
    ]


def rate_csv(rows: Sequence[RateRow], span: Period, rules: ReportsConfig) -> str:
    """The report as CSV: `header_lines` as ``#`` comments, then `CSV_COLUMNS` with the
    rank first (every cell spreadsheet-safe, see `fleet.csv_cells`)."""
    return csv_text(CSV_COLUMNS, rate_table(rows), header_lines(span, rules))
