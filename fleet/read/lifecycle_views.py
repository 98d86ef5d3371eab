"""Alarms and history rows as the CLI and the JSON API show them."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fleet.read.shape import out, response, to_json
from fleet.read.views import event_class_name, event_type_name, iso
from fleet.reports.scorecard import rescue_s
from fleet.store.base import OPEN_ALARM_STATES, AlarmRow
from fleet.store.chain import HistoryRow, Problem
from protos.liftwatch.v1 import records_pb2


def _seconds(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def open_for_s(alarm: AlarmRow, now: dt.datetime) -> float | None:
    """How long the alarm's condition lasted: onset to the event's CLEARED record once it
    came (the timer stops when the passenger is out), else onset to ``now`` while the
    alarm is open; None for an alarm closed before its event cleared."""
    onset = alarm.onset or alarm.raised
    if alarm.cleared is not None:
        return _seconds(onset, alarm.cleared)
    return _seconds(onset, now) if alarm.state in OPEN_ALARM_STATES else None


# The alarm states in their order (fleet.store.base.ALARM_STATES; a test keeps them equal).
AlarmState = Literal["raised", "dispatched", "acknowledged", "on_site", "resolved", "false_alarm"]


@response("Alarm")
@dataclass(frozen=True)
class AlarmView:
    """One alarm with every disposal step, as /api/alarms and ``alarms --json`` show it."""

    alarm_id: int = out()
    unit_id: str = out()
    type: str = out("event type, e.g. ENTRAPMENT")
    event_class: str | None = out("the event's class (lift_fault, ...)", key="class")
    state: AlarmState = out()
    event_id: str = out()
    onset: str | None = out()
    raised: str = out()
    dispatched: str | None = out()
    acknowledged: str | None = out()
    acknowledged_by: str = out()
    on_site: str | None = out()
    on_site_by: str = out()
    closed: str | None = out()
    closed_by: str = out()
    escalated: str | None = out()
    cleared: str | None = out("when the event's CLEARED record came")
    floor: int | None = out()
    reason: str = out()
    building: str = out()
    address: str = out()
    street: str = out()
    contractor: str = out()
    age_s: float | None = out("open-for timer: onset to clear, else to now while open")
    onset_to_resolution_s: float | None = out()
    onset_to_cleared_s: float | None = out()
    rescue_s: float | None = out("onset to clear, as the scorecard counts it")
    closed_while_raised: bool = out()
    close_reason: str = out("why it was closed while its event was raised")
    crew: str = out('who the dispatcher sent (personal data; "" until dispatched)')
    crew_eta: str | None = out("when the crew is expected at the lift")
    crew_dispatched: str | None = out("when the dispatcher recorded who was sent")
    crew_dispatched_by: str = out()

    @classmethod
    def of(cls, alarm: AlarmRow, now: dt.datetime) -> AlarmView:
        """``alarm`` as of ``now`` (its open-for timer runs until its event clears)."""
        onset = alarm.onset or alarm.raised
        return cls(
            alarm_id=alarm.alarm_id,
            unit_id=alarm.unit_id,
            type=event_type_name(alarm.type),
            event_class=event_class_name(alarm.type),
            state=alarm.state,  # type: ignore[arg-type]  # the store keeps only these
            event_id=alarm.event_id,
            onset=iso(alarm.onset),
            raised=iso(alarm.raised),
            dispatched=iso(alarm.dispatched),
            acknowledged=iso(alarm.acknowledged),
            acknowledged_by=alarm.acknowledged_by,
            on_site=iso(alarm.on_site),
            on_site_by=alarm.on_site_by,
            closed=iso(alarm.closed),
            closed_by=alarm.closed_by,
            escalated=iso(alarm.escalated),
            cleared=iso(alarm.cleared),
            floor=alarm.floor,
            reason=alarm.reason,
            building=alarm.building,
            address=alarm.address,
            street=alarm.street,
            contractor=alarm.contractor,
            age_s=open_for_s(alarm, now),
            onset_to_resolution_s=_seconds(onset, alarm.closed)
            if alarm.state == "resolved"
            else None,
            onset_to_cleared_s=_seconds(onset, alarm.cleared),
            rescue_s=rescue_s(alarm),
            closed_while_raised=bool(alarm.close_reason),
            close_reason=alarm.close_reason,
            crew=alarm.crew,
            crew_eta=iso(alarm.crew_eta),
            crew_dispatched=iso(alarm.crew_dispatched),
            crew_dispatched_by=alarm.crew_dispatched_by,
        )


def alarm_json(alarm: AlarmRow, now: dt.datetime) -> dict[str, object]:
    """One alarm with every disposal step (`AlarmView`). ``age_s`` is its open-for timer
    (see `open_for_s`: it stops at the event's clear); ``rescue_s`` onset to clear, as the
    scorecard counts it; ``close_reason`` why it was closed while its event was raised."""
    return dict(to_json(AlarmView.of(alarm, now)))


@response("Alarms")
@dataclass(frozen=True)
class AlarmsView:
    """/api/alarms and ``alarms --json``: newest first."""

    alarms: tuple[AlarmView, ...] = out()


@response("AlarmCount")
@dataclass(frozen=True)
class AlarmCountView:
    """/api/alarms/count: the open alarms the caller may see (the navigation's count on
    every page, whatever unit page is open), and how many of them are entrapments whose
    event is still raised (someone may be inside: the notice's concern)."""

    open: int = out("open alarms (raised, dispatched, acknowledged, on site)", minimum=0)
    entrapments: int = out("open entrapment alarms whose event has not cleared", minimum=0)

    @classmethod
    def of(cls, alarms: Sequence[AlarmRow]) -> AlarmCountView:
        """The count of ``alarms`` (already the open ones in the caller's scope)."""
        trapped = sum(
            a.type == records_pb2.EVENT_TYPE_ENTRAPMENT and a.cleared is None for a in alarms
        )
        return cls(open=len(alarms), entrapments=trapped)


@response("HistoryEntry")
@dataclass(frozen=True)
class HistoryEntryView:
    """One entry of a unit's hash-chained history."""

    unit_id: str = out()
    seq: int = out()
    at: str = out()
    kind: str = out()
    detail: Any = out("the entry's detail, parsed back when it is valid JSON")
    prev_hash: str = out()
    hash: str = out()

    @classmethod
    def of(cls, row: HistoryRow) -> HistoryEntryView:
        """One stored history row (``detail`` parsed back when it is valid JSON)."""
        try:
            detail: object = json.loads(row.detail)
        except ValueError:
            detail = row.detail
        epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        return cls(
            unit_id=row.unit_id,
            seq=row.seq,
            at=iso(epoch + dt.timedelta(microseconds=row.at_us)),
            kind=row.kind,
            detail=detail,
            prev_hash=row.prev_hash,
            hash=row.hash,
        )


@response("ChainProblem")
@dataclass(frozen=True)
class ProblemView:
    """One break found in a chain, or a table or checkpoint disagreeing with it."""

    unit_id: str = out()
    seq: int = out()
    row_id: int | None = out("null when the row is missing")
    what: Literal["edited", "deleted", "inserted"] = out()
    reason: str = out()
    table: Literal["unit_history", "events", "alarms", "checkpoint"] = out("where the damage is")

    @classmethod
    def of(cls, problem: Problem) -> ProblemView:
        """The view of a problem the chain check found."""
        return cls(
            problem.unit_id,
            problem.seq,
            problem.row_id,
            problem.what,  # type: ignore[arg-type]  # fleet.store.chain names only these
            problem.reason,
            problem.table,  # type: ignore[arg-type]
        )


def problem_json(problem: Problem) -> dict[str, object]:
    """One break found in a chain, or a table or checkpoint disagreeing with it (``table``)."""
    return dict(to_json(ProblemView.of(problem)))


@response("UnitHistory")
@dataclass(frozen=True)
class UnitHistoryView:
    """/api/units/{unit_id}/history: the chain, verified."""

    unit_id: str = out()
    entries: tuple[HistoryEntryView, ...] = out()
    head: str | None = out("seq:hash of the newest entry; null for an empty chain")
    intact: bool = out()
    problems: tuple[ProblemView, ...] = out()
