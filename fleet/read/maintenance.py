"""The read side of maintenance truth: visits, records with their verdicts, and each
contractor's share of each verdict, as response definitions (`fleet.read.shape`) that the
API and the CLI both print; every read takes the caller's `Scope`.

`last_supported_visit` and `verdict_shares` are what the plan by need and the district's
publication read (issue 17, items 4-5).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fleet.read.scope import Scope
from fleet.read.shape import out, response
from fleet.read.views import iso
from fleet.reports.claims import Reason, cannot_see
from fleet.reports.maintenance import RecordProblem, render_reason
from fleet.store.maintenance import RECORD_VERDICTS, RecordRow, VisitRow
from fleet.store.sql import SqlStore, from_us
from protos.liftwatch.v1 import records_pb2

Verdict = Literal["supported", "too_short", "contradicted", "cannot_tell"]


@response("MaintenanceVisit")
@dataclass(frozen=True, slots=True)
class VisitView:
    """One watched maintenance visit (an inspection or out-of-service session)."""

    id: int = out(minimum=1)
    unit_id: str = out()
    start: str = out("first car-state record in the session's mode")
    end: str | None = out("first record after it in another mode; null while it goes on")
    duration_s: float = out("seconds from start to end (so far, while it goes on)")
    watched_s: float = out("duration less the silences longer than the watch gap")
    mode: Literal["inspection", "stopped"] = out("inspection if any of it was")
    inspection_runs: int = out("runs started in inspection mode", minimum=0)
    landings_visited: int = out("distinct floors the car was at", minimum=0)
    door_cycles: int = out("times the doors reached fully open", minimum=0)

    @classmethod
    def of(cls, visit: VisitRow) -> VisitView:
        """The view of a stored visit."""
        assert visit.id is not None
        return cls(
            id=visit.id,
            unit_id=visit.unit_id,
            start=iso(from_us(visit.start_us)),
            end=None if visit.end_us is None else iso(from_us(visit.end_us)),
            duration_s=round(visit.duration_s, 1),
            watched_s=round(visit.watched_s, 1),
            mode=visit.mode,  # type: ignore[arg-type]  # the derivation writes only these
            inspection_runs=visit.inspection_runs,
            landings_visited=visit.landings_visited,
            door_cycles=visit.door_cycles,
        )


@response("MaintenanceVisits")
@dataclass(frozen=True, slots=True)
class VisitsView:
    """GET /api/maintenance/visits (and a unit's): the visits, newest first, and the units
    asked about whose profile cannot see the service mode (their visits are unknown,
    never "none")."""

    visits: tuple[VisitView, ...] = out()
    unknown_units: tuple[str, ...] = out("units whose visits cannot be seen")


@response("MaintenanceRecord")
@dataclass(frozen=True, slots=True)
class RecordView:
    """A contractor's maintenance record and the verdict the unit's data gives it."""

    id: int = out(minimum=1)
    unit_id: str = out()
    contractor: str = out()
    kind: Literal["half_monthly", "quarterly", "half_yearly", "annual"] = out(
        "TSG T5002 maintenance type"
    )
    start: str = out()
    end: str = out()
    workers: str = out()
    source: Literal["csv", "api"] = out()
    uploaded_by: str = out()
    uploaded: str = out()
    verdict: Verdict = out()
    reason: Reason = out()
    evidence: str = out("the reason as a sentence in the reader's language")
    visits: tuple[dict[str, Any], ...] = out("the visits the verdict rests on")
    watched: dict[str, Any] | None = out("the watched span of normal service", omit_none=True)
    visit_id: int | None = out("the visit the verdict cites")

    @classmethod
    def of(cls, record: RecordRow, lang: str) -> RecordView:
        """The view of a stored record, its reason rendered in ``lang``."""
        evidence: dict[str, Any] = json.loads(record.evidence or "{}")
        reason = Reason(record.verdict_reason or "unit_unknown", evidence.get("params", {}))
        return cls(
            id=record.id,
            unit_id=record.unit_id,
            contractor=record.contractor,
            kind=record.kind,  # type: ignore[arg-type]  # the import takes only these
            start=iso(from_us(record.start_us)),
            end=iso(from_us(record.end_us)),
            workers=record.workers,
            source=record.source,  # type: ignore[arg-type]
            uploaded_by=record.uploaded_by,
            uploaded=iso(from_us(record.uploaded_us)),
            verdict=record.verdict,  # type: ignore[arg-type]
            reason=reason,
            evidence=render_reason(reason, lang) if record.verdict_reason else "",
            visits=tuple(evidence.get("visits", ())),
            watched=evidence.get("watched"),
            visit_id=record.visit_id,
        )


@response("MaintenanceRecords")
@dataclass(frozen=True, slots=True)
class RecordsView:
    """GET /api/maintenance/records: records, newest first, with their verdicts."""

    lang: str = out("language of the evidence: zh or en")
    records: tuple[RecordView, ...] = out()


@response("MaintenanceImport")
@dataclass(frozen=True, slots=True)
class ImportView:
    """POST /api/maintenance/records: what the upload stored, and the rows refused."""

    stored: int = out("records newly stored (and judged)", minimum=0)
    duplicates: int = out("records stored already by an earlier upload", minimum=0)
    problems: tuple[RecordProblem, ...] = out("rows not taken, by line, with the reason")
    records: tuple[RecordView, ...] = out("the records stored, with their verdicts")


@response("MaintenanceVerdictShare")
@dataclass(frozen=True, slots=True)
class VerdictShare:
    """One contractor's records by verdict, and each verdict's share of them (percent)."""

    contractor: str = out()
    records: int = out(minimum=0)
    supported: int = out(minimum=0)
    too_short: int = out(minimum=0)
    contradicted: int = out(minimum=0)
    cannot_tell: int = out(minimum=0)
    supported_pct: float | None = out("null with no records")
    too_short_pct: float | None = out()
    contradicted_pct: float | None = out()
    cannot_tell_pct: float | None = out()


@response("MaintenanceVerdictShares")
@dataclass(frozen=True, slots=True)
class VerdictSharesView:
    """GET /api/maintenance/shares: the district's view, one row per contractor."""

    since: str | None = out("records whose window began from then; null: all")
    contractors: tuple[VerdictShare, ...] = out("most contradicted share first")


def visits_view(
    store: SqlStore,
    scope: Scope,
    *,
    unit_id: str = "",
    contractor: str = "",
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 200,
) -> VisitsView:
    """The visits of units the caller may see (see `VisitsView`); `OutOfScopeError` when
    a contractor asks for another's."""
    rows = store.visits(
        unit_id=unit_id,
        contractor=scope.listing(contractor),
        since=since,
        until=until,
        limit=limit,
    )
    unknown: list[str] = []
    if unit_id:
        unit = store.get_unit(unit_id)
        seen = unit is not None and scope.sees(unit.register.contractor) and unit.agent_id
        if seen and cannot_see(unit, records_pb2.EVENT_TYPE_MODE_CHANGE):  # type: ignore[arg-type]
            unknown.append(unit_id)
    return VisitsView(tuple(VisitView.of(v) for v in rows), tuple(unknown))


def records_view(
    store: SqlStore,
    scope: Scope,
    lang: str,
    *,
    unit_id: str = "",
    contractor: str = "",
    verdict: str = "",
    since: dt.datetime | None = None,
    limit: int = 500,
) -> RecordsView:
    """The records the caller may see, with verdicts (evidence in ``lang``)."""
    rows = store.maintenance_records(
        unit_id=unit_id,
        contractor=scope.listing(contractor),
        verdict=verdict,
        since=since,
        limit=limit,
    )
    return RecordsView(lang, tuple(RecordView.of(r, lang) for r in rows))


def last_supported_visit(store: SqlStore, unit_id: str) -> VisitRow | None:
    """The newest visit of ``unit_id`` that supports a maintenance record (the record's
    cited visit), or None when no record of the unit is supported."""
    for record in store.maintenance_records(unit_id=unit_id, verdict="supported"):
        if record.visit_id is not None:
            found = store.visit(record.visit_id)
            if found is not None:
                return found
    return None


def verdict_shares(
    store: SqlStore, scope: Scope, since: dt.datetime | None = None
) -> list[VerdictShare]:
    """Per contractor (the caller's own only, for a contractor), its records by verdict and
    each verdict's share, the most contradicted share first."""
    counts: dict[str, Counter[str]] = {}
    for record in store.maintenance_records(since=since, contractor=scope.listing()):
        counts.setdefault(record.contractor, Counter())[record.verdict] += 1
    return sorted(
        (share_of(name, c) for name, c in counts.items()),
        key=lambda s: (-(s.contradicted_pct or 0.0), -(s.too_short_pct or 0.0), s.contractor),
    )


def share_of(contractor: str, counts: Counter[str]) -> VerdictShare:
    """A contractor's `VerdictShare` from its count of each verdict."""
    total = sum(counts[v] for v in RECORD_VERDICTS)

    def pct(verdict: str) -> float | None:
        return round(100 * counts[verdict] / total, 1) if total else None

    return VerdictShare(
        contractor=contractor,
        records=total,
        supported=counts["supported"],
        too_short=counts["too_short"],
        contradicted=counts["contradicted"],
        cannot_tell=counts["cannot_tell"],
        supported_pct=pct("supported"),
        too_short_pct=pct("too_short"),
        contradicted_pct=pct("contradicted"),
        cannot_tell_pct=pct("cannot_tell"),
    )


def contractors_with(store: SqlStore, verdict: str, since: dt.datetime | None = None) -> list[str]:
    """The contractors with at least one record of ``verdict`` (e.g. ``contradicted``)
    whose window began from ``since``, by name: the district's publication list."""
    found = {r.contractor for r in store.maintenance_records(verdict=verdict, since=since)}
    return sorted(found)


def records_for(rows: Sequence[RecordRow], lang: str) -> tuple[RecordView, ...]:
    """Views of ``rows`` with evidence in ``lang``."""
    return tuple(RecordView.of(r, lang) for r in rows)
