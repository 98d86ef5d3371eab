"""The maintenance contractor scorecard: per contractor, the units it maintains, how many
are watched, their fault rate, how fast its alarms are acknowledged and resolved, and its
entrapments with their rescue times, worst fault rate first.

A rescue time follows the passenger, not the desk: it runs from the entrapment's onset
(when the condition began, on the agent's clock) to its CLEARED record (the passenger is
out, same clock), whatever the alarm's dispatch state; a dispatcher's click ends nothing.
An alarm closed (resolved or declared false) while its event was still raised carries the
closer's reason and counts in ``closed_while_raised``, never in the rescue times: nobody
watched the passenger leave. A false alarm has no rescue time either.

Alarms count by the time they were raised, within the period; mean times use the alarms
that reached the step (an alarm still open adds to ``open_alarms``, not to the means; an
entrapment not yet cleared adds no rescue time).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import fmean

from fleet.read.shape import out, response, to_json
from fleet.reports.fault_rate import Period, RateRow
from fleet.store.base import OPEN_ALARM_STATES, AlarmRow, UnitRow
from fleet.store.maintenance import RECORD_VERDICTS as MAINTENANCE_VERDICTS
from fleet.units.coverage import CoverageConfig, coverage_by
from protos.liftwatch.v1 import records_pb2


@response("Scorecard")
@dataclass(frozen=True, slots=True)
class Scorecard:
    """One contractor's figures over the period (a row of the report's JSON,
    `scorecard_json`)."""

    contractor: str = out()
    units: int = out(minimum=0)
    monitored: int = out(minimum=0)
    online: int = out(minimum=0)
    coverage_pct: float = out("monitored share of the registered units, percent")
    faults: int = out(minimum=0)
    per_1000_trips: float | None = out(key="faults_per_1000_trips")
    per_unit_month: float | None = out(key="faults_per_unit_month")
    alarms: int = out(minimum=0)
    open_alarms: int = out(minimum=0)
    false_alarms: int = out(minimum=0)
    mean_ack_s: float | None = out()
    mean_resolve_s: float | None = out()
    entrapments: int = out(minimum=0)
    mean_rescue_s: float | None = out()
    max_rescue_s: float | None = out()
    closed_while_raised: int = out("alarms closed while their event was raised", minimum=0)
    # Its maintenance records whose window began in the period, by the verdict the
    # controllers' data gave them (issue 17, fleet.reports.maintenance).
    maintenance_records: int = out("maintenance records filed", minimum=0, default=0)
    maintenance_supported: int = out(minimum=0, default=0)
    maintenance_too_short: int = out(minimum=0, default=0)
    maintenance_contradicted: int = out(minimum=0, default=0)
    maintenance_cannot_tell: int = out(minimum=0, default=0)


def _mean(values: Sequence[float]) -> float | None:
    return round(fmean(values), 1) if values else None


def rescue_s(alarm: AlarmRow) -> float | None:
    """An entrapment's rescue time: seconds from the event's onset (else the alarm's raise)
    to its CLEARED record. None for other alarm types, while the event is raised, for a
    false alarm, and for an alarm closed while its event was still raised (its clear, if
    one came later, is not a watched release)."""
    if (
        alarm.type != records_pb2.EVENT_TYPE_ENTRAPMENT
        or alarm.cleared is None
        or alarm.state == "false_alarm"
        or alarm.close_reason
    ):
        return None
    return round((alarm.cleared - (alarm.onset or alarm.raised)).total_seconds(), 3)


def scorecards(
    units: Sequence[UnitRow],
    rates: Sequence[RateRow],
    alarms: Sequence[AlarmRow],
    span: Period,
    now: dt.datetime,
    thresholds: CoverageConfig,
    verdicts: Mapping[str, Mapping[str, int]] | None = None,
) -> list[Scorecard]:
    """The scorecards of every contractor named in the register ("" = none named);
    ``verdicts``: each contractor's count of each maintenance verdict in the period."""
    registered = [u for u in units if u.registered]
    counts = coverage_by(registered, "contractor", now, thresholds)
    by_rate = {r.name: r for r in rates}
    contractor_of = {u.unit_id: u.register.contractor for u in units}
    grouped: dict[str, list[AlarmRow]] = defaultdict(list)
    for alarm in alarms:
        if span.start <= alarm.raised < span.end:
            grouped[contractor_of.get(alarm.unit_id, "")].append(alarm)
    cards: list[Scorecard] = []
    for name, cov in counts.items():
        rate = by_rate.get(name)
        mine = grouped.get(name, [])
        acks = [
            (a.acknowledged - a.raised).total_seconds() for a in mine if a.acknowledged is not None
        ]
        resolves = [
            (a.closed - a.raised).total_seconds()
            for a in mine
            if a.state == "resolved" and a.closed is not None
        ]
        trapped = [a for a in mine if a.type == records_pb2.EVENT_TYPE_ENTRAPMENT]
        rescues = [s for s in (rescue_s(a) for a in trapped) if s is not None]
        cards.append(
            Scorecard(
                contractor=name,
                units=cov.registered,
                monitored=cov.monitored,
                online=cov.online,
                coverage_pct=round(100 * cov.monitored / cov.registered, 1)
                if cov.registered
                else 0.0,
                faults=rate.faults if rate else 0,
                per_1000_trips=rate.per_1000_trips if rate else None,
                per_unit_month=rate.per_unit_month if rate else None,
                alarms=len(mine),
                open_alarms=sum(a.state in OPEN_ALARM_STATES for a in mine),
                false_alarms=sum(a.state == "false_alarm" for a in mine),
                mean_ack_s=_mean(acks),
                mean_resolve_s=_mean(resolves),
                entrapments=len(trapped),
                mean_rescue_s=_mean(rescues),
                max_rescue_s=max(rescues) if rescues else None,
                closed_while_raised=sum(bool(a.close_reason) for a in mine),
                **_maintenance((verdicts or {}).get(name, {})),
            )
        )
    cards.sort(
        key=lambda c: (
            c.per_1000_trips is None,
            -(c.per_1000_trips or 0.0),
            -(c.per_unit_month or 0.0),
            c.contractor,
        )
    )
    return cards


def _maintenance(counts: Mapping[str, int]) -> dict[str, int]:
    """The scorecard's maintenance fields from one contractor's verdict counts."""
    shown = {f"maintenance_{v}": int(counts.get(v, 0)) for v in MAINTENANCE_VERDICTS}
    return {"maintenance_records": sum(shown.values()), **shown}


def scorecard_json(card: Scorecard) -> dict[str, object]:
    """One scorecard as JSON (`Scorecard` is its definition)."""
    return dict(to_json(card))
