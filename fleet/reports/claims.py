"""Repair-claim audit: does the recorded data support a contractor's claimed faults?

Input CSV (header required, extra columns ignored): ``unit_id`` (or
``registration_code``), ``time`` (ISO 8601; without a zone it is UTC) and ``fault_type``
(a taxonomy name such as DOOR_CLOSE_FAILURE). For each claim, within ``window`` either
side of its time:

- **supported**: the unit has an event of the claimed type (its onset or its record time
  in the window); the evidence names it;
- **contradicts**: the unit was watched the whole window — records kept arriving with no
  gap over ``max_gap`` (agents send a state sample at least every few seconds and a
  heartbeat every 10 s), and its controller link was not lost — and no fault of any kind
  was recorded: the lift was watched and normal then;
- **cannot_tell**: the unit was not watched then (not known to the fleet, no agent, a gap
  in its records, its controller link lost), or a different fault was recorded (the
  evidence says which): the data neither confirms nor refutes the claim.

A bad row (missing unit, unreadable time, unknown fault type) is reported with its line
and reason and audited as nothing; the other rows still are.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fleet.reports.fault_rate import NOT_FAULTS
from fleet.store.base import Store
from fleet.views import event_type_name, event_type_number, iso, phase_name
from protos.liftwatch.v1 import records_pb2

VERDICTS = ("supported", "contradicts", "cannot_tell")


class ClaimsError(Exception):
    """The claims file as a whole is unusable (missing, unreadable, wrong header)."""


@dataclass(frozen=True, slots=True)
class Claim:
    """One claimed fault, from ``line`` of the file."""

    line: int
    unit_id: str
    time: dt.datetime
    fault_type: int


@dataclass(frozen=True, slots=True)
class ClaimProblem:
    """A row that could not be read: its line and why."""

    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the data says about one claim, and why."""

    claim: Claim
    verdict: str
    evidence: str


def _time(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def parse_claims(lines: Iterable[str], source: str) -> tuple[list[Claim], list[ClaimProblem]]:
    """The claims of CSV text, and the rows that could not be read."""
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
            problems.append(ClaimProblem(start, f"expected {len(names)} fields, found {len(row)}"))
            continue
        unit_id = row[at[unit_column]].strip()
        if not unit_id:
            problems.append(ClaimProblem(start, f"{unit_column} is empty"))
            continue
        try:
            moment = _time(row[at["time"]])
        except ValueError:
            problems.append(ClaimProblem(start, f"time: cannot read {row[at['time']]!r}"))
            continue
        try:
            fault = event_type_number(row[at["fault_type"]])
        except ValueError as exc:
            problems.append(ClaimProblem(start, f"fault_type: {exc}"))
            continue
        claims.append(Claim(start, unit_id, moment, fault))
    return claims, problems


def read_claims(path: Path) -> tuple[list[Claim], list[ClaimProblem]]:
    """`parse_claims` of the file at ``path``; raises `ClaimsError` when unreadable."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            return parse_claims(f, str(path))
    except FileNotFoundError:
        raise ClaimsError(f"claims {path}: file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ClaimsError(f"claims {path}: cannot read: {exc}") from None


def audit_claim(store: Store, claim: Claim, window: dt.timedelta, max_gap: dt.timedelta) -> Verdict:
    """Judge one claim against the store (see the module docstring)."""
    start, end = claim.time - window, claim.time + window
    events = store.unit_events(claim.unit_id, start, end)
    claimed = event_type_name(claim.fault_type)
    for event in events:
        if event.type == claim.fault_type:
            return Verdict(
                claim,
                "supported",
                f"{claimed} {phase_name(event.phase)} event {event.event_id} onset "
                f"{iso(event.onset)} recorded {iso(event.time)}",
            )
    unit = store.get_unit(claim.unit_id)
    if unit is None:
        return Verdict(claim, "cannot_tell", "the unit is not known to the fleet")
    if not unit.agent_id:
        return Verdict(claim, "cannot_tell", "no agent has ever watched the unit")
    lost = [e for e in events if e.type == records_pb2.EVENT_TYPE_CONTROLLER_LINK_LOST]
    if lost:
        return Verdict(
            claim, "cannot_tell", f"controller link lost in the window ({iso(lost[0].onset)})"
        )
    times = store.record_times(claim.unit_id, unit.agent_id, start - max_gap, end + max_gap)
    marks = [start, *[t for t in times if start < t < end], end]
    if not times or times[0] > start or times[-1] < end:
        return Verdict(
            claim,
            "cannot_tell",
            f"not watched: records of the unit do not cover {iso(start)} to {iso(end)}",
        )
    gaps = [(b - a, a) for a, b in itertools.pairwise(marks)]
    widest, since = max(gaps)
    if widest > max_gap:
        return Verdict(
            claim,
            "cannot_tell",
            f"not watched: no record for {widest.total_seconds():.0f} s from {iso(since)}",
        )
    others = [e for e in events if e.type not in NOT_FAULTS and e.phase == records_pb2.PHASE_RAISED]
    if others:
        found = ", ".join(sorted({event_type_name(e.type) for e in others}))
        return Verdict(claim, "cannot_tell", f"no {claimed}, but {found} recorded in the window")
    return Verdict(
        claim,
        "contradicts",
        f"watched from {iso(start)} to {iso(end)} ({len(times)} records, longest gap "
        f"{widest.total_seconds():.0f} s) and no fault recorded",
    )


def verdict_json(verdict: Verdict) -> dict[str, object]:
    """One audited claim as JSON."""
    return {
        "line": verdict.claim.line,
        "unit_id": verdict.claim.unit_id,
        "time": iso(verdict.claim.time),
        "fault_type": event_type_name(verdict.claim.fault_type),
        "verdict": verdict.verdict,
        "evidence": verdict.evidence,
    }
