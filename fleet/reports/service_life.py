"""Service life: every registered unit's age from its install date, flagged for a safety
assessment past 10 and 15 years, with its fault rate; oldest-and-worst first.

Order: the 15-year bracket, then the 10-year bracket, then the rest; within a bracket by
faults per 1,000 trips (worst first, units without trip counts after), then by age; a unit
short of the exposure the fault-rate report asks for (``exposure`` "low", see
`fleet.reports.fault_rate`) comes after the others of its bracket, whatever its rate. Units
without an install date come last, flagged ``unknown_age``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from fleet.read.shape import out, response, to_json
from fleet.reports.fault_rate import LOW, RateRow
from fleet.store.base import UnitRow

ASSESS_AFTER_YEARS = (15, 10)


@response("ServiceLifeRow")
@dataclass(frozen=True, slots=True)
class LifeRow:
    """One unit in the service-life review (a row of the report's JSON, `life_json`)."""

    unit_id: str = out()
    install_date: dt.date | None = out("from the register; null where it has none")
    age_years: float | None = out("365.25-day years; null without an install date")
    flag: str = out("assess_15, assess_10: due a safety assessment; unknown_age: no install date")
    model: str = out()
    building: str = out()
    street: str = out()
    contractor: str = out()
    faults: int = out(minimum=0)
    per_1000_trips: float | None = out(key="faults_per_1000_trips")
    per_unit_month: float | None = out(key="faults_per_unit_month")
    exposure: str = out("the fault-rate report's: qualified or low")


def age_years(install: dt.date, today: dt.date) -> float:
    """Years from ``install`` to ``today`` (365.25-day years, two decimals)."""
    return round((today - install).days / 365.25, 2)


def flag_of(age: float | None) -> str:
    """The assessment flag of a unit ``age`` years old."""
    if age is None:
        return "unknown_age"
    for years in ASSESS_AFTER_YEARS:
        if age >= years:
            return f"assess_{years}"
    return ""


def service_life(
    units: Sequence[UnitRow], rates: Sequence[RateRow], today: dt.date
) -> list[LifeRow]:
    """The review rows of the registered ``units``, joined with per-unit ``rates``."""
    by_unit = {r.name: r for r in rates}
    rows: list[LifeRow] = []
    for unit in units:
        if not unit.registered:
            continue
        install = unit.register.install_date
        age = age_years(install, today) if install else None
        rate = by_unit.get(unit.unit_id)
        rows.append(
            LifeRow(
                unit_id=unit.unit_id,
                install_date=install,
                age_years=age,
                flag=flag_of(age),
                model=unit.model,
                building=unit.register.building,
                street=unit.register.street,
                contractor=unit.register.contractor,
                faults=rate.faults if rate else 0,
                per_1000_trips=rate.per_1000_trips if rate else None,
                per_unit_month=rate.per_unit_month if rate else None,
                exposure=rate.exposure if rate else LOW,
            )
        )
    bracket = {"assess_15": 0, "assess_10": 1, "": 2, "unknown_age": 3}
    rows.sort(
        key=lambda r: (
            bracket[r.flag],
            r.exposure == LOW,
            r.per_1000_trips is None,
            -(r.per_1000_trips or 0.0),
            -(r.per_unit_month or 0.0),
            -(r.age_years or 0.0),
            r.unit_id,
        )
    )
    return rows


def life_json(row: LifeRow) -> dict[str, object]:
    """One unit of the review as JSON (`LifeRow` is its definition)."""
    return dict(to_json(row))
