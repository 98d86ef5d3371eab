"""Repair-claim audit: does the recorded data support a contractor's claimed faults?

Input CSV (UTF-8, header required, extra columns ignored): ``unit_id`` (or
``registration_code``), ``time`` and ``fault_type`` (a taxonomy name such as
DOOR_CLOSE_FAILURE, any case). ``time`` is ISO 8601; with a UTC offset (``Z``,
``+08:00``) it is that instant; without one it is the site's wall-clock time (``[http]
time_zone``, Asia/Shanghai by default), as a contractor's work order writes it. For each
claim, within ``window`` either side of its time, the first of these that holds:

- **supported**: the unit has an event of the claimed type (its onset or its record time
  in the window); the reason cites it.
- **cannot_tell**, not known: the unit is not known to the fleet, or no agent ever
  watched it.
- **cannot_tell**, cannot see: the unit's agent said in its Hello that the unit cannot
  detect the claimed type (its profile lacks the signals), or did not list the type at all
  (an agent older than the type). The data cannot refute what the unit cannot see.
- **cannot_tell**, not watched: its controller link was lost in the window, or its records
  do not cover the window with no gap over ``max_gap`` (agents send a state sample at
  least every few seconds and a heartbeat every 10 s). Beyond the retention window the
  folded hours stand for the records (`watch_span`); where they cannot show the window
  watched, cannot_tell ("hourly_unclear"; docs/retention.md).
- **overstated** (小故障报大故障): the unit was watched throughout, the claimed type is one
  it can see, and it had a lift fault of a lower `SEVERITY` than the claim (ENTRAPMENT
  claimed where the lift had a DOOR_OPEN_FAILURE); the reason cites the most severe such
  event. Only lift faults (`fleet.taxonomy`) are cited: a passenger holding a door or
  pressing the alarm button may be how a real fault looked, so that is no evidence that
  the claim was inflated.
- **cannot_tell**, something else: another event was recorded (the reason names which);
  the data neither confirm nor refute the claim.
- **contradicts**: the unit was watched throughout, can see the claimed type, and no event
  but monitoring ones (mode changes) was recorded: the lift was watched and normal then.

Severity (`SEVERITY`), what the fault means to a passenger, highest first:

4. shut in, or in danger of injury: ENTRAPMENT, UNINTENDED_MOVEMENT,
   DOOR_OPEN_WHILE_MOVING, DOOR_LOCK_BYPASS, OVERSPEED, OVERTRAVEL_TOP, OVERTRAVEL_BOTTOM;
3. the lift stopped or cannot run (a passenger may be stranded): SAFETY_CIRCUIT_OPEN,
   STOPPED_OUTSIDE_DOOR_ZONE, RUN_TIME_EXCEEDED, POSITION_LOST, RESTART_PREVENTED;
2. door and levelling faults (a delay, a trip hazard): DOOR_CLOSE_FAILURE,
   DOOR_OPEN_FAILURE, DOOR_REOPEN_LOOP, LEVELLING_FAULT;
1. nuisance, wear and outside causes: DOOR_HELD_OPEN, ALARM_BUTTON, DOOR_SLOWING,
   POWER_FAILURE, MODE_CHANGE, CONTROLLER_LINK_LOST.

Each verdict's reason is a code with parameters (`Reason`), rendered in the reader's
language (`render`, "zh" or "en"); JSON carries both. A bad row (missing unit, unreadable
time, unknown fault type) is reported with its line and reason and audited as nothing; the
other rows still are.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from fleet.config import LANGUAGES
from fleet.read.shape import out, response, to_json
from fleet.read.views import event_type_name, event_type_number, iso, phase_name
from fleet.store.base import EventRow, UnitRow
from fleet.store.retention import StateHour
from fleet.store.sql import to_us
from fleet.taxonomy import EventClass, event_class, is_lift_fault
from protos.liftwatch.v1 import records_pb2

VERDICTS = ("supported", "overstated", "contradicts", "cannot_tell")
_T = records_pb2

SEVERITY: Mapping[int, int] = {
    **dict.fromkeys(
        (
            _T.EVENT_TYPE_ENTRAPMENT,
            _T.EVENT_TYPE_UNINTENDED_MOVEMENT,
            _T.EVENT_TYPE_DOOR_OPEN_WHILE_MOVING,
            _T.EVENT_TYPE_DOOR_LOCK_BYPASS,
            _T.EVENT_TYPE_OVERSPEED,
            _T.EVENT_TYPE_OVERTRAVEL_TOP,
            _T.EVENT_TYPE_OVERTRAVEL_BOTTOM,
        ),
        4,
    ),
    **dict.fromkeys(
        (
            _T.EVENT_TYPE_SAFETY_CIRCUIT_OPEN,
            _T.EVENT_TYPE_STOPPED_OUTSIDE_DOOR_ZONE,
            _T.EVENT_TYPE_RUN_TIME_EXCEEDED,
            _T.EVENT_TYPE_POSITION_LOST,
            _T.EVENT_TYPE_RESTART_PREVENTED,
        ),
        3,
    ),
    **dict.fromkeys(
        (
            _T.EVENT_TYPE_DOOR_CLOSE_FAILURE,
            _T.EVENT_TYPE_DOOR_OPEN_FAILURE,
            _T.EVENT_TYPE_DOOR_REOPEN_LOOP,
            _T.EVENT_TYPE_LEVELLING_FAULT,
        ),
        2,
    ),
    **dict.fromkeys(
        (
            _T.EVENT_TYPE_DOOR_HELD_OPEN,
            _T.EVENT_TYPE_ALARM_BUTTON,
            _T.EVENT_TYPE_DOOR_SLOWING,
            _T.EVENT_TYPE_POWER_FAILURE,
            _T.EVENT_TYPE_MODE_CHANGE,
            _T.EVENT_TYPE_CONTROLLER_LINK_LOST,
        ),
        1,
    ),
}

# The event names a Chinese reader knows (as the dashboard shows them, i18n.js).
EVENT_NAMES_ZH: Mapping[str, str] = {
    "SAFETY_CIRCUIT_OPEN": "安全回路断路",
    "DOOR_CLOSE_FAILURE": "关门故障",
    "DOOR_OPEN_FAILURE": "开门故障",
    "STOPPED_OUTSIDE_DOOR_ZONE": "停在非平层区",
    "UNINTENDED_MOVEMENT": "轿厢意外移动",
    "RUN_TIME_EXCEEDED": "运行超时",
    "POSITION_LOST": "楼层位置丢失",
    "RESTART_PREVENTED": "停梯后不能再启动",
    "OVERTRAVEL_TOP": "冲顶",
    "OVERTRAVEL_BOTTOM": "蹲底",
    "OVERSPEED": "超速",
    "DOOR_OPEN_WHILE_MOVING": "开门走车",
    "DOOR_LOCK_BYPASS": "门锁回路短接",
    "ENTRAPMENT": "困人",
    "DOOR_REOPEN_LOOP": "门反复开关",
    "DOOR_HELD_OPEN": "门长时间开启",
    "DOOR_SLOWING": "门机变慢",
    "POWER_FAILURE": "停电",
    "MODE_CHANGE": "运行模式变化",
    "ALARM_BUTTON": "紧急报警按钮",
    "CONTROLLER_LINK_LOST": "控制器通信中断",
    "LEVELLING_FAULT": "平层故障",
}
_PHASES_ZH = {"RAISED": "发生", "CLEARED": "恢复"}

# Reason code -> template per language; parameters named ``type``/``found`` hold event
# type names (rendered as the reader's names), the rest are shown as they are.
TEMPLATES: Mapping[str, Mapping[str, str]] = {
    "event_recorded": {
        "en": "{type} {phase} event {event_id} onset {onset} recorded {recorded}",
        "zh": "记录到{type}（{phase}）事件 {event_id}，开始于 {onset}，记录于 {recorded}",
    },
    "unit_unknown": {
        "en": "the unit is not known to the fleet",
        "zh": "监测平台没有这台电梯",
    },
    "no_agent": {
        "en": "no agent has ever watched the unit",
        "zh": "这台电梯从未接入监测终端",
    },
    "cannot_see": {
        "en": "this unit cannot see {type}: its agent reports that the unit's signals "
        "cannot detect it",
        "zh": "这台电梯无法监测{type}：其监测终端报告现有信号不足以判断该故障",
    },
    "link_lost": {
        "en": "controller link lost in the window ({at})",
        "zh": "时间窗内与控制器通信中断（{at}）",
    },
    "not_covered": {
        "en": "not watched: records of the unit do not cover {start} to {end}",
        "zh": "未在监测：这台电梯的记录没有覆盖 {start} 至 {end}",
    },
    "gap": {
        "en": "not watched: no record for {seconds} s from {since}",
        "zh": "未在监测：自 {since} 起 {seconds} 秒没有记录",
    },
    "hourly_unclear": {
        "en": "cannot tell whether watched: {start} to {end} lies beyond the raw records' "
        "window, and the hourly figures kept cannot show it without a silence over "
        "{max_gap_s} s",
        "zh": "无法确认是否在监测：{start} 至 {end} 已超出原始记录保留期，保留的按小时汇总"
        "数据无法证明其间没有超过 {max_gap_s} 秒的中断",
    },
    "other_events": {
        "en": "no {type}, but {found} recorded in the window",
        "zh": "未记录到{type}，但时间窗内记录到{found}",
    },
    "overstated": {
        "en": "watched throughout and no {type} (severity {claimed_severity}); the lift had "
        "{found} (severity {watched_severity}), event {event_id}, onset {onset}",
        "zh": "全程在监测，未发生{type}（严重等级 {claimed_severity}）；电梯实际发生的是"
        "{found}（严重等级 {watched_severity}），事件 {event_id}，开始于 {onset}",
    },
    "watched_normal": {
        "en": "watched from {start} to {end} ({records} records, longest gap {gap_s} s) "
        "and no fault recorded",
        "zh": "{start} 至 {end} 全程在监测（{records} 条记录，最长间隔 {gap_s} 秒），"
        "未记录到任何故障",
    },
}
_TYPE_PARAMS = ("type", "found")
# Why a row of the claims file could not be read, per language (the reader's, as the
# verdicts' evidence).
PROBLEM_TEMPLATES: Mapping[str, Mapping[str, str]] = {
    "fields": {
        "en": "expected {expected} fields, found {found}",
        "zh": "应有 {expected} 列，实际 {found} 列",
    },
    "empty": {"en": "{column} is empty", "zh": "{column} 为空"},
    "time": {"en": "time: cannot read {text!r}", "zh": "time 无法读取：{text!r}"},
    "fault_type": {
        "en": "fault_type: unknown event type {text!r}; known: {known}",
        "zh": "fault_type 不是已知的故障类型：{text!r}",
    },
    "unit_unknown": {"en": "unit {unit!r} unknown", "zh": "没有这台电梯：{unit!r}"},
}
# A time as the audit's reasons carry it (ISO 8601 UTC): shown in the site's zone.
_UTC_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|\+00:00)")


class ClaimsError(Exception):
    """The claims file as a whole is unusable (missing, unreadable, wrong header)."""


@dataclass(frozen=True, slots=True)
class Claim:
    """One claimed fault, from ``line`` of the file; ``time`` is UTC."""

    line: int
    unit_id: str
    time: dt.datetime
    fault_type: int


@response("ClaimProblem")
@dataclass(frozen=True, slots=True)
class ClaimProblem:
    """A row that could not be read: its line and why."""

    line: int = out("line of the claims CSV")
    reason: str = out()


@response("ClaimReason")
@dataclass(frozen=True, slots=True)
class Reason:
    """Why a verdict: a `TEMPLATES` code and its parameters (strings, numbers, or lists
    of event type names)."""

    code: str = out("the reason's code, e.g. event_recorded, watched_normal")
    params: Mapping[str, object] = out("the code's parameters", default_factory=dict)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the data says about one claim, why, and the event it cites (if any)."""

    claim: Claim
    verdict: str
    reason: Reason
    cites: str | None = None


def render(
    reason: Reason,
    lang: str,
    templates: Mapping[str, Mapping[str, str]] = TEMPLATES,
    zone: dt.tzinfo | None = None,
) -> str:
    """``reason`` as a sentence in ``lang`` ("zh" or "en"; anything else reads as "en"),
    from ``templates`` (code -> language -> format string; the claims audit's by default);
    with ``zone`` (the site's), its UTC times as local "YYYY-MM-DD HH:MM:SS"."""
    lang = lang if lang in LANGUAGES else "en"

    def shown(name: str, value: object) -> str:
        if zone is not None and isinstance(value, str) and _UTC_TIME.fullmatch(value):
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")
        if name in _TYPE_PARAMS:
            names = value if isinstance(value, list) else [value]
            if lang == "zh":
                return "、".join(EVENT_NAMES_ZH.get(str(n), str(n)) for n in names)
            return ", ".join(str(n) for n in names)
        if name == "phase" and lang == "zh":
            return _PHASES_ZH.get(str(value), str(value))
        return str(value)

    params = {name: shown(name, value) for name, value in reason.params.items()}
    template = templates[reason.code][lang]
    if templates is PROBLEM_TEMPLATES:
        return template.format(**reason.params)  # values as the file had them (repr)
    return template.format(**params)


def language_of(requested: str, accept_language: str, default: str) -> str:
    """The reader's language: ``requested`` when it is one we write, else the first of
    ``accept_language`` (an HTTP header) we write, else ``default``."""
    if requested in LANGUAGES:
        return requested
    for part in accept_language.split(","):
        tag = part.split(";")[0].strip().lower()
        base = tag.split("-")[0]
        if base in LANGUAGES:
            return base
    return default if default in LANGUAGES else "en"


def _time(text: str, zone: dt.tzinfo) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    # No offset: the site's wall clock, as a work order writes it.
    local = moment.replace(tzinfo=zone) if moment.tzinfo is None else moment
    return local.astimezone(dt.UTC)


def problem(line: int, lang: str, code: str, **params: object) -> ClaimProblem:
    """A row that could not be read, its reason in ``lang`` (`PROBLEM_TEMPLATES`)."""
    return ClaimProblem(line, render(Reason(code, params), lang, PROBLEM_TEMPLATES))


def parse_claims(
    lines: Iterable[str], source: str, zone: dt.tzinfo = dt.UTC, lang: str = "en"
) -> tuple[list[Claim], list[ClaimProblem]]:
    """The claims of CSV text, and the rows that could not be read (why, in ``lang``); a
    time without a UTC offset is read in ``zone`` (the site's time zone)."""
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise ClaimsError(f"claims {source}: empty file")
    names = [h.strip().lower() for h in header]
    unit_column = "unit_id" if "unit_id" in names else "registration_code"
    missing = [c for c in (unit_column, "time", "fault_type") if c not in names]
    if missing:
        raise ClaimsError(
            f"claims {source}: missing column(s) {', '.join(missing)} "
            "(need unit_id or registration_code, time, fault_type)"
        )
    at = {name: names.index(name) for name in (unit_column, "time", "fault_type")}
    claims: list[Claim] = []
    problems: list[ClaimProblem] = []
    line = reader.line_num
    for row in reader:
        start, line = line + 1, reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < len(names):
            problems.append(problem(start, lang, "fields", expected=len(names), found=len(row)))
            continue
        unit_id = row[at[unit_column]].strip()
        if not unit_id:
            problems.append(problem(start, lang, "empty", column=unit_column))
            continue
        try:
            moment = _time(row[at["time"]], zone)
        except ValueError:
            problems.append(problem(start, lang, "time", text=row[at["time"]]))
            continue
        try:
            fault = event_type_number(row[at["fault_type"]])
        except ValueError as exc:
            known = str(exc).partition("known: ")[2] or str(exc)
            problems.append(
                problem(start, lang, "fault_type", text=row[at["fault_type"]], known=known)
            )
            continue
        claims.append(Claim(start, unit_id, moment, fault))
    return claims, problems


def read_claims(path: Path, zone: dt.tzinfo = dt.UTC) -> tuple[list[Claim], list[ClaimProblem]]:
    """`parse_claims` of the file at ``path``; raises `ClaimsError` when unreadable."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            return parse_claims(f, str(path), zone)
    except FileNotFoundError:
        raise ClaimsError(f"claims {path}: file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ClaimsError(f"claims {path}: cannot read: {exc}") from None


class ClaimReads(Protocol):
    """The store reads an audit makes (a `Store` has them; the web API passes a proxy
    that runs each on the store thread while the audit computes elsewhere)."""

    def unit_events(
        self, unit_id: str, since: dt.datetime, until: dt.datetime
    ) -> list[EventRow]: ...

    def get_unit(self, unit_id: str) -> UnitRow | None: ...

    def record_times(
        self, unit_id: str, agent_id: str, since: dt.datetime, until: dt.datetime
    ) -> list[dt.datetime]: ...

    def state_hours(
        self, unit_id: str, since: dt.datetime, until: dt.datetime
    ) -> list[StateHour]: ...


def cannot_see(unit: UnitRow, event_type: int) -> bool:
    """Whether ``unit``'s agent said (Hello) it cannot detect ``event_type``: listed as
    undetectable, or missing from a stated list of what it can (a type newer than it)."""
    if event_type in unit.undetectable:
        return True
    return bool(unit.detectable) and event_type not in unit.detectable


def _watch_gap(
    store: ClaimReads,
    unit: UnitRow,
    start: dt.datetime,
    end: dt.datetime,
    max_gap: dt.timedelta,
) -> tuple[Reason | None, int, dt.timedelta]:
    """Why the unit was not watched over [start, end] (None when it was), with the
    number of its records and the widest gap between them (`watch_span`)."""
    times = store.record_times(unit.unit_id, unit.agent_id, start - max_gap, end + max_gap)
    hours = store.state_hours(unit.unit_id, start - max_gap, end + max_gap)
    return watch_span(times, hours, start, end, max_gap)


def watch_span(
    times: Sequence[dt.datetime],
    hours: Sequence[StateHour],
    start: dt.datetime,
    end: dt.datetime,
    max_gap: dt.timedelta,
) -> tuple[Reason | None, int, dt.timedelta]:
    """Whether a unit was watched over [start, end]: its records (``times``, those in
    [start - max_gap, end + max_gap), by time) cover the span with no silence over
    ``max_gap`` (None), else why not; with the records' count and the widest silence.

    Where part of the span lies beyond the retention window its car states are folded
    into ``hours`` (`fleet.store.retention.state_hours`); then the span counts as watched
    only when the hours and the records left chain from before ``start`` to after
    ``end`` with no silence, and no hour's widest silence, over ``max_gap``: an hour's
    widest silence may lie outside the span, so this can say "hourly_unclear" (cannot
    tell) where the raw records said watched, never the other way round. The count is
    then by whole hours and the widest silence an upper bound."""
    if hours:
        # Each hour a stretch from its first to its last car state with its widest
        # silence, each record left a point.
        items = sorted(
            [(h.first_us, h.last_us, h.widest_gap_us) for h in hours]
            + [(to_us(t), to_us(t), 0) for t in times]
        )
        widest_us, reach = 0, items[0][0]
        for first, last, inner in items:
            widest_us = max(widest_us, first - reach, inner)
            reach = max(reach, last)
        records = len(times) + sum(h.car_states for h in hours)
        covered = items[0][0] <= to_us(start) and reach >= to_us(end)
        silence = dt.timedelta(microseconds=widest_us)
        if not covered or silence > max_gap:
            gap_s = f"{max_gap.total_seconds():.0f}"
            unclear = {"start": iso(start), "end": iso(end), "max_gap_s": gap_s}
            return Reason("hourly_unclear", unclear), records, silence
        return None, records, silence
    if not times or times[0] > start or times[-1] < end:
        return Reason("not_covered", {"start": iso(start), "end": iso(end)}), len(times), max_gap
    marks = [start, *[t for t in times if start < t < end], end]
    widest, since = max((b - a, a) for a, b in itertools.pairwise(marks))
    if widest > max_gap:
        seconds = f"{widest.total_seconds():.0f}"
        return Reason("gap", {"seconds": seconds, "since": iso(since)}), len(times), widest
    return None, len(times), widest


def _lesser_fault(claim: Claim, raised: list[EventRow]) -> EventRow | None:
    """The most severe lift fault in ``raised`` when every one is below the claim."""
    faults = [e for e in raised if is_lift_fault(e.type)]
    if not faults:
        return None
    worst = max(faults, key=lambda e: (SEVERITY.get(e.type, 0), e.time))
    if SEVERITY.get(worst.type, 0) >= SEVERITY.get(claim.fault_type, 0):
        return None
    return worst


def audit_claim(
    store: ClaimReads, claim: Claim, window: dt.timedelta, max_gap: dt.timedelta
) -> Verdict:
    """Judge one claim against the store (see the module docstring)."""
    start, end = claim.time - window, claim.time + window
    events = store.unit_events(claim.unit_id, start, end)
    claimed = event_type_name(claim.fault_type)
    for event in events:
        if event.type == claim.fault_type:
            params: dict[str, object] = {
                "type": claimed,
                "phase": phase_name(event.phase),
                "event_id": event.event_id,
                "onset": iso(event.onset),
                "recorded": iso(event.time),
            }
            return Verdict(claim, "supported", Reason("event_recorded", params), event.event_id)
    unit = store.get_unit(claim.unit_id)
    if unit is None:
        return Verdict(claim, "cannot_tell", Reason("unit_unknown"))
    if not unit.agent_id:
        return Verdict(claim, "cannot_tell", Reason("no_agent"))
    if cannot_see(unit, claim.fault_type):
        return Verdict(claim, "cannot_tell", Reason("cannot_see", {"type": claimed}))
    lost = [e for e in events if e.type == _T.EVENT_TYPE_CONTROLLER_LINK_LOST]
    if lost:
        return Verdict(claim, "cannot_tell", Reason("link_lost", {"at": iso(lost[0].onset)}))
    unwatched, records, widest = _watch_gap(store, unit, start, end, max_gap)
    if unwatched is not None:
        return Verdict(claim, "cannot_tell", unwatched)
    raised = [e for e in events if e.phase == _T.PHASE_RAISED]
    lesser = _lesser_fault(claim, raised)
    if lesser is not None:
        cited: dict[str, object] = {
            "type": claimed,
            "claimed_severity": SEVERITY.get(claim.fault_type, 0),
            "found": event_type_name(lesser.type),
            "watched_severity": SEVERITY.get(lesser.type, 0),
            "event_id": lesser.event_id,
            "onset": iso(lesser.onset or lesser.time),
        }
        return Verdict(claim, "overstated", Reason("overstated", cited), lesser.event_id)
    others = [e for e in raised if event_class(e.type) is not EventClass.MONITORING]
    if others:
        found = sorted({event_type_name(e.type) for e in others})
        return Verdict(
            claim, "cannot_tell", Reason("other_events", {"type": claimed, "found": found})
        )
    watched: dict[str, object] = {
        "start": iso(start),
        "end": iso(end),
        "records": records,
        "gap_s": f"{widest.total_seconds():.0f}",
    }
    return Verdict(claim, "contradicts", Reason("watched_normal", watched))


@response("ClaimVerdict")
@dataclass(frozen=True)
class VerdictView:
    """One audited claim: its reason as code and parameters and as ``evidence`` in the
    reader's language."""

    line: int = out("line of the claims CSV")
    unit_id: str = out()
    time: str = out("the claimed time")
    fault_type: str = out("event type claimed, e.g. ENTRAPMENT")
    verdict: Literal["supported", "overstated", "contradicts", "cannot_tell"] = out()
    reason: Reason = out()
    cites: str | None = out("event_id of the event the verdict cites")
    evidence: str = out("the reason as a sentence")

    @classmethod
    def of(cls, verdict: Verdict, lang: str, zone: dt.tzinfo | None = None) -> VerdictView:
        """``verdict`` with its evidence rendered in ``lang`` (its times in ``zone``, when
        given: the page shows site time)."""
        return cls(
            line=verdict.claim.line,
            unit_id=verdict.claim.unit_id,
            time=iso(verdict.claim.time),
            fault_type=event_type_name(verdict.claim.fault_type),
            verdict=verdict.verdict,  # type: ignore[arg-type]  # audit_claim gives only these
            reason=verdict.reason,
            cites=verdict.cites,
            evidence=render(verdict.reason, lang, zone=zone),
        )


def verdict_json(verdict: Verdict, lang: str = "en") -> dict[str, object]:
    """One audited claim as JSON (`VerdictView`), its reason as code and parameters and
    as ``evidence`` rendered in ``lang``."""
    return dict(to_json(VerdictView.of(verdict, lang)))


@response("ClaimsAudit")
@dataclass(frozen=True)
class ClaimsAuditView:
    """POST /api/reports/claims: every claim of the caller's units, and the bad rows."""

    lang: str = out("language of the evidence: zh or en")
    time_zone: str = out("the site's time zone, for times without a UTC offset")
    claims: tuple[VerdictView, ...] = out("in file order")
    problems: tuple[ClaimProblem, ...] = out("rows that could not be read, by line")
