"""Maintenance records in, and the verdict the controller's own data gives each one.

**Records.** A contractor uploads what it says it did, by CSV (``maintenance records
import``, POST /api/maintenance/records) or JSON: the unit (``unit_id`` or
``registration_code``), ``date`` (YYYY-MM-DD), ``start`` and ``end`` (HH:MM, or a full ISO
8601 time; with a UTC offset that instant, without one the site's wall clock, ``[http]
time_zone``), ``type`` (TSG T5002's ``half_monthly``, ``quarterly``, ``half_yearly``,
``annual``; 半月, 季度, 半年, 年度 too) and ``workers``. A bad row is named by its line and
reason and the rest are kept; so is a row for a unit the uploader does not maintain
(refused: a contractor files for its own units only) or one not in the register. The same
record twice (unit, type, start, contractor) is stored once.

**Verdicts**, for a record of unit U claiming [start, end] of type K, minimum M minutes
(``[maintenance.minimums]``); W is the claimed window widened by ``slack_minutes`` on each
side (a hand-written time is rounded; the slack only ever helps the contractor). The
first of these that holds:

1. **cannot_tell**: U is not known, no agent ever watched it, or its profile cannot see
   the service mode (its Hello lists MODE_CHANGE as undetectable, or does not list it):
   its visits are unknown, never "none".
2. **supported**: watched visits of U overlap W and their watched time (duration less
   the unwatched gaps within them) adds up to at least M. Evidence: the visits.
3. **cannot_tell**: a session (either mode) longer than ``max_visit_hours`` overlaps
   W (a lift stopped for days is an outage; it neither supports nor refutes a visit).
4. **cannot_tell**: U was not watched throughout W: a car-state record does not cover W
   with no silence over ``max_gap_s``; a record's mode is unknown; the controller link was
   down (a LinkStatus record, or a CONTROLLER_LINK_LOST event); or a half-hour of W is not
   among the unit's watched half-hours (``unit_trips_daily.watched_slots``, the fault-rate
   report's watched time). A gap anywhere in W is enough. Beyond the retention window the
   car states are folded by hour (docs/retention.md): what the hours cannot decide (a
   silence's place in an hour, a mode seen in an hour only partly in W) is cannot_tell.
5. With visits in W (watched throughout, yet short of M): **too_short** when their watched
   time is below ``too_short_fraction`` of M and every one of them was watched whole (no
   gap, ended); else **cannot_tell** (near the minimum, or partly unwatched).
6. Without visits: **contradicted** when every car-state record in W says NORMAL: the
   unit was watched and in normal service through the whole claimed window. Evidence: the
   watched hours, records and widest silence. Any other mode (fire service, a mode change
   not derived into a visit yet) is **cannot_tell**.

A wrong "contradicted" is worse than "cannot tell", so every doubt falls to "cannot tell".
Each verdict's reason is a code with parameters (`TEMPLATES`), rendered in the reader's
language; the record keeps the code as ``verdict_reason`` and its parameters with the
evidence (JSON).
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import functools
import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fleet.clock import Clock
from fleet.metrics import GatewayMetrics
from fleet.read.shape import out, response
from fleet.read.views import iso
from fleet.reports.claims import TEMPLATES as CLAIM_TEMPLATES
from fleet.reports.claims import Reason, cannot_see, render, watch_span
from fleet.reports.maintenance_config import MaintenanceConfig, MinimumsConfig, VerdictRulesConfig
from fleet.reports.visits import derive_agent, derive_visits
from fleet.store.base import UnitRow
from fleet.store.maintenance import (
    RECORD_KINDS,
    RECORD_VERDICTS,
    NewRecord,
    RecordRow,
    VerdictChange,
    VisitRow,
)
from fleet.store.retention import HOUR_US
from fleet.store.sql import SqlStore, from_us, to_us
from fleet.store.worker import StoreWorker
from protos.liftwatch.v1 import records_pb2

_M = records_pb2
KIND_NAMES: Mapping[str, str] = {
    **{k: k for k in RECORD_KINDS},
    **{k.replace("_", "-"): k for k in RECORD_KINDS},
    "半月": "half_monthly",
    "季度": "quarterly",
    "半年": "half_yearly",
    "年度": "annual",
}
KIND_ZH: Mapping[str, str] = {
    "half_monthly": "半月维保",
    "quarterly": "季度维保",
    "half_yearly": "半年维保",
    "annual": "年度维保",
}
MAX_WINDOW = dt.timedelta(hours=24)
REJUDGE_CHUNK = 50  # records judged per call on the store thread by serve's job
log = logging.getLogger(__name__)

TEMPLATES: Mapping[str, Mapping[str, str]] = {
    "unit_unknown": {"en": "the unit is not known to the fleet", "zh": "监测平台没有这台电梯"},
    "no_agent": {"en": "no agent has ever watched the unit", "zh": "这台电梯从未接入监测终端"},
    "cannot_see_mode": {
        "en": "the unit's profile cannot see its service mode: its visits are unknown",
        "zh": "这台电梯的监测配置看不到运行模式：无法得知是否有维保作业",
    },
    "visit_meets_minimum": {
        "en": "watched visit(s) {visits} overlap the record: {watched_min} min watched, "
        "the {kind} minimum is {minimum_min} min",
        "zh": "监测到的维保作业 {visits} 与记录时间重叠：监测时长 {watched_min} 分钟，"
        "{kind}最少 {minimum_min} 分钟",
    },
    "long_outage": {
        "en": "out of normal service for {hours} h from {start} (an outage, not a visit)",
        "zh": "自 {start} 起停止正常运行 {hours} 小时（停梯，不是维保作业）",
    },
    "not_covered": {
        "en": "not watched: records of the unit do not cover {start} to {end}",
        "zh": "未在监测：这台电梯的记录没有覆盖 {start} 至 {end}",
    },
    "gap": {
        "en": "not watched: no record for {seconds} s from {since}",
        "zh": "未在监测：自 {since} 起 {seconds} 秒没有记录",
    },
    "hourly_unclear": CLAIM_TEMPLATES["hourly_unclear"],
    "hourly_mode_unclear": {
        "en": "cannot tell: the hour from {hour}, beyond the raw records' window and only "
        "partly inside the claimed window, saw {mode} mode, and its hourly figures do not "
        "say when",
        "zh": "无法判断：{hour} 起的一小时已超出原始记录保留期且只有部分在记录时间内，"
        "其间出现过{mode}模式，按小时汇总的数据无法说明出现的时间",
    },
    "mode_unknown": {
        "en": "the service mode was unknown at {at}",
        "zh": "{at} 时运行模式未知",
    },
    "link_lost": {
        "en": "controller link down in the window ({at})",
        "zh": "时间窗内与控制器通信中断（{at}）",
    },
    "slot_unwatched": {
        "en": "not watched: no counters from the controller in the half-hour from {at}",
        "zh": "未在监测：自 {at} 起的半小时内没有读到控制器计数",
    },
    "too_short": {
        "en": "watched throughout: visit(s) {visits} lasted {watched_min} min, far below "
        "the {kind} minimum of {minimum_min} min",
        "zh": "全程在监测：维保作业 {visits} 仅 {watched_min} 分钟，远低于{kind}最少 "
        "{minimum_min} 分钟",
    },
    "short_of_minimum": {
        "en": "visit(s) {visits} lasted {watched_min} min, below the {kind} minimum of "
        "{minimum_min} min but not far below",
        "zh": "维保作业 {visits} 为 {watched_min} 分钟，低于{kind}最少 {minimum_min} 分钟，"
        "但差距不大",
    },
    "visit_partly_unwatched": {
        "en": "visit(s) {visits}: {watched_min} min watched, part of the visit was not",
        "zh": "维保作业 {visits}：监测到 {watched_min} 分钟，部分时间未在监测",
    },
    "other_mode": {
        "en": "no visit, but the car was in {mode} mode at {at}",
        "zh": "没有维保作业，但 {at} 时电梯处于{mode}模式",
    },
    "watched_normal": {
        "en": "watched from {start} to {end} ({hours} h, {records} records, longest gap "
        "{gap_s} s) and in normal service throughout: no visit",
        "zh": "{start} 至 {end} 全程在监测（{hours} 小时，{records} 条记录，最长间隔 "
        "{gap_s} 秒），一直正常运行：没有维保作业",
    },
}
_MODE_ZH = {
    "NORMAL": "正常",
    "FIRE_RETURN": "消防返回",
    "FIREFIGHTER": "消防员",
    "EMERGENCY_POWER": "应急电源",
    "EARTHQUAKE": "地震",
    "INSPECTION": "检修",
    "STOPPED": "停止服务",
}


class RecordsError(Exception):
    """The records file as a whole is unusable (missing, unreadable, wrong header)."""


@response("MaintenanceRecordProblem")
@dataclass(frozen=True, slots=True)
class RecordProblem:
    """A record that was not taken: its line (of the CSV; the item's number, from 1, in
    a JSON upload) and why."""

    line: int = out("line of the CSV, or number of the JSON item")
    reason: str = out()


@dataclass(frozen=True, slots=True)
class RecordIn:
    """One record as read from an upload, times UTC."""

    line: int
    unit_id: str
    kind: str
    start: dt.datetime
    end: dt.datetime
    workers: str


def _moment(day: str, clock: str, zone: dt.tzinfo) -> dt.datetime:
    """``clock`` (HH:MM[:SS][offset], or a full ISO 8601 time) on ``day``, as UTC."""
    text = clock.strip().replace("Z", "+00:00")
    if "T" in text or " " in text:
        moment = dt.datetime.fromisoformat(text)
    else:
        moment = dt.datetime.combine(
            dt.date.fromisoformat(day.strip()), dt.time.fromisoformat(text)
        )
    local = moment.replace(tzinfo=zone) if moment.tzinfo is None else moment
    return local.astimezone(dt.UTC)


def read_record(line: int, fields: Mapping[str, str], zone: dt.tzinfo) -> RecordIn | RecordProblem:
    """One record from its fields (CSV column or JSON key -> text), or why not."""
    unit_id = (fields.get("unit_id") or fields.get("registration_code") or "").strip()
    if not unit_id:
        return RecordProblem(line, "unit_id is empty")
    kind_text = (fields.get("type") or fields.get("kind") or "").strip()
    kind = KIND_NAMES.get(kind_text.lower(), KIND_NAMES.get(kind_text, ""))
    if not kind:
        return RecordProblem(line, f"type: {kind_text!r} is not one of {', '.join(RECORD_KINDS)}")
    day = fields.get("date") or ""
    moments: list[dt.datetime] = []
    for name in ("start", "end"):
        text = fields.get(name) or ""
        try:
            moments.append(_moment(day, text, zone))
        except ValueError:
            where = f"{name} {text!r}" if "T" in text else f"date {day!r}, {name} {text!r}"
            return RecordProblem(line, f"cannot read the time: {where}")
    start, end = moments
    if end <= start:
        return RecordProblem(line, f"end {iso(end)} is not after start {iso(start)}")
    if end - start > MAX_WINDOW:
        return RecordProblem(line, "the record spans more than 24 hours")
    return RecordIn(line, unit_id, kind, start, end, (fields.get("workers") or "").strip())


def parse_records(
    lines: Iterable[str], source: str, zone: dt.tzinfo
) -> tuple[list[RecordIn], list[RecordProblem]]:
    """The records of CSV text and the rows that could not be read, by line; raises
    `RecordsError` for an empty file or a header without the needed columns."""
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise RecordsError(f"records {source}: empty file")
    names = [h.strip().lower().lstrip("\ufeff") for h in header]
    missing = [
        c
        for c, alternatives in (
            ("unit_id", ("unit_id", "registration_code")),
            ("date", ("date",)),
            ("start", ("start",)),
            ("end", ("end",)),
            ("type", ("type", "kind")),
        )
        if not any(a in names for a in alternatives)
    ]
    if missing:
        raise RecordsError(
            f"records {source}: missing column(s) {', '.join(missing)} (need unit_id or "
            "registration_code, date, start, end, type; workers optional)"
        )
    records: list[RecordIn] = []
    problems: list[RecordProblem] = []
    line = reader.line_num
    for row in reader:
        start, line = line + 1, reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < len(names):
            problems.append(RecordProblem(start, f"expected {len(names)} fields, found {len(row)}"))
            continue
        found = read_record(start, dict(zip(names, row, strict=False)), zone)
        (records if isinstance(found, RecordIn) else problems).append(found)  # type: ignore[arg-type]
    return records, problems


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an upload did: the ids of records newly stored, how many were there already,
    and the rows not taken."""

    stored: tuple[int, ...]
    duplicates: int
    problems: tuple[RecordProblem, ...]


def take_records(
    store: SqlStore,
    records: Sequence[RecordIn],
    problems: Sequence[RecordProblem],
    *,
    contractor: str,
    uploaded_by: str,
    source: Literal["csv", "api"],
    now: dt.datetime,
    config: MaintenanceConfig,
) -> ImportResult:
    """Store the records of ``contractor``'s own units, refuse the others by line, and
    judge the new ones at once. Never raises for a row."""
    maintainers = store.unit_contractors()
    refused = list(problems)
    kept: list[NewRecord] = []
    for record in records:
        if maintainers.get(record.unit_id) != contractor:
            # Unknown and another contractor's read the same, so that an upload cannot
            # probe which units exist (as the claims audit answers).
            reason = f"unit {record.unit_id!r} unknown (not among {contractor}'s units)"
            refused.append(RecordProblem(record.line, reason))
            continue
        kept.append(
            NewRecord(
                unit_id=record.unit_id,
                contractor=contractor,
                kind=record.kind,
                start_us=to_us(record.start),
                end_us=to_us(record.end),
                workers=record.workers,
                source=source,
                uploaded_by=uploaded_by,
                uploaded_us=to_us(now),
            )
        )
    ids = store.add_maintenance_records(kept, now)
    stored = tuple(i for i in ids if i is not None)
    if stored:
        # The visits their verdicts rest on first: records not folded yet may hold them.
        derive_visits(store, config.verdicts, now)
        judge_records(store, store.maintenance_records(ids=stored), config, now)
    refused.sort(key=lambda p: p.line)
    return ImportResult(stored, sum(i is None for i in ids), tuple(refused))


# -- verdicts -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Judgement:
    """A record's verdict, its reason and evidence (JSON-ready), and the visit it cites."""

    verdict: str
    reason: Reason
    evidence: Mapping[str, Any]
    visit_id: int | None = None


def _visit_evidence(visit: VisitRow) -> dict[str, Any]:
    return {
        "id": visit.id,
        "start": iso(from_us(visit.start_us)),
        "end": None if visit.end_us is None else iso(from_us(visit.end_us)),
        "duration_s": round(visit.duration_s, 1),
        "watched_s": round(visit.watched_s, 1),
        "mode": visit.mode,
        "inspection_runs": visit.inspection_runs,
        "landings_visited": visit.landings_visited,
        "door_cycles": visit.door_cycles,
    }


@dataclass(frozen=True, slots=True)
class Watched:
    """How one span was watched: None ``problem`` when throughout, with its car-state
    records' count, widest silence and the modes seen (their first time each); beyond
    the retention window, ``unsure`` holds the modes a folded hour only partly inside the
    span saw (its start each): they may lie inside the span or not."""

    problem: Reason | None
    records: int
    widest_s: float
    modes: Mapping[int, int]
    unsure: Mapping[int, int] = field(default_factory=dict)


def _slot_problem(
    store: SqlStore, unit_id: str, start: dt.datetime, end: dt.datetime
) -> Reason | None:
    """The first half-hour of [start, end] not among the unit's watched half-hours."""
    slots = store.watched_slots(unit_id, start.date(), end.date() + dt.timedelta(days=1))
    at = start.replace(minute=start.minute - start.minute % 30, second=0, microsecond=0)
    while at < end:
        if not slots.get(at.date(), 0) >> (at.hour * 2 + at.minute // 30) & 1:
            return Reason("slot_unwatched", {"at": iso(at)})
        at += dt.timedelta(minutes=30)
    return None


def watch(
    store: SqlStore, unit: UnitRow, start: dt.datetime, end: dt.datetime, max_gap_s: float
) -> Watched:
    """Whether ``unit`` was watched throughout [start, end] (see the module docstring, 4)."""
    gap = dt.timedelta(seconds=max_gap_s)
    states = store.car_states(unit.unit_id, unit.agent_id, start - gap, end + gap)
    times = [from_us(t) for t, _ in states]
    # Beyond the retention window the car states are folded by hour (the same check on
    # them as the claims audit's, `watch_span`; a doubt there is "hourly_unclear").
    hours = store.state_hours(unit.unit_id, start - gap, end + gap)
    problem, records, widest = watch_span(times, hours, start, end, gap)
    if problem is not None:
        return Watched(problem, records, widest.total_seconds(), {})
    modes: dict[int, int] = {}
    unsure: dict[int, int] = {}
    for hour in hours:
        # A folded hour tells which modes it saw, not when: its start stands for their
        # first time, to the hour; one only partly inside the span leaves them unsure.
        inside = to_us(start - gap) <= hour.hour_us <= to_us(end + gap) - HOUR_US
        for mode in sorted(hour.modes):
            (modes if inside else unsure).setdefault(mode, hour.hour_us)
    for time_us, payload in states:
        record = records_pb2.Record()
        record.ParseFromString(payload)
        modes.setdefault(record.car_state.mode, time_us)
    for silent in (_M.SERVICE_MODE_UNSPECIFIED, _M.SERVICE_MODE_UNKNOWN):
        if silent in modes:
            at = iso(from_us(modes[silent]))
            return Watched(Reason("mode_unknown", {"at": at}), records, 0, modes)
        if silent in unsure:
            return Watched(_mode_unclear(silent, unsure[silent]), records, 0, modes)
    for time_us, payload in store.link_states(unit.unit_id, start, end):
        record = records_pb2.Record()
        record.ParseFromString(payload)
        if not record.link_status.up:
            at = iso(max(from_us(time_us), start))
            return Watched(Reason("link_lost", {"at": at}), records, 0, modes)
    for event in store.unit_events(unit.unit_id, start, end):
        if event.type == _M.EVENT_TYPE_CONTROLLER_LINK_LOST:
            at = iso(event.onset or event.time)
            return Watched(Reason("link_lost", {"at": at}), records, 0, modes)
    slot = _slot_problem(store, unit.unit_id, start, end)
    return Watched(slot, records, widest.total_seconds(), modes, unsure)


def _mode_unclear(mode: int, hour_us: int) -> Reason:
    """Cannot tell: ``mode`` was seen in the folded hour from ``hour_us``, which lies only
    partly inside the span (the hour does not say when)."""
    name = _M.ServiceMode.Name(mode).removeprefix("SERVICE_MODE_")
    return Reason("hourly_mode_unclear", {"mode": name, "hour": iso(from_us(hour_us))})


def judge(
    store: SqlStore,
    record: RecordRow,
    unit: UnitRow | None,
    minimums: MinimumsConfig,
    rules: VerdictRulesConfig,
) -> Judgement:
    """The verdict on one record (see the module docstring for the rules, in order)."""
    if unit is None:
        return Judgement("cannot_tell", Reason("unit_unknown"), {})
    if not unit.agent_id:
        return Judgement("cannot_tell", Reason("no_agent"), {})
    if cannot_see(unit, _M.EVENT_TYPE_MODE_CHANGE):
        return Judgement("cannot_tell", Reason("cannot_see_mode"), {})
    slack = dt.timedelta(minutes=rules.slack_minutes)
    start, end = from_us(record.start_us) - slack, from_us(record.end_us) + slack
    found = sorted(
        store.visits(unit_id=unit.unit_id, since=start, until=end), key=lambda v: v.start_us
    )
    longest = dt.timedelta(hours=rules.max_visit_hours).total_seconds()
    outages = [v for v in found if v.duration_s > longest]
    visits = [v for v in found if v not in outages]
    minimum_s = minimums.minutes(record.kind) * 60
    watched_s = sum(v.watched_s for v in visits)
    shown = [_visit_evidence(v) for v in visits]
    params: dict[str, object] = {
        "visits": ", ".join(f"#{v.id}" for v in visits),
        "watched_min": f"{watched_s / 60:.0f}",
        "kind": record.kind,
        "minimum_min": f"{minimum_s / 60:.0f}",
    }
    cited = max(visits, key=lambda v: v.watched_s).id if visits else None
    if visits and watched_s >= minimum_s:
        return Judgement(
            "supported", Reason("visit_meets_minimum", params), {"visits": shown}, cited
        )
    if outages:
        first = outages[0]
        hours = f"{first.duration_s / 3600:.1f}"
        reason = Reason("long_outage", {"hours": hours, "start": iso(from_us(first.start_us))})
        return Judgement("cannot_tell", reason, {"visits": [_visit_evidence(first)]}, first.id)
    seen = watch(store, unit, start, end, rules.max_gap_s)
    if seen.problem is not None:
        return Judgement("cannot_tell", seen.problem, {"visits": shown}, cited)
    if visits:
        whole = all(v.end_us is not None and v.unwatched_s == 0 for v in visits)
        if not whole:
            return Judgement(
                "cannot_tell", Reason("visit_partly_unwatched", params), {"visits": shown}, cited
            )
        if watched_s < rules.too_short_fraction * minimum_s:
            return Judgement("too_short", Reason("too_short", params), {"visits": shown}, cited)
        return Judgement(
            "cannot_tell", Reason("short_of_minimum", params), {"visits": shown}, cited
        )
    others = {m: t for m, t in seen.modes.items() if m != _M.SERVICE_MODE_NORMAL}
    if others:
        mode, at_us = min(others.items(), key=lambda item: item[1])
        name = _M.ServiceMode.Name(mode).removeprefix("SERVICE_MODE_")
        return Judgement(
            "cannot_tell", Reason("other_mode", {"mode": name, "at": iso(from_us(at_us))}), {}
        )
    unsure = {m: t for m, t in seen.unsure.items() if m != _M.SERVICE_MODE_NORMAL}
    if unsure:
        mode, at_us = min(unsure.items(), key=lambda item: item[1])
        return Judgement("cannot_tell", _mode_unclear(mode, at_us), {})
    span_h = (end - start).total_seconds() / 3600
    normal: dict[str, object] = {
        "start": iso(start),
        "end": iso(end),
        "hours": f"{span_h:.1f}",
        "records": seen.records,
        "gap_s": f"{seen.widest_s:.0f}",
    }
    return Judgement("contradicted", Reason("watched_normal", normal), {"watched": normal})


def render_reason(reason: Reason, lang: str) -> str:
    """A verdict's reason as a sentence in ``lang`` (types and modes in its words)."""
    if lang == "zh":
        params = dict(reason.params)
        if "kind" in params:
            params["kind"] = KIND_ZH.get(str(params["kind"]), params["kind"])
        if "mode" in params:
            params["mode"] = _MODE_ZH.get(str(params["mode"]), params["mode"])
        reason = Reason(reason.code, params)
    return render(reason, lang, TEMPLATES)


def judge_records(
    store: SqlStore, records: Sequence[RecordRow], config: MaintenanceConfig, now: dt.datetime
) -> tuple[int, Counter[str]]:
    """Judge ``records`` and keep each verdict (history on change): how many changed and
    the count of each verdict."""
    units: dict[str, UnitRow | None] = {}
    changes: list[VerdictChange] = []
    counts: Counter[str] = Counter(dict.fromkeys(RECORD_VERDICTS, 0))
    for record in records:
        if record.unit_id not in units:
            units[record.unit_id] = store.get_unit(record.unit_id)
        found = judge(store, record, units[record.unit_id], config.minimums, config.verdicts)
        counts[found.verdict] += 1
        evidence = {**found.evidence, "params": dict(found.reason.params)}
        changes.append(
            VerdictChange(
                record.id,
                found.verdict,
                found.reason.code,
                json.dumps(evidence, sort_keys=True, ensure_ascii=False),
                found.visit_id,
            )
        )
    return store.set_verdicts(changes, now), counts


def audit(
    store: SqlStore,
    config: MaintenanceConfig,
    now: dt.datetime,
    *,
    since: dt.datetime | None = None,
    contractor: str = "",
) -> tuple[int, Counter[str]]:
    """Derive visits from every record not folded yet, then judge the records whose
    window begins at or after ``since`` (all when None), of ``contractor`` ("" = all):
    how many verdicts changed, and the count of each."""
    derive_visits(store, config.verdicts, now)
    records = store.maintenance_records(since=since, contractor=contractor)
    return judge_records(store, records, config, now)


async def run_maintenance(
    store: StoreWorker, clock: Clock, config: MaintenanceConfig, metrics: GatewayMetrics
) -> None:
    """Serve's job, every ``[maintenance.verdicts] derive_interval_s`` (0: never): see
    `maintenance_round`. A failure is logged and counted, and the next round tries again:
    it never ends the process."""
    if config.verdicts.derive_interval_s <= 0:
        return
    while True:
        try:
            await maintenance_round(store, clock(), config)
        except Exception:  # a bad round must not end serve; the next one tries again
            log.exception("maintenance: deriving visits or judging records failed")
            metrics.bad_input.labels(kind="maintenance_job").inc()
        await asyncio.sleep(config.verdicts.derive_interval_s)


async def maintenance_round(
    store: StoreWorker, now: dt.datetime, config: MaintenanceConfig
) -> None:
    """Derive the visits of new car-state records, then judge again the records whose
    window began within ``rejudge_days`` (a late record from an agent's outbox may change
    a verdict). Each agent's derivation and each chunk of records is one call on the
    store thread, so ingest waits at most for one of them."""
    rules = config.verdicts

    def due(s: object) -> list[tuple[str, int, int]]:
        return _sql(s).derivation_due()

    def recent(s: object) -> list[RecordRow]:
        return _sql(s).maintenance_records(since=now - dt.timedelta(days=rules.rejudge_days))

    for agent_id, done, committed in await store.call(due):
        step = functools.partial(_derive_one, agent_id, done, committed, rules, now)
        await store.call(step)
    rows = await store.call(recent)
    for first in range(0, len(rows), REJUDGE_CHUNK):
        await store.call(
            functools.partial(_judge_chunk, rows[first : first + REJUDGE_CHUNK], config, now)
        )


def _derive_one(
    agent_id: str, done: int, committed: int, rules: VerdictRulesConfig, now: dt.datetime, s: object
) -> tuple[int, int]:
    return derive_agent(_sql(s), agent_id, done, committed, rules, now)


def _judge_chunk(
    rows: Sequence[RecordRow], config: MaintenanceConfig, now: dt.datetime, s: object
) -> tuple[int, Counter[str]]:
    return judge_records(_sql(s), rows, config, now)


def _sql(store: object) -> SqlStore:
    # The worker hands the Store protocol; the maintenance tables are the SQL store's.
    if not isinstance(store, SqlStore):
        raise TypeError(f"maintenance needs a SQL store, not {type(store).__name__}")
    return store
