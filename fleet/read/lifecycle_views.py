"""Alarms and history rows as the CLI and the JSON API show them."""

from __future__ import annotations

import datetime as dt
import json

from fleet.read.views import event_class_name, event_type_name, iso
from fleet.reports.scorecard import rescue_s
from fleet.store.base import OPEN_ALARM_STATES, AlarmRow
from fleet.store.chain import HistoryRow, Problem


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


def alarm_json(alarm: AlarmRow, now: dt.datetime) -> dict[str, object]:
    """One alarm with every disposal step. ``age_s`` is its open-for timer (see
    `open_for_s`: it stops at the event's clear); ``rescue_s`` onset to clear, as the
    scorecard counts it; ``close_reason`` why it was closed while its event was raised."""
    onset = alarm.onset or alarm.raised
    return {
        "alarm_id": alarm.alarm_id,
        "unit_id": alarm.unit_id,
        "type": event_type_name(alarm.type),
        "class": event_class_name(alarm.type),
        "state": alarm.state,
        "event_id": alarm.event_id,
        "onset": iso(alarm.onset),
        "raised": iso(alarm.raised),
        "dispatched": iso(alarm.dispatched),
        "acknowledged": iso(alarm.acknowledged),
        "acknowledged_by": alarm.acknowledged_by,
        "on_site": iso(alarm.on_site),
        "on_site_by": alarm.on_site_by,
        "closed": iso(alarm.closed),
        "closed_by": alarm.closed_by,
        "escalated": iso(alarm.escalated),
        "cleared": iso(alarm.cleared),
        "floor": alarm.floor,
        "reason": alarm.reason,
        "building": alarm.building,
        "address": alarm.address,
        "street": alarm.street,
        "contractor": alarm.contractor,
        "age_s": open_for_s(alarm, now),
        "onset_to_resolution_s": _seconds(onset, alarm.closed)
        if alarm.state == "resolved"
        else None,
        "onset_to_cleared_s": _seconds(onset, alarm.cleared),
        "rescue_s": rescue_s(alarm),
        "closed_while_raised": bool(alarm.close_reason),
        "close_reason": alarm.close_reason,
    }


def history_row_json(row: HistoryRow) -> dict[str, object]:
    """One history entry (``detail`` parsed back when it is valid JSON)."""
    try:
        detail: object = json.loads(row.detail)
    except ValueError:
        detail = row.detail
    return {
        "unit_id": row.unit_id,
        "seq": row.seq,
        "at": iso(dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=row.at_us)),
        "kind": row.kind,
        "detail": detail,
        "prev_hash": row.prev_hash,
        "hash": row.hash,
    }


def problem_json(problem: Problem) -> dict[str, object]:
    """One break found in a chain, or a table or checkpoint disagreeing with it (``table``)."""
    return {
        "unit_id": problem.unit_id,
        "seq": problem.seq,
        "row_id": problem.row_id,
        "what": problem.what,
        "reason": problem.reason,
        "table": problem.table,
    }
