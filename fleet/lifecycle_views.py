"""Alarms and history rows as the CLI and the JSON API show them."""

from __future__ import annotations

import datetime as dt
import json

from fleet.history import HistoryRow, Problem
from fleet.store.base import OPEN_ALARM_STATES, AlarmRow
from fleet.views import event_type_name, iso


def _seconds(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def alarm_json(alarm: AlarmRow, now: dt.datetime) -> dict[str, object]:
    """One alarm with every disposal step; ``age_s`` (since onset) while it is open."""
    onset = alarm.onset or alarm.raised
    return {
        "alarm_id": alarm.alarm_id,
        "unit_id": alarm.unit_id,
        "type": event_type_name(alarm.type),
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
        "age_s": _seconds(onset, now) if alarm.state in OPEN_ALARM_STATES else None,
        "onset_to_resolution_s": _seconds(onset, alarm.closed)
        if alarm.state == "resolved"
        else None,
        "onset_to_cleared_s": _seconds(onset, alarm.cleared),
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
    """One break found in a chain."""
    return {
        "unit_id": problem.unit_id,
        "seq": problem.seq,
        "row_id": problem.row_id,
        "what": problem.what,
        "reason": problem.reason,
    }
