"""The reports computed over a synchronous `Store`: the CLI calls these directly, serve
runs them on the store thread (`fleet.store.worker.StoreWorker.call`)."""

from __future__ import annotations

import datetime as dt
from collections import Counter

from fleet.config import ReportsConfig
from fleet.history.verify import verify_store
from fleet.reports.fault_rate import Period, RateRow, fault_rates
from fleet.reports.scorecard import Scorecard, scorecards
from fleet.reports.service_life import LifeRow, service_life
from fleet.store.base import Store, UnitQuery
from fleet.store.chain import Problem
from fleet.store.sql import SqlStore
from fleet.units.coverage import CoverageConfig


def fault_rate_report(
    store: Store,
    by: str,
    span: Period,
    rules: ReportsConfig | None = None,
    now: dt.datetime | None = None,
) -> list[RateRow]:
    """Fault rates grouped ``by`` over ``span``, ranked rows worst first, then the rows
    short of the exposure ``rules`` ask for (see `fleet.reports.fault_rate`)."""
    units = store.list_units(UnitQuery())
    events = store.fault_events(span.start, span.end)
    spans = store.trip_spans(span.since, span.until)
    return fault_rates(units, events, spans, span, by, rules, now)


def service_life_report(
    store: Store, span: Period, today: dt.date, rules: ReportsConfig | None = None
) -> list[LifeRow]:
    """The service-life review with per-unit fault rates over ``span``."""
    return service_life(
        store.list_units(UnitQuery()), fault_rate_report(store, "unit", span, rules), today
    )


def scorecard_report(
    store: Store, span: Period, now: dt.datetime, thresholds: CoverageConfig
) -> list[Scorecard]:
    """The contractor scorecards over ``span``."""
    units = store.list_units(UnitQuery())
    rates = fault_rates(
        units,
        store.fault_events(span.start, span.end),
        store.trip_spans(span.since, span.until),
        span,
        "contractor",
    )
    verdicts: dict[str, Counter[str]] = {}
    if isinstance(store, SqlStore):  # the maintenance tables are the SQL store's
        for record in store.maintenance_records(since=span.start, until=span.end):
            verdicts.setdefault(record.contractor, Counter())[record.verdict] += 1
    return scorecards(units, rates, store.alarms(), span, now, thresholds, verdicts)


def verify_history(store: Store, unit_id: str = "") -> tuple[int, int, list[Problem]]:
    """Check the chains (of ``unit_id`` unless "") and the events and alarms rows against
    them (`fleet.history.verify.verify_store`): (units checked, rows, problems)."""
    found = verify_store(store, unit_id)
    return found.units, found.entries, list(found.problems)
