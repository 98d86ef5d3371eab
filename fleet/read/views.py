"""Stored rows as the CLI and the JSON API show them: JSON-ready dicts and text tables."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from fleet.auth.roles import Role
from fleet.read.shape import iso as iso  # re-exported: where the views' callers find it
from fleet.read.shape import out, response, to_json, view_from
from fleet.store.base import CoverageChange, EventRow, FirmwareChange, UnitRow, UserRow
from fleet.taxonomy import EventClass, codes_of, event_class
from fleet.units.coverage import Coverage, UnitStatus
from fleet.units.firmware import Inventory, VersionCount
from protos.liftwatch.v1 import records_pb2


def event_type_name(number: int) -> str:
    """``ENTRAPMENT`` for EVENT_TYPE_ENTRAPMENT; the number itself when unknown."""
    try:
        return records_pb2.EventType.Name(number).removeprefix("EVENT_TYPE_")
    except ValueError:
        return str(number)


def phase_name(number: int) -> str:
    """``RAISED`` / ``CLEARED`` for the Phase enum; the number itself when unknown."""
    try:
        return records_pb2.Phase.Name(number).removeprefix("PHASE_")
    except ValueError:
        return str(number)


def event_type_number(name: str) -> int:
    """The EventType number of ``name`` (``entrapment`` or ``EVENT_TYPE_ENTRAPMENT``).

    Raises ValueError naming the known types when ``name`` is none of them.
    """
    key = name.strip().upper().removeprefix("EVENT_TYPE_")
    try:
        return int(records_pb2.EventType.Value(f"EVENT_TYPE_{key}"))
    except ValueError:
        known = ", ".join(
            n.removeprefix("EVENT_TYPE_")
            for n, number in records_pb2.EventType.items()
            if number != records_pb2.EVENT_TYPE_UNSPECIFIED
        )
        raise ValueError(f"unknown event type {name!r}; known: {known}") from None


@response("Error")
@dataclass(frozen=True)
class ErrorReply:
    """What every API error answers (with its status code)."""

    error: str = out("what is wrong, naming the parameter or field")


@response("Unit")
@dataclass(frozen=True)
class UnitView:
    """One unit as ``units --json`` and /api/units show it."""

    unit_id: str = out()
    status: UnitStatus = out("live coverage status")
    registered: bool = out("in the district register")
    firmware: str = out("controller firmware version")
    model: str = out("controller model (reported, else registered)")
    agent_id: str = out()
    agent_version: str = out()
    last_seen: str | None = out(fmt="date-time")
    building: str = out()
    address: str = out()
    street: str = out("sub-district (街道) as registered")
    contractor: str = out("maintenance contractor as registered")

    @classmethod
    def of(cls, unit: UnitRow, status: UnitStatus) -> UnitView:
        """``unit`` with its coverage ``status``."""
        return cls(
            unit_id=unit.unit_id,
            status=status,
            registered=unit.registered,
            firmware=unit.controller.firmware,
            model=unit.model,
            agent_id=unit.agent_id,
            agent_version=unit.agent_version,
            last_seen=iso(unit.last_seen),
            building=unit.register.building,
            address=unit.register.address,
            street=unit.register.street,
            contractor=unit.register.contractor,
        )


def unit_json(unit: UnitRow, status: UnitStatus) -> dict[str, object]:
    """The ``units --json`` object of one unit (`UnitView`)."""
    return dict(to_json(UnitView.of(unit, status)))


@response("UnitPage")
@dataclass(frozen=True)
class UnitPageView:
    """One page of /api/units."""

    units: tuple[UnitView, ...] = out()
    next_page_token: str = out("'' on the last page")
    total: int = out("units matching the filters, over every page", minimum=0)


@response("User")
@dataclass(frozen=True)
class UserView:
    """An account as ``users list --json`` and /api/users show it."""

    # Deliberately not the password hash: a listing may end up in a ticket or a chat.
    username: str = out()
    role: Role = out()
    contractor: str = out("the contractor whose units it sees ('' unless a contractor)")
    display_name: str = out()
    created: str = out(fmt="date-time")

    @classmethod
    def of(cls, user: UserRow) -> UserView:
        """The view of a stored account."""
        return cls(user.username, user.role, user.contractor, user.display_name, iso(user.created))


@response("Users")
@dataclass(frozen=True)
class UsersView:
    """/api/users and ``users list --json``: every account."""

    users: tuple[UserView, ...] = out()


def user_json(user: UserRow) -> dict[str, object]:
    """An account as ``users list --json`` and /api/users show it (`UserView`)."""
    return dict(to_json(UserView.of(user)))


def users_json(users: Sequence[UserRow]) -> dict[str, object]:
    """Every account, as ``users list --json`` and /api/users show them (`UsersView`)."""
    return dict(to_json(UsersView(tuple(UserView.of(u) for u in users))))


@dataclass(frozen=True)
class CoverageCounts:
    """The district coverage counts (`fleet.units.coverage.Coverage`)."""

    registered: int = out(minimum=0)
    monitored: int = out(minimum=0)
    online: int = out(minimum=0)
    stale: int = out(minimum=0)
    offline: int = out(minimum=0)
    blind: int = out(minimum=0)
    never_seen: int = out(minimum=0)
    unregistered_reporting: int = out(minimum=0)

    @classmethod
    def of(cls, counts: Coverage) -> CoverageCounts:
        """The counts of ``counts``."""
        return view_from(cls, counts)


@response("CoverageGroup")
@dataclass(frozen=True)
class CoverageGroupView:
    """One group's coverage, name first."""

    name: str = out("the street, building or contractor")
    counts: CoverageCounts = out(flatten=True)


@response("Coverage")
@dataclass(frozen=True)
class CoverageView:
    """The ``coverage --json`` object and /api/coverage: groups only when asked for."""

    counts: CoverageCounts = out(flatten=True)
    groups: tuple[CoverageGroupView, ...] | None = out(omit_none=True)


def coverage_view(counts: Coverage, groups: dict[str, Coverage] | None) -> CoverageView:
    """The district's ``counts``, with each group's (name first) when ``groups`` is given."""
    return CoverageView(
        CoverageCounts.of(counts),
        None
        if groups is None
        else tuple(CoverageGroupView(name, CoverageCounts.of(c)) for name, c in groups.items()),
    )


@response("CoverageChange")
@dataclass(frozen=True)
class CoverageChangeView:
    """One coverage transition."""

    unit_id: str = out()
    at: str = out()
    old_status: str = out()
    new_status: str = out()
    cause: Literal["hello", "record", "heartbeat", "sweep"] = out("what the fleet observed")

    @classmethod
    def of(cls, change: CoverageChange) -> CoverageChangeView:
        """The view of a stored transition."""
        return view_from(cls, change)  # the store writes only the four causes


@response("CoverageHistory")
@dataclass(frozen=True)
class CoverageHistoryView:
    """/api/coverage/history and ``coverage --history --json``: oldest first."""

    history: tuple[CoverageChangeView, ...] = out()


@response("VersionCount")
@dataclass(frozen=True)
class VersionCountView:
    """One line of the firmware or agent version inventory."""

    model: str = out()
    version: str = out()
    units: int = out()


@response("Violation")
@dataclass(frozen=True)
class ViolationView:
    """One unit breaking the firmware policy."""

    unit_id: str = out()
    model: str = out()
    firmware: str = out()
    rule: Literal["below_minimum", "known_bad", "no_updates"] = out()
    reason: str = out()


@response("FirmwareChange")
@dataclass(frozen=True)
class FirmwareChangeView:
    """One change of a unit's firmware or agent version."""

    unit_id: str = out()
    at: str = out()
    agent_id: str = out()
    model: str = out()
    old_firmware: str = out()
    new_firmware: str = out()
    old_agent_version: str = out()
    new_agent_version: str = out()


@response("Firmware")
@dataclass(frozen=True)
class FirmwareView:
    """The ``firmware --json`` object and /api/firmware (violations only: no inventory)."""

    firmware: tuple[VersionCountView, ...] | None = out(omit_none=True)
    agent_versions: tuple[VersionCountView, ...] | None = out(omit_none=True)
    violations: tuple[ViolationView, ...] = out()
    history: tuple[FirmwareChangeView, ...] = out()


def _version_counts(counts: Sequence[VersionCount]) -> tuple[VersionCountView, ...]:
    return tuple(view_from(VersionCountView, c) for c in counts)


def inventory_json(
    inv: Inventory, history: Sequence[FirmwareChange] = (), *, violations_only: bool = False
) -> dict[str, object]:
    """The ``firmware --json`` object (violations only: just that list, and the history)."""
    view = FirmwareView(
        firmware=None if violations_only else _version_counts(inv.firmware),
        agent_versions=None if violations_only else _version_counts(inv.agent_versions),
        violations=tuple(view_from(ViolationView, v) for v in inv.violations),
        history=tuple(view_from(FirmwareChangeView, c) for c in history),
    )
    return dict(to_json(view))


def event_class_name(event_type: int) -> str | None:
    """The class of an event type as JSON and CSV name it (``lift_fault``, ...); None for
    a type this fleet does not know."""
    found = event_class(event_type)
    return found.value if found else None


# What an event's reason_code is, for the API's schema (the events list and the stream).
REASON_CODE_DOC = (
    "the reason as a stable code (agent/detect), rendered in the reader's language; "
    "'' from an older agent: show reason"
)


@dataclass(frozen=True)
class EventCodes:
    """What an event is, as every event listing shows it (`fleet.taxonomy.codes_of`)."""

    gb_code: int | None = out("GB/T 24476-2017 code; null where none")
    platform_codes: dict[str, int] = out('regional platform -> its code, e.g. {"chongqing": 93}')
    event_class: EventClass | None = out(
        "lift_fault counts in fault rates; null for a type this fleet does not know",
        key="class",
    )
    at_landing: bool | None = out("at onset: true at a landing, false between floors, null unknown")

    @classmethod
    def of(cls, event_type: int, gb_code: int | None, at_landing: bool | None) -> EventCodes:
        """The codes of an event of ``event_type`` (its own ``gb_code``, where it was)."""
        codes = codes_of(event_type, gb_code, at_landing)
        return cls(codes.gb_code, dict(codes.platform_codes), event_class(event_type), at_landing)


def event_codes_json(
    event_type: int, gb_code: int | None, at_landing: bool | None
) -> dict[str, object]:
    """What an event is, as every event listing shows it (`EventCodes`):
    ``gb_code`` (GB/T 24476, null where none, never 0), ``platform_codes`` (regional
    platform -> code, ``{}`` where none), ``class`` (lift_fault, usage, health, external,
    monitoring; null for a type this fleet does not know) and ``at_landing``."""
    return dict(to_json(EventCodes.of(event_type, gb_code, at_landing)))


@response("Event")
@dataclass(frozen=True)
class EventView:
    """One stored event, as ``events --json`` and /api/events show it."""

    unit_id: str = out()
    agent_id: str = out()
    seq: int = out()
    type: str = out("event type, e.g. ENTRAPMENT")
    phase: str = out("RAISED or CLEARED")
    event_id: str = out()
    onset: str | None = out()
    time: str | None = out()
    floor: int | None = out()
    reason: str = out("the agent's English sentence; the fallback for reason_code")
    committed: str | None = out("the fleet's clock when it committed the event")
    codes: EventCodes = out(flatten=True)
    reason_code: str = out(REASON_CODE_DOC)
    reason_params: dict[str, str] = out('the reason\'s parameters, e.g. {"speed": "0.42"}')

    @classmethod
    def of(cls, event: EventRow) -> EventView:
        """The view of stored ``event``."""
        return cls(
            unit_id=event.unit_id,
            agent_id=event.agent_id,
            seq=event.seq,
            type=event_type_name(event.type),
            phase=phase_name(event.phase),
            event_id=event.event_id,
            onset=iso(event.onset),
            time=iso(event.time),
            floor=event.floor,
            reason=event.reason,
            committed=iso(event.committed),
            codes=EventCodes.of(event.type, event.gb_code, event.at_landing),
            reason_code=event.reason_code,
            reason_params=dict(event.reason_params),
        )


def event_json(event: EventRow) -> dict[str, object]:
    """The ``events --json`` object of one event (`EventView`)."""
    return dict(to_json(EventView.of(event)))


@response("Events")
@dataclass(frozen=True)
class EventsView:
    """/api/events and ``events --json``: the newest N, oldest first."""

    events: tuple[EventView, ...] = out()


# The columns of the events table (`liftwatch-fleet events`) and of the events CSV.
EVENT_TABLE_COLUMNS = (
    "time",
    "unit_id",
    "type",
    "class",
    "gb_code",
    "platform_codes",
    "phase",
    "floor",
    "at_landing",
    "onset",
    "event_id",
    "reason",
)


def event_cells(event: EventRow) -> list[object]:
    """One event as a row of `EVENT_TABLE_COLUMNS`: platform codes as ``chongqing:93``
    (``;`` between platforms), None where a value is missing."""
    fields = event_json(event)
    codes = codes_of(event.type, event.gb_code, event.at_landing).platform_codes
    fields["platform_codes"] = ";".join(f"{k}:{v}" for k, v in sorted(codes.items())) or None
    return [fields[c] for c in EVENT_TABLE_COLUMNS]


# A time as `iso` writes it (UTC, "Z"): what `table` shows in the site's time zone.
_UTC_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z")


def display_width(text: str) -> int:
    """The columns ``text`` takes in a terminal: two for each wide or full-width character
    (Chinese), none for a combining mark, one for the rest."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in text
    )


def _cell(value: object, zone: zoneinfo.ZoneInfo | None) -> str:
    if value is None or value == "":
        return "-"
    text = str(value)
    if zone is not None and _UTC_ISO.fullmatch(text):
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(zone)
        return when.isoformat(timespec="seconds")
    return text


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, time_zone: str = "") -> str:
    """Left-aligned columns separated by two spaces, a header line first, aligned by
    `display_width` (Chinese text takes two columns a character). With ``time_zone`` (an
    IANA name: the site's, as the dashboard shows), UTC times are shown in that zone with
    their offset ("2026-03-01T16:00:00+08:00", one word for scripts); --json keeps UTC."""
    zone = zoneinfo.ZoneInfo(time_zone) if time_zone else None
    cells = [[str(h) for h in headers]] + [[_cell(v, zone) for v in row] for row in rows]
    widths = [max(display_width(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(
            cell + " " * (width - display_width(cell))
            for cell, width in zip(row, widths, strict=True)
        ).rstrip()
        for row in cells
    )
