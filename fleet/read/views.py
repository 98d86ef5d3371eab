"""Stored rows as the CLI and the JSON API show them: JSON-ready dicts and text tables."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from fleet.store.base import CoverageChange, EventRow, FirmwareChange, UnitRow, UserRow
from fleet.taxonomy import codes_of, event_class
from fleet.units.coverage import Coverage, UnitStatus
from fleet.units.firmware import Inventory, VersionCount, Violation
from protos.liftwatch.v1 import records_pb2


def iso(moment: dt.datetime | None) -> str | None:
    """``moment`` as ISO 8601 UTC with a ``Z`` (millisecond precision), None stays None."""
    if moment is None:
        return None
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


def unit_json(unit: UnitRow, status: UnitStatus) -> dict[str, object]:
    """The ``units --json`` object of one unit."""
    return {
        "unit_id": unit.unit_id,
        "status": status.value,
        "registered": unit.registered,
        "firmware": unit.controller.firmware,
        "model": unit.model,
        "agent_id": unit.agent_id,
        "agent_version": unit.agent_version,
        "last_seen": iso(unit.last_seen),
        "building": unit.register.building,
        "address": unit.register.address,
        "street": unit.register.street,
        "contractor": unit.register.contractor,
    }


def user_json(user: UserRow) -> dict[str, object]:
    """An account as ``users list --json`` and /api/users show it."""
    # Deliberately not the password hash: a listing may end up in a ticket or a chat.
    return {
        "username": user.username,
        "role": user.role.value,
        "contractor": user.contractor,
        "display_name": user.display_name,
        "created": iso(user.created),
    }


def coverage_json(counts: Coverage) -> dict[str, int]:
    """The ``coverage --json`` object."""
    return {
        "registered": counts.registered,
        "monitored": counts.monitored,
        "online": counts.online,
        "stale": counts.stale,
        "offline": counts.offline,
        "blind": counts.blind,
        "never_seen": counts.never_seen,
        "unregistered_reporting": counts.unregistered_reporting,
    }


def coverage_groups_json(groups: dict[str, Coverage]) -> list[dict[str, object]]:
    """Per-group coverage, as ``coverage --by ... --json`` lists it: name first."""
    return [{"name": name, **coverage_json(counts)} for name, counts in groups.items()]


def coverage_change_json(change: CoverageChange) -> dict[str, object]:
    """One coverage transition."""
    return {
        "unit_id": change.unit_id,
        "at": iso(change.at),
        "old_status": change.old_status,
        "new_status": change.new_status,
        "cause": change.cause,
    }


def version_count_json(count: VersionCount) -> dict[str, object]:
    """One line of the firmware or agent version inventory."""
    return {"model": count.model, "version": count.version, "units": count.units}


def violation_json(violation: Violation) -> dict[str, object]:
    """One unit breaking the firmware policy."""
    return {
        "unit_id": violation.unit_id,
        "model": violation.model,
        "firmware": violation.firmware,
        "rule": violation.rule,
        "reason": violation.reason,
    }


def firmware_change_json(change: FirmwareChange) -> dict[str, object]:
    """One change of a unit's firmware or agent version."""
    return {
        "unit_id": change.unit_id,
        "at": iso(change.at),
        "agent_id": change.agent_id,
        "model": change.model,
        "old_firmware": change.old_firmware,
        "new_firmware": change.new_firmware,
        "old_agent_version": change.old_agent_version,
        "new_agent_version": change.new_agent_version,
    }


def inventory_json(
    inv: Inventory, history: Sequence[FirmwareChange] = (), *, violations_only: bool = False
) -> dict[str, object]:
    """The ``firmware --json`` object (violations only: just that list, and the history)."""
    result: dict[str, object] = {}
    if not violations_only:
        result["firmware"] = [version_count_json(c) for c in inv.firmware]
        result["agent_versions"] = [version_count_json(c) for c in inv.agent_versions]
    result["violations"] = [violation_json(v) for v in inv.violations]
    result["history"] = [firmware_change_json(c) for c in history]
    return result


def event_class_name(event_type: int) -> str | None:
    """The class of an event type as JSON and CSV name it (``lift_fault``, ...); None for
    a type this fleet does not know."""
    found = event_class(event_type)
    return found.value if found else None


def event_codes_json(
    event_type: int, gb_code: int | None, at_landing: bool | None
) -> dict[str, object]:
    """What an event is, as every event listing shows it (`fleet.taxonomy.codes_of`):
    ``gb_code`` (GB/T 24476, null where none, never 0), ``platform_codes`` (regional
    platform -> code, ``{}`` where none), ``class`` (lift_fault, usage, health, external,
    monitoring; null for a type this fleet does not know) and ``at_landing``."""
    codes = codes_of(event_type, gb_code, at_landing)
    return {
        "gb_code": codes.gb_code,
        "platform_codes": dict(codes.platform_codes),
        "class": event_class_name(event_type),
        "at_landing": at_landing,
    }


def event_json(event: EventRow) -> dict[str, object]:
    """The ``events --json`` object of one event (its codes: `event_codes_json`)."""
    return {
        "unit_id": event.unit_id,
        "agent_id": event.agent_id,
        "seq": event.seq,
        "type": event_type_name(event.type),
        "phase": phase_name(event.phase),
        "event_id": event.event_id,
        "onset": iso(event.onset),
        "time": iso(event.time),
        "floor": event.floor,
        "reason": event.reason,
        "committed": iso(event.committed),
        **event_codes_json(event.type, event.gb_code, event.at_landing),
    }


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


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces, a header line first."""
    cells = [[str(h) for h in headers]] + [
        ["-" if v is None or v == "" else str(v) for v in row] for row in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )
