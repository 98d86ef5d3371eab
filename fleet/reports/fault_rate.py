"""Fault rate per unit, building, street or maintenance contractor, worst first.

What counts as a fault: every RAISED event stored in the period except MODE_CHANGE (a
service mode change is an operator's act, not a failure) and CONTROLLER_LINK_LOST (the
monitoring went blind, the lift did not fail). Everything else counts once per occurrence
(its RAISED record), entrapments and alarm-button presses included: each is a passenger
who met a failing lift. Events are placed in the period by the time the agent recorded
them.

Trips come from the Counters records (the controller's cumulative trip counter): per unit
and UTC day the store keeps the lowest and highest value seen; trips in the period are
the sum of each day's span plus the climb between consecutive days (a counter that went
backwards, e.g. a replaced controller, adds nothing for that step). Units that never sent
Counters have no trip count: their per-1,000-trips rate is empty, not zero.

Ranking: faults per 1,000 trips (highest first; rows without trips after those with),
then faults per unit-month, then the name.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fleet.store.base import FaultEvent, TripSpan, UnitRow
from protos.liftwatch.v1 import records_pb2

GROUPS = ("unit", "building", "street", "contractor")
NOT_FAULTS = frozenset(
    {records_pb2.EVENT_TYPE_MODE_CHANGE, records_pb2.EVENT_TYPE_CONTROLLER_LINK_LOST}
)
DAYS_PER_MONTH = 365.25 / 12


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


def period(since: dt.date | None, until: dt.date | None, today: dt.date) -> Period:
    """The period from optional bounds: ``until`` defaults to tomorrow (today included),
    ``since`` to a year before ``until``. Raises ValueError when it is empty."""
    end = until or today + dt.timedelta(days=1)
    start = since or end - dt.timedelta(days=365)
    if start >= end:
        raise ValueError(f"the period is empty: since {start} is not before until {end}")
    return Period(start, end)


@dataclass(frozen=True, slots=True)
class RateRow:
    """One ranked group: its units, faults, trips and rates over the period."""

    name: str
    units: int
    faults: int
    trips: int | None
    per_1000_trips: float | None
    per_month: float
    per_unit_month: float
    by_type: dict[str, int]


def trips_by_unit(spans: Iterable[TripSpan]) -> dict[str, int]:
    """Trips per unit from daily counter spans (see the module docstring)."""
    by_unit: dict[str, list[TripSpan]] = defaultdict(list)
    for span in spans:
        by_unit[span.unit_id].append(span)
    totals: dict[str, int] = {}
    for unit_id, days in by_unit.items():
        days.sort(key=lambda s: s.day)
        total = 0
        previous: TripSpan | None = None
        for span in days:
            total += span.max_trips - span.min_trips
            if previous is not None and span.min_trips >= previous.max_trips:
                total += span.min_trips - previous.max_trips
            previous = span
        totals[unit_id] = total
    return totals


def group_of(unit: UnitRow | None, unit_id: str, by: str) -> str:
    """The name of the group ``unit`` falls in when grouping ``by`` (unknown: "")."""
    if by == "unit":
        return unit_id
    return "" if unit is None else str(getattr(unit.register, by))


def fault_rates(
    units: Sequence[UnitRow],
    events: Iterable[FaultEvent],
    spans: Iterable[TripSpan],
    span: Period,
    by: str = "unit",
) -> list[RateRow]:
    """Rank the groups of ``units`` (registered or reporting) by fault rate, worst first."""
    if by not in GROUPS:
        raise ValueError(f"cannot group by {by!r}; choose {', '.join(GROUPS)}")
    known = {u.unit_id: u for u in units}
    members: dict[str, set[str]] = defaultdict(set)
    for unit in units:
        members[group_of(unit, unit.unit_id, by)].add(unit.unit_id)
    faults: dict[str, int] = defaultdict(int)
    types: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for event in events:
        if event.type in NOT_FAULTS or event.type == records_pb2.EVENT_TYPE_UNSPECIFIED:
            continue
        name = group_of(known.get(event.unit_id), event.unit_id, by)
        members[name].add(event.unit_id)
        faults[name] += 1
        type_name = records_pb2.EventType.Name(event.type).removeprefix("EVENT_TYPE_")
        types[name][type_name] += 1
    trips = trips_by_unit(spans)
    months = span.months
    rows: list[RateRow] = []
    for name, ids in members.items():
        counted = [trips[u] for u in ids if u in trips]
        total_trips = sum(counted) if counted else None
        count = faults.get(name, 0)
        rows.append(
            RateRow(
                name=name,
                units=len(ids),
                faults=count,
                trips=total_trips,
                per_1000_trips=round(count * 1000 / total_trips, 3) if total_trips else None,
                per_month=round(count / months, 3),
                per_unit_month=round(count / months / max(len(ids), 1), 4),
                by_type=dict(sorted(types.get(name, {}).items())),
            )
        )
    # Worst first by faults per 1,000 trips. A row with faults but no trip counters cannot
    # be placed on that scale, and unknown usage must not make it look better than a lift
    # with no faults at all: such rows come first, among themselves by faults per month.
    rows.sort(
        key=lambda r: (
            not (r.per_1000_trips is None and r.faults > 0),
            -(r.per_1000_trips or 0.0),
            -r.per_unit_month,
            r.name,
        )
    )
    return rows


def rate_json(row: RateRow) -> dict[str, object]:
    """One row of the report as JSON."""
    return {
        "name": row.name,
        "units": row.units,
        "faults": row.faults,
        "trips": row.trips,
        "faults_per_1000_trips": row.per_1000_trips,
        "faults_per_month": row.per_month,
        "faults_per_unit_month": row.per_unit_month,
        "by_type": row.by_type,
    }


CSV_COLUMNS = (
    "rank",
    "name",
    "units",
    "faults",
    "trips",
    "faults_per_1000_trips",
    "faults_per_month",
    "faults_per_unit_month",
)
