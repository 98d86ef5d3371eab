"""The maintenance plan by need (issue 17, item 4): each unit's next due date, and why.

The policy is `fleet.reports.plan_config.PlanConfig` (``[maintenance.plan]``). For a unit:

1. **The anchor**: the end of its last *supported* visit (a maintenance record the
   controller's own marks confirm, `fleet.store.maintenance`). Without one, the last
   maintenance record or watched visit the fleet knows, and the reason says that it is not
   verified. Without either, the unit is due today ("no maintenance known").
2. **The interval**: TSG T5002's 15 days (``interval_days``). A unit in the on-demand
   programme, younger than ``max_age_years`` and with neither a fault nor a door trend
   since the anchor, stretches it: at the rate the unit has been used since the anchor
   (trips, door cycles and run hours from its Counters records), to the day the first of
   the three limits would be reached, at most ``on_demand_max_days`` and never below
   ``interval_days``. No counters since the anchor: no stretch (usage unknown).
3. **Health shortens it at once**: a door opening or closing time ``door_trend_percent``
   above its baseline (the agent's Counters ``door_*_trend``) cuts the interval to
   ``trend_interval_days``; a lift fault (`fleet.taxonomy.is_lift_fault`, as the
   fault-rate report counts) since the anchor makes the unit due ``fault_due_days`` after
   the first one.

Every entry carries its reasons as codes with parameters (`Reason`), rendered in the
reader's language by `why` ("due in 9 days: 4100 trips since the last verified visit
(limit 6000); door closing time up 12 % on its baseline").

Inputs are read per unit (`plan_inputs`): the anchor (two or three indexed reads), the
Counters records at the anchor and the newest, and the unit's events since the anchor.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal, Protocol, TypeVar

from fleet.read.maintenance import last_supported_visit
from fleet.read.shape import out, response, to_json
from fleet.reports.claims import Reason, render
from fleet.reports.plan_config import PlanConfig
from fleet.store.base import UnitQuery, UnitRow
from fleet.store.sql import SqlStore
from fleet.taxonomy import is_lift_fault
from protos.liftwatch.v1 import records_pb2

_USAGE = ("trips", "door_cycles", "run_hours")
T = TypeVar("T")

TEMPLATES: Mapping[str, Mapping[str, str]] = {
    "due_in": {"en": "due in {days} days", "zh": "{days} 天后到期"},
    "due_today": {"en": "due today", "zh": "今天到期"},
    "overdue": {"en": "overdue by {days} days", "zh": "已逾期 {days} 天"},
    "since_supported": {
        "en": "counted from the last verified visit ({date})",
        "zh": "自上次经核实的维保（{date}）起算",
    },
    "since_unverified": {
        "en": "no verified visit: counted from the last {source} the fleet knows ({date}), "
        "not verified",
        "zh": "没有经核实的维保：自平台所知最近一次{source}（{date}）起算，未经核实",
    },
    "no_maintenance": {
        "en": "no maintenance visit or record known",
        "zh": "平台没有任何维保记录或维保到场",
    },
    "standard": {
        "en": "TSG T5002 interval of {days} days",
        "zh": "按 TSG T5002 每 {days} 天维保一次",
    },
    "stretched": {
        "en": "on-demand programme: interval {days} days (at most {max})",
        "zh": "按需维保：间隔 {days} 天（最长 {max} 天）",
    },
    "trips": {
        "en": "{used} trips since the last {which} visit (limit {limit})",
        "zh": "自上次{which}维保以来运行 {used} 次（上限 {limit}）",
    },
    "door_cycles": {
        "en": "{used} door cycles since the last {which} visit (limit {limit})",
        "zh": "自上次{which}维保以来开关门 {used} 次（上限 {limit}）",
    },
    "run_hours": {
        "en": "{used} run hours since the last {which} visit (limit {limit})",
        "zh": "自上次{which}维保以来运行 {used} 小时（上限 {limit}）",
    },
    "usage_unknown": {
        "en": "no counters since the visit: usage unknown, not stretched",
        "zh": "维保后没有计数数据：使用量未知，不延长",
    },
    "age": {
        "en": "aged {years} years (limit {limit}): not stretched",
        "zh": "梯龄 {years} 年（上限 {limit} 年）：不延长",
    },
    "age_unknown": {
        "en": "install date unknown: not stretched",
        "zh": "安装日期未知：不延长",
    },
    "door_trend": {
        "en": "door {side} time up {percent} % on its baseline: interval cut to {days} days",
        "zh": "{side}时间比基线长 {percent}%：间隔缩短为 {days} 天",
    },
    "faults": {
        "en": "{count} lift fault(s) since the visit, the first on {date}: due {days} days "
        "after it",
        "zh": "维保后发生 {count} 次电梯故障，首次在 {date}：其后 {days} 天内到期",
    },
}
# Words inside a template that depend on the language (parameter -> value -> zh).
_ZH_WORDS = {
    "which": {"verified": "经核实的", "unverified": "未经核实的"},
    "source": {"record": "维保记录", "visit": "维保到场"},
    "side": {"opening": "开门", "closing": "关门"},
}


@dataclass(frozen=True, slots=True)
class Anchor:
    """Where a unit's interval counts from: a supported visit, else the newest record or
    visit the fleet knows (``source`` "record" or "visit"; ``verified`` False)."""

    at: dt.datetime
    verified: bool
    source: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Counter climbs since the anchor and the newest door-time trends."""

    trips: int
    door_cycles: int
    run_hours: int
    door_open_trend: float | None
    door_close_trend: float | None


@dataclass(frozen=True, slots=True)
class UnitInputs:
    """What the plan knows of one unit."""

    unit_id: str
    contractor: str
    install_date: dt.date | None
    anchor: Anchor | None
    usage: Usage | None
    faults: tuple[dt.datetime, ...]


@dataclass(frozen=True, slots=True)
class PlanEntry:
    """One unit's next due date, how far off it is, and the reasons (in order)."""

    unit_id: str
    contractor: str
    due: dt.date
    days_left: int
    on_demand: bool
    interval_days: int
    anchor: Anchor | None
    reasons: tuple[Reason, ...]

    @property
    def overdue(self) -> bool:
        """Whether the due date has passed."""
        return self.days_left < 0


def plan_unit(inputs: UnitInputs, policy: PlanConfig, today: dt.date) -> PlanEntry:
    """The due date of one unit under ``policy`` as of ``today`` (module docstring)."""
    on_demand = policy.on_demand(inputs.unit_id, inputs.contractor)
    anchor = inputs.anchor
    if anchor is None:
        return PlanEntry(
            inputs.unit_id, inputs.contractor, today, 0, on_demand, policy.interval_days,
            None, (Reason("no_maintenance"),),
        )  # fmt: skip
    since = anchor.at.date()
    reasons = [
        Reason("since_supported", {"date": since.isoformat()})
        if anchor.verified
        else Reason("since_unverified", {"source": anchor.source, "date": since.isoformat()})
    ]
    which = "verified" if anchor.verified else "unverified"
    interval = policy.interval_days
    trend = _door_trend(inputs.usage, policy)
    blocked = _age_block(inputs.install_date, policy, today)
    if on_demand and blocked is None and not inputs.faults and trend is None:
        if inputs.usage is None:
            reasons.append(Reason("usage_unknown"))
        else:
            interval, binding = _stretch(inputs.usage, max((today - since).days, 1), policy)
            reasons.append(
                Reason("stretched", {"days": interval, "max": policy.on_demand_max_days})
            )
            used = getattr(inputs.usage, binding)
            limit = getattr(policy, _LIMIT[binding])
            reasons.append(Reason(binding, {"used": used, "limit": limit, "which": which}))
    else:
        reasons.append(Reason("standard", {"days": interval}))
        if on_demand and blocked is not None:
            reasons.append(blocked)
        if inputs.usage is not None:
            reasons.append(
                Reason(
                    "trips",
                    {"used": inputs.usage.trips, "limit": policy.trip_limit, "which": which},
                )
            )
    due = since + dt.timedelta(days=interval)
    if trend is not None:
        side, percent = trend
        interval = min(interval, policy.trend_interval_days)
        due = since + dt.timedelta(days=interval)
        reasons.append(Reason("door_trend", {"side": side, "percent": percent, "days": interval}))
    if inputs.faults:
        first = min(inputs.faults).date()
        due = min(due, first + dt.timedelta(days=policy.fault_due_days))
        reasons.append(
            Reason(
                "faults",
                {
                    "count": len(inputs.faults),
                    "date": first.isoformat(),
                    "days": policy.fault_due_days,
                },
            )
        )
    return PlanEntry(
        inputs.unit_id, inputs.contractor, due, (due - today).days, on_demand, interval,
        anchor, tuple(reasons),
    )  # fmt: skip


_LIMIT = {"trips": "trip_limit", "door_cycles": "door_cycle_limit", "run_hours": "run_hour_limit"}


def _stretch(usage: Usage, elapsed_days: int, policy: PlanConfig) -> tuple[int, str]:
    """The stretched interval and the usage measure that bounds it."""
    best, binding = float(policy.on_demand_max_days), "trips"
    for measure in _USAGE:
        used = getattr(usage, measure)
        limit = getattr(policy, _LIMIT[measure])
        # At the unit's own rate since the anchor, the day the limit would be reached.
        reach = math.inf if used <= 0 else elapsed_days * limit / used
        if reach < best:
            best, binding = reach, measure
    days = max(policy.interval_days, min(policy.on_demand_max_days, math.floor(best)))
    return days, binding


def _door_trend(usage: Usage | None, policy: PlanConfig) -> tuple[str, float] | None:
    """The door side whose time rose most over its baseline, past the policy's limit."""
    if usage is None:
        return None
    worst: tuple[str, float] | None = None
    for side, trend in (("opening", usage.door_open_trend), ("closing", usage.door_close_trend)):
        if trend is None:
            continue
        percent = round((trend - 1.0) * 100, 1)
        if percent >= policy.door_trend_percent and (worst is None or percent > worst[1]):
            worst = (side, percent)
    return worst


def _age_block(install: dt.date | None, policy: PlanConfig, today: dt.date) -> Reason | None:
    if install is None:
        return Reason("age_unknown")
    years = (today - install).days / 365.25
    if years >= policy.max_age_years:
        return Reason("age", {"years": math.floor(years), "limit": f"{policy.max_age_years:g}"})
    return None


def why(entry: PlanEntry, lang: str) -> str:
    """The entry's due date and reasons as one sentence in ``lang`` ("zh" or "en")."""
    if entry.days_left > 0:
        lead = Reason("due_in", {"days": entry.days_left})
    elif entry.days_left == 0:
        lead = Reason("due_today")
    else:
        lead = Reason("overdue", {"days": -entry.days_left})
    parts = [_render(r, lang) for r in entry.reasons]
    separator = "；" if lang == "zh" else "; "
    colon = "：" if lang == "zh" else ": "
    return _render(lead, lang) + colon + separator.join(parts)


def _render(reason: Reason, lang: str) -> str:
    if lang == "zh":
        params = {
            k: _ZH_WORDS[k].get(str(v), v) if k in _ZH_WORDS else v
            for k, v in reason.params.items()
        }
        reason = Reason(reason.code, params)
    return render(reason, lang, TEMPLATES)


# -- reading the inputs ---------------------------------------------------------------


def anchor_of(store: SqlStore, unit_id: str) -> Anchor | None:
    """Where ``unit_id``'s interval counts from (see `Anchor`), from the maintenance
    records and watched visits of `fleet.store.maintenance`."""
    visit = last_supported_visit(store, unit_id)
    if visit is not None:
        return Anchor(_time(visit.end_us or visit.start_us), True, "visit")
    found: list[Anchor] = []
    for record in store.maintenance_records(unit_id=unit_id, limit=1):
        found.append(Anchor(_time(record.end_us), False, "record"))
    for visit in store.visits(unit_id=unit_id, limit=1):
        found.append(Anchor(_time(visit.end_us or visit.start_us), False, "visit"))
    return max(found, key=lambda a: a.at) if found else None


def usage_since(store: SqlStore, unit_id: str, since: dt.datetime) -> Usage | None:
    """Counter climbs from the Counters record at ``since`` to the newest one, and the
    newest door trends; None when the unit sent no counters after ``since``."""
    newest = store.health_records(unit_id, "counters", 1)
    start = store.counters_near(unit_id, since)
    if not newest or start is None or newest[-1][0] <= since:
        return None
    first = _counters(start[1])
    last = _counters(newest[-1][1])

    def climb(name: str) -> int:
        # A counter that went backwards (a replaced controller) counts from zero.
        before, after = int(getattr(first, name)), int(getattr(last, name))
        return after - before if after >= before else after

    return Usage(
        trips=climb("trips"),
        door_cycles=climb("door_cycles"),
        run_hours=climb("run_hours"),
        door_open_trend=last.door_open_trend if last.HasField("door_open_trend") else None,
        door_close_trend=last.door_close_trend if last.HasField("door_close_trend") else None,
    )


class Reader(Protocol):
    """Runs one read against the store and returns its result: the store itself
    (``lambda fn: fn(store)``), or a hop to the store's thread per read
    (`fleet.store.worker.StoreWorker.call_blocking`), so that a plan over thousands of
    units never holds the store thread (ingest, alarms) for more than one read."""

    def __call__(self, fn: Callable[[SqlStore], T]) -> T:
        """``fn(store)``, wherever the store lives."""
        ...


def plan_inputs(
    read: Reader, units: Iterable[UnitRow], now: dt.datetime, lookback_days: int
) -> list[UnitInputs]:
    """The plan's inputs for ``units``, one read per unit. Faults are read for the last
    ``lookback_days`` (a unit whose anchor is older is overdue whatever its faults)."""
    window_start = now - dt.timedelta(days=lookback_days)
    faults: dict[str, list[dt.datetime]] = {}
    for event in read(lambda s: s.fault_events(window_start, now)):
        if is_lift_fault(event.type):
            faults.setdefault(event.unit_id, []).append(event.onset or event.time)

    def unit_reads(s: SqlStore, unit_id: str) -> tuple[Anchor | None, Usage | None]:
        anchor = anchor_of(s, unit_id)
        return anchor, None if anchor is None else usage_since(s, unit_id, anchor.at)

    found = []
    for unit in units:
        anchor, usage = read(partial(unit_reads, unit_id=unit.unit_id))
        since = anchor.at if anchor is not None else now
        found.append(
            UnitInputs(
                unit_id=unit.unit_id,
                contractor=unit.register.contractor,
                install_date=unit.register.install_date,
                anchor=anchor,
                usage=usage,
                faults=tuple(t for t in faults.get(unit.unit_id, ()) if t >= since),
            )
        )
    return found


def plan_of(
    read: Reader, policy: PlanConfig, now: dt.datetime, contractor: str = ""
) -> list[PlanEntry]:
    """The plan of every registered unit (of ``contractor`` unless ""), soonest due first,
    reading through ``read`` (see `Reader`)."""
    listed = read(lambda s: s.list_units(UnitQuery(contractor=contractor)))
    units = [u for u in listed if u.registered]
    lookback = max(policy.on_demand_max_days, policy.interval_days) + 31
    entries = [plan_unit(i, policy, now.date()) for i in plan_inputs(read, units, now, lookback)]
    entries.sort(key=lambda e: (e.due, e.unit_id))
    return entries


def maintenance_plan(
    store: SqlStore, policy: PlanConfig, now: dt.datetime, contractor: str = ""
) -> list[PlanEntry]:
    """The plan of every registered unit (of ``contractor`` unless ""), soonest due first,
    read from ``store`` directly (the CLI; see `plan_of`)."""
    return plan_of(lambda fn: fn(store), policy, now, contractor)


def _counters(payload: bytes) -> records_pb2.Counters:
    record = records_pb2.Record()
    record.ParseFromString(payload)
    return record.counters


def _time(us: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)


# -- outputs --------------------------------------------------------------------------


@response("PlanAnchor")
@dataclass(frozen=True, slots=True)
class AnchorView:
    """Where a unit's interval counts from, as `Anchor` says it."""

    at: str = out("the visit's or record's end (UTC, ISO 8601)", fmt="date-time")
    verified: bool = out("a supported visit (the controller's own marks confirm it)")
    source: Literal["visit", "record"] = out("a watched visit or a maintenance record")

    @classmethod
    def of(cls, anchor: Anchor) -> AnchorView:
        """``anchor`` as the plan's JSON writes it (its time to the microsecond)."""
        at = anchor.at.isoformat().replace("+00:00", "Z")
        return cls(at, anchor.verified, anchor.source)  # type: ignore[arg-type]


@response("PlanUnit")
@dataclass(frozen=True, slots=True)
class PlanUnitView:
    """One unit of the plan: its due date, how far off, and why (in the reader's language
    and as codes with parameters)."""

    unit_id: str = out()
    due: dt.date = out("the next maintenance due date")
    why: str = out("the due date and its reasons in lang")
    days_left: int = out("negative: overdue")
    overdue: bool = out()
    contractor: str = out()
    on_demand: bool = out("in the on-demand programme ([maintenance.plan])")
    interval_days: int = out()
    anchor: AnchorView | None = out("null: no maintenance known")
    reasons: tuple[Reason, ...] = out("in order; codes of fleet.reports.plan.TEMPLATES")

    @classmethod
    def of(cls, entry: PlanEntry, lang: str) -> PlanUnitView:
        """``entry`` with its reasons rendered in ``lang``."""
        return cls(
            unit_id=entry.unit_id,
            due=entry.due,
            why=why(entry, lang),
            days_left=entry.days_left,
            overdue=entry.overdue,
            contractor=entry.contractor,
            on_demand=entry.on_demand,
            interval_days=entry.interval_days,
            anchor=None if entry.anchor is None else AnchorView.of(entry.anchor),
            reasons=entry.reasons,
        )


@response("MaintenancePlan")
@dataclass(frozen=True, slots=True)
class PlanView:
    """``GET /api/maintenance/plan``: the plan, soonest due first."""

    lang: str = out("the language of each unit's why")
    due_soon_days: int = out("[maintenance.plan] due_soon_days")
    units: tuple[PlanUnitView, ...] = out()
    due_this_week: tuple[str, ...] = out("the units due within due_soon_days, overdue included")


def entry_json(entry: PlanEntry, lang: str) -> dict[str, object]:
    """One unit of ``maintenance plan --json`` (and the API): `PlanUnitView` as JSON."""
    return dict(to_json(PlanUnitView.of(entry, lang)))


def due_this_week(entries: Sequence[PlanEntry], policy: PlanConfig) -> dict[str, list[PlanEntry]]:
    """Each contractor's units due within ``due_soon_days`` (overdue ones included)."""
    by_contractor: dict[str, list[PlanEntry]] = {}
    for entry in entries:
        if entry.days_left < policy.due_soon_days:
            by_contractor.setdefault(entry.contractor, []).append(entry)
    return dict(sorted(by_contractor.items()))


# The CSV's (and the CLI table's) columns: keys of the unit's definition (test_shape).
PLAN_CSV_COLUMNS = ("unit_id", "contractor", "due", "days_left", "on_demand", "why")


def plan_rows(entries: Sequence[PlanEntry], lang: str) -> list[list[object]]:
    """The plan as rows of `PLAN_CSV_COLUMNS`, each cell its `PlanUnitView` JSON value."""
    shown = (to_json(PlanUnitView.of(e, lang)) for e in entries)
    return [[row[c] for c in PLAN_CSV_COLUMNS] for row in shown]


def plan_ics(entries: Sequence[PlanEntry], lang: str, now: dt.datetime) -> str:
    """The plan as an iCalendar file (RFC 5545): one all-day VEVENT per unit on its due
    date, its reasons as the description; CRLF line ends, long lines folded at 75 octets."""
    stamp = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    title = "维保到期" if lang == "zh" else "Maintenance due"
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//LiftWatch//maintenance plan//EN",
             "CALSCALE:GREGORIAN", "METHOD:PUBLISH"]  # fmt: skip
    for e in entries:
        lines += [
            "BEGIN:VEVENT",
            f"UID:{ics_text(e.unit_id)}-{e.due:%Y%m%d}@liftwatch",
            f"DTSTAMP:{stamp}",
            f"DTSTART;VALUE=DATE:{e.due:%Y%m%d}",
            f"DTEND;VALUE=DATE:{e.due + dt.timedelta(days=1):%Y%m%d}",
            f"SUMMARY:{ics_text(f'{title}: {e.unit_id}')}",
            f"DESCRIPTION:{ics_text(why(e, lang))}",
            *([f"CATEGORIES:{ics_text(e.contractor)}"] if e.contractor else []),
            "TRANSP:TRANSPARENT",
            "END:VEVENT",
        ]
    lines.append("END:VCALENDAR")
    return "".join(fold(line) + "\r\n" for line in lines)


def ics_text(value: str) -> str:
    """``value`` as an RFC 5545 TEXT value (3.3.11): backslash, semicolon and comma
    escaped, a line break as ``\\n``; other control characters dropped."""
    out = []
    for ch in value.replace("\r\n", "\n"):
        if ch in "\\;,":
            out.append("\\" + ch)
        elif ch in "\n\r":
            out.append("\\n")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            continue
        else:
            out.append(ch)
    return "".join(out)


def fold(line: str, limit: int = 75) -> str:
    """``line`` folded (RFC 5545 3.1): no physical line longer than ``limit`` octets of
    UTF-8, a continuation starting with one space; never inside a character."""
    parts: list[str] = []
    current, size = "", 0
    for ch in line:
        width = len(ch.encode())
        # Continuation lines carry a leading space, which counts against the limit.
        room = limit if not parts else limit - 1
        if size + width > room:
            parts.append(current)
            current, size = "", 0
        current += ch
        size += width
    parts.append(current)
    return "\r\n ".join(parts)
