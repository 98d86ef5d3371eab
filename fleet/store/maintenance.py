"""Migration "maintenance" (issue 17) and the store side of maintenance truth.

Tables (the same DDL on both backends but for the ``{id}`` column type):

- ``maintenance_visits``: one row per inspection / out-of-service session of a unit,
  derived from its car-state records (`fleet.reports.visits`): start, end (NULL while it
  goes on), duration, the session's mode (``inspection`` when any of it was in inspection,
  else ``stopped``), runs in inspection, landings visited, door cycles, when it was
  derived, and ``unwatched_s``: the seconds of the session with no car-state record for
  longer than the watch gap (the agent or its link was away), which a verdict never counts.
- ``maintenance_records``: what contractors say they did (CSV or API), with the verdict
  the fleet gives each (`fleet.reports.maintenance`), its reason and evidence (JSON).
  One record per (unit, kind, start, contractor): the same upload twice stores it once.
- ``maintenance_cursors`` and ``maintenance_derived``: where the visit derivation stands,
  per (unit, agent) (the session in progress, as JSON, and its open visit's id) and per
  agent (the highest seq folded). They make the derivation incremental and idempotent.

`MaintenanceStore` is a mixin of `fleet.store.sql.SqlStore`: the same SQL on both
backends through its driver hooks. Closing a visit, taking in a record and changing a
verdict each append an entry to the unit's hash-chained history (kinds ``visit``,
``maintenance_record``, ``maintenance_verdict``), in the same transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from fleet.store import batches

MAINTENANCE_MIGRATION = """
CREATE TABLE maintenance_visits (
    id                {id},
    unit_id           TEXT NOT NULL,
    start_us          BIGINT NOT NULL,
    end_us            BIGINT,
    duration_s        DOUBLE PRECISION NOT NULL DEFAULT 0,
    mode              TEXT NOT NULL,
    inspection_runs   INTEGER NOT NULL DEFAULT 0,
    landings_visited  INTEGER NOT NULL DEFAULT 0,
    door_cycles       INTEGER NOT NULL DEFAULT 0,
    derived_us        BIGINT NOT NULL,
    unwatched_s       DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE INDEX maintenance_visits_unit ON maintenance_visits (unit_id, start_us);
CREATE TABLE maintenance_records (
    id             {id},
    unit_id        TEXT NOT NULL,
    contractor     TEXT NOT NULL,
    kind           TEXT NOT NULL,
    start_us       BIGINT NOT NULL,
    end_us         BIGINT NOT NULL,
    workers        TEXT NOT NULL DEFAULT '',
    source         TEXT NOT NULL,
    uploaded_by    TEXT NOT NULL DEFAULT '',
    uploaded_us    BIGINT NOT NULL,
    verdict        TEXT NOT NULL DEFAULT 'cannot_tell',
    verdict_reason TEXT NOT NULL DEFAULT '',
    evidence       TEXT NOT NULL DEFAULT '{{}}',
    visit_id       BIGINT,
    UNIQUE (unit_id, kind, start_us, contractor)
);
CREATE INDEX maintenance_records_unit ON maintenance_records (unit_id, start_us);
CREATE INDEX maintenance_records_contractor ON maintenance_records (contractor, start_us);
CREATE TABLE maintenance_cursors (
    unit_id        TEXT NOT NULL,
    agent_id       TEXT NOT NULL,
    state          TEXT NOT NULL DEFAULT '',
    open_visit_id  BIGINT,
    PRIMARY KEY (unit_id, agent_id)
);
CREATE TABLE maintenance_derived (
    agent_id  TEXT PRIMARY KEY,
    seq       BIGINT NOT NULL
);
"""

# The WHERE term of the partial index records_health (migration "dashboard").
HEALTH_TERM = "kind IN ('counters', 'link_status')"
VISIT_MODES = ("inspection", "stopped")
RECORD_KINDS = ("half_monthly", "quarterly", "half_yearly", "annual")
RECORD_VERDICTS = ("supported", "too_short", "contradicted", "cannot_tell")

_VISIT_COLUMNS = (
    "v.id, v.unit_id, v.start_us, v.end_us, v.duration_s, v.mode, v.inspection_runs, "
    "v.landings_visited, v.door_cycles, v.derived_us, v.unwatched_s"
)
_RECORD_COLUMNS = (
    "r.id, r.unit_id, r.contractor, r.kind, r.start_us, r.end_us, r.workers, r.source, "
    "r.uploaded_by, r.uploaded_us, r.verdict, r.verdict_reason, r.evidence, r.visit_id"
)


@dataclass(frozen=True, slots=True)
class VisitRow:
    """One watched maintenance visit (times in microseconds since the epoch, UTC); ``id``
    is None for a visit not stored yet, ``end_us`` None while it goes on."""

    id: int | None
    unit_id: str
    start_us: int
    end_us: int | None
    duration_s: float
    mode: str
    inspection_runs: int
    landings_visited: int
    door_cycles: int
    derived_us: int
    unwatched_s: float = 0.0

    @property
    def watched_s(self) -> float:
        """The part of the visit the fleet saw (its duration less the unwatched gaps)."""
        return max(0.0, self.duration_s - self.unwatched_s)


@dataclass(frozen=True, slots=True)
class UnitDerivation:
    """What one derivation step found for a unit of an agent: visits to insert (``id``
    None) or update, and the session state to resume from (JSON; "" = none open)."""

    unit_id: str
    agent_id: str
    visits: tuple[VisitRow, ...]
    state: str


@dataclass(frozen=True, slots=True)
class NewRecord:
    """A maintenance record to store (times in microseconds, UTC)."""

    unit_id: str
    contractor: str
    kind: str
    start_us: int
    end_us: int
    workers: str
    source: str
    uploaded_by: str
    uploaded_us: int


@dataclass(frozen=True, slots=True)
class RecordRow:
    """A stored maintenance record with its current verdict."""

    id: int
    unit_id: str
    contractor: str
    kind: str
    start_us: int
    end_us: int
    workers: str
    source: str
    uploaded_by: str
    uploaded_us: int
    verdict: str
    verdict_reason: str
    evidence: str
    visit_id: int | None


@dataclass(frozen=True, slots=True)
class VerdictChange:
    """A verdict to keep for record ``record_id``."""

    record_id: int
    verdict: str
    reason: str
    evidence: str
    visit_id: int | None


def _visit(row: Sequence[Any]) -> VisitRow:
    return VisitRow(
        id=int(row[0]),
        unit_id=str(row[1]),
        start_us=int(row[2]),
        end_us=None if row[3] is None else int(row[3]),
        duration_s=float(row[4]),
        mode=str(row[5]),
        inspection_runs=int(row[6]),
        landings_visited=int(row[7]),
        door_cycles=int(row[8]),
        derived_us=int(row[9]),
        unwatched_s=float(row[10]),
    )


def _record(row: Sequence[Any]) -> RecordRow:
    return RecordRow(
        id=int(row[0]),
        unit_id=str(row[1]),
        contractor=str(row[2]),
        kind=str(row[3]),
        start_us=int(row[4]),
        end_us=int(row[5]),
        workers=str(row[6]),
        source=str(row[7]),
        uploaded_by=str(row[8]),
        uploaded_us=int(row[9]),
        verdict=str(row[10]),
        verdict_reason=str(row[11]),
        evidence=str(row[12]),
        visit_id=None if row[13] is None else int(row[13]),
    )


def visit_detail(visit: VisitRow) -> dict[str, Any]:
    """What the history chain records of a closed visit."""
    return {
        "visit_id": visit.id,
        "start_us": visit.start_us,
        "end_us": visit.end_us,
        "duration_s": round(visit.duration_s, 3),
        "unwatched_s": round(visit.unwatched_s, 3),
        "mode": visit.mode,
        "inspection_runs": visit.inspection_runs,
        "landings_visited": visit.landings_visited,
        "door_cycles": visit.door_cycles,
    }


class MaintenanceStore:
    """Visits, maintenance records and verdicts over the driver hooks of `SqlStore`."""

    # -- driver hooks (SqlStore supplies them) --------------------------------------------

    def _execute(self, text: str, params: Sequence[object] = ()) -> Any:
        raise NotImplementedError

    def _transaction(self, *, durable: bool = False) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _snapshot(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _queue_history(self, unit_id: str, at_us: int, kind: str, detail: dict[str, Any]) -> None:
        raise NotImplementedError

    def _drop_history(self) -> None:
        raise NotImplementedError

    def _flush_history(self) -> None:
        raise NotImplementedError

    # -- derivation -----------------------------------------------------------------------

    def derivation_due(self) -> list[tuple[str, int, int]]:
        """Agents with records beyond what the visit derivation has folded: (agent_id,
        the highest seq folded so far (0 for none), the highest committed), by agent."""
        rows = self._execute(
            "SELECT a.agent_id, COALESCE(d.seq, 0), a.committed_seq FROM agents a "
            "LEFT JOIN maintenance_derived d ON d.agent_id = a.agent_id "
            "WHERE a.committed_seq > COALESCE(d.seq, 0) ORDER BY a.agent_id"
        ).fetchall()
        return [(str(r[0]), int(r[1]), int(r[2])) for r in rows]

    def car_states_after(
        self, agent_id: str, after_seq: int, limit: int
    ) -> list[tuple[int, str, int, bytes]]:
        """The agent's CarState records with seq above ``after_seq``, in seq order, at most
        ``limit``: (seq, unit_id, time_us, serialized Record). A range of the primary key."""
        rows = self._execute(
            "SELECT seq, unit_id, time_us, payload FROM records WHERE agent_id = ? AND seq > ? "
            "AND kind = 'car_state' ORDER BY seq LIMIT ?",
            (agent_id, after_seq, limit),
        ).fetchall()
        return [(int(r[0]), str(r[1]), int(r[2]), bytes(r[3])) for r in rows]

    def visit_cursors(self, agent_id: str) -> dict[str, tuple[str, VisitRow | None]]:
        """unit_id -> (the session state JSON, its open visit) for ``agent_id``'s units."""
        rows = self._execute(
            f"SELECT c.unit_id, c.state, {_VISIT_COLUMNS} FROM maintenance_cursors c "
            "LEFT JOIN maintenance_visits v ON v.id = c.open_visit_id WHERE c.agent_id = ?",
            (agent_id,),
        ).fetchall()
        return {str(r[0]): (str(r[1]), None if r[2] is None else _visit(r[2:])) for r in rows}

    def save_derivation(
        self, agent_id: str, seq: int, units: Sequence[UnitDerivation]
    ) -> list[VisitRow]:
        """In one transaction: store each unit's visits (insert new, update known), keep
        its session state and open visit, and mark ``agent_id`` folded up to ``seq``;
        a visit closed here gets a ``visit`` history entry. Returns the visits stored."""
        stored: list[VisitRow] = []
        with self._transaction():
            self._drop_history()
            for unit in units:
                open_id: int | None = None
                for visit in unit.visits:
                    saved = self._save_visit(visit)
                    stored.append(saved)
                    if saved.end_us is None:
                        open_id = saved.id
                    else:
                        self._queue_history(
                            saved.unit_id, saved.end_us, "visit", visit_detail(saved)
                        )
                self._execute(
                    "INSERT INTO maintenance_cursors (unit_id, agent_id, state, open_visit_id) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (unit_id, agent_id) DO UPDATE SET "
                    "state = excluded.state, open_visit_id = CASE WHEN excluded.state = '' "
                    "THEN NULL WHEN excluded.open_visit_id IS NULL "
                    "THEN maintenance_cursors.open_visit_id ELSE excluded.open_visit_id END",
                    (unit.unit_id, unit.agent_id, unit.state, open_id),
                )
            self._execute(
                "INSERT INTO maintenance_derived (agent_id, seq) VALUES (?, ?) "
                "ON CONFLICT (agent_id) DO UPDATE SET seq = GREATEST(maintenance_derived.seq, "
                "excluded.seq)",
                (agent_id, seq),
            )
            self._flush_history()
        return stored

    def _save_visit(self, visit: VisitRow) -> VisitRow:
        values = (
            visit.end_us,
            visit.duration_s,
            visit.mode,
            visit.inspection_runs,
            visit.landings_visited,
            visit.door_cycles,
            visit.derived_us,
            visit.unwatched_s,
        )
        if visit.id is None:
            row = self._execute(
                "INSERT INTO maintenance_visits (unit_id, start_us, end_us, duration_s, mode, "
                "inspection_runs, landings_visited, door_cycles, derived_us, unwatched_s) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (visit.unit_id, visit.start_us, *values),
            ).fetchone()
        else:
            row = self._execute(
                "UPDATE maintenance_visits SET end_us = ?, duration_s = ?, mode = ?, "
                "inspection_runs = ?, landings_visited = ?, door_cycles = ?, derived_us = ?, "
                "unwatched_s = ? WHERE id = ? RETURNING id",
                (*values, visit.id),
            ).fetchone()
        return VisitRow(int(row[0]), visit.unit_id, visit.start_us, *values)

    # -- visits ---------------------------------------------------------------------------

    def visits(
        self,
        *,
        unit_id: str = "",
        contractor: str = "",
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int = 0,
    ) -> list[VisitRow]:
        """Visits touching [since, until) (either bound open when None), of ``unit_id``
        and / or of the units ``contractor`` maintains ("" = any), newest first; ``limit``
        0 = all. A visit still going on touches every time after its start."""
        clauses = ["1 = 1"]
        params: list[object] = []
        if unit_id:
            clauses.append("v.unit_id = ?")
            params.append(unit_id)
        if contractor:
            clauses.append("u.contractor = ?")
            params.append(contractor)
        if until is not None:
            clauses.append("v.start_us < ?")
            params.append(_us(until))
        if since is not None:
            clauses.append("(v.end_us IS NULL OR v.end_us >= ?)")
            params.append(_us(since))
        text = (
            f"SELECT {_VISIT_COLUMNS} FROM maintenance_visits v LEFT JOIN units u "
            f"ON u.unit_id = v.unit_id WHERE {' AND '.join(clauses)} "
            "ORDER BY v.start_us DESC, v.id DESC"
        )
        if limit > 0:
            text += " LIMIT ?"
            params.append(limit)
        return [_visit(r) for r in self._execute(text, params).fetchall()]

    def visit(self, visit_id: int) -> VisitRow | None:
        """The visit ``visit_id``, or None."""
        row = self._execute(
            f"SELECT {_VISIT_COLUMNS} FROM maintenance_visits v WHERE v.id = ?", (visit_id,)
        ).fetchone()
        return None if row is None else _visit(row)

    # -- records and verdicts -------------------------------------------------------------

    def add_maintenance_records(
        self, records: Sequence[NewRecord], now: dt.datetime
    ) -> list[int | None]:
        """Store ``records`` in one transaction, each once (unit, kind, start, contractor);
        one result per record: its new id, or None when it was stored already. Each new
        one gets a ``maintenance_record`` history entry."""
        ids: list[int | None] = []
        with self._transaction():
            self._drop_history()
            for record in records:
                row = self._execute(
                    "INSERT INTO maintenance_records (unit_id, contractor, kind, start_us, "
                    "end_us, workers, source, uploaded_by, uploaded_us) VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
                    (
                        record.unit_id,
                        record.contractor,
                        record.kind,
                        record.start_us,
                        record.end_us,
                        record.workers,
                        record.source,
                        record.uploaded_by,
                        record.uploaded_us,
                    ),
                ).fetchone()
                ids.append(None if row is None else int(row[0]))
                if row is not None:
                    detail = {
                        "record_id": int(row[0]),
                        "contractor": record.contractor,
                        "kind": record.kind,
                        "start_us": record.start_us,
                        "end_us": record.end_us,
                        "source": record.source,
                        "uploaded_by": record.uploaded_by,
                    }
                    self._queue_history(record.unit_id, _us(now), "maintenance_record", detail)
            self._flush_history()
        return ids

    def maintenance_records(
        self,
        *,
        unit_id: str = "",
        contractor: str = "",
        verdict: str = "",
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        ids: Sequence[int] = (),
        limit: int = 0,
    ) -> list[RecordRow]:
        """Records whose claimed window starts in [since, until) (bounds open when None),
        filtered by unit, the contractor that filed them, verdict and ids ("" / () =
        any), newest first; ``limit`` 0 = all."""
        clauses = ["1 = 1"]
        params: list[object] = []
        for column, value in (("unit_id", unit_id), ("contractor", contractor)):
            if value:
                clauses.append(f"r.{column} = ?")
                params.append(value)
        if verdict:
            clauses.append("r.verdict = ?")
            params.append(verdict)
        if since is not None:
            clauses.append("r.start_us >= ?")
            params.append(_us(since))
        if until is not None:
            clauses.append("r.start_us < ?")
            params.append(_us(until))
        if ids:
            clauses.append(f"r.id IN ({', '.join('?' * len(ids))})")
            params.extend(ids)
        text = (
            f"SELECT {_RECORD_COLUMNS} FROM maintenance_records r "
            f"WHERE {' AND '.join(clauses)} ORDER BY r.start_us DESC, r.id DESC"
        )
        if limit > 0:
            text += " LIMIT ?"
            params.append(limit)
        return [_record(r) for r in self._execute(text, params).fetchall()]

    def set_verdicts(self, changes: Sequence[VerdictChange], now: dt.datetime) -> int:
        """Keep each verdict in one transaction; a record whose verdict, reason, evidence
        or visit changes gets a ``maintenance_verdict`` history entry. Returns how many
        records changed (the same verdicts again change nothing)."""
        changed = 0
        with self._transaction():
            self._drop_history()
            for change in changes:
                row = self._execute(
                    "UPDATE maintenance_records SET verdict = ?, verdict_reason = ?, "
                    "evidence = ?, visit_id = ? WHERE id = ? AND NOT (verdict = ? AND "
                    "verdict_reason = ? AND evidence = ? AND COALESCE(visit_id, -1) = ?) "
                    "RETURNING unit_id",
                    (
                        change.verdict,
                        change.reason,
                        change.evidence,
                        change.visit_id,
                        change.record_id,
                        change.verdict,
                        change.reason,
                        change.evidence,
                        -1 if change.visit_id is None else change.visit_id,
                    ),
                ).fetchone()
                if row is None:
                    continue
                changed += 1
                detail = {
                    "record_id": change.record_id,
                    "verdict": change.verdict,
                    "reason": change.reason,
                    "visit_id": change.visit_id,
                }
                self._queue_history(str(row[0]), _us(now), "maintenance_verdict", detail)
            self._flush_history()
        return changed

    # -- what a verdict reads -------------------------------------------------------------

    @batches.snapshot_read
    def car_states(
        self, unit_id: str, agent_id: str, since: dt.datetime, until: dt.datetime
    ) -> list[tuple[int, bytes]]:
        """The CarState records ``agent_id`` sent about ``unit_id`` in [since, until), by
        time: (time_us, serialized Record). Scans the agent's records (an audit's read)."""
        rows = self._execute(
            "SELECT time_us, seq, payload FROM records WHERE agent_id = ? AND unit_id = ? "
            "AND kind = 'car_state' AND time_us >= ? AND time_us < ? ORDER BY time_us, seq",
            (agent_id, unit_id, _us(since), _us(until)),
        ).fetchall()
        # The older part of the span lies in batches (fleet.store.batches). Merged by
        # time, not put first: after a clock set back, compaction (which stops at the
        # agent's first record past its cutoff) leaves hot rows older than batched ones.
        batched = batches.rows_in(
            self, unit_id, ("car_state",), _us(since), _us(until), agent_id=agent_id
        )
        merged = sorted(
            [(r[0], r[1], r[3]) for r in batched]
            + [(int(r[0]), int(r[1]), bytes(r[2])) for r in rows],
            key=lambda r: (r[0], r[1]),
        )
        return [(time_us, payload) for time_us, _, payload in merged]

    @batches.snapshot_read
    def link_states(
        self, unit_id: str, since: dt.datetime, until: dt.datetime
    ) -> list[tuple[int, bytes]]:
        """The LinkStatus records of ``unit_id`` in [since, until), with the last one
        before ``since`` first (the link's state when the span began), by time; on the
        ``records_health`` index."""
        # The index's own condition, written out: SQLite uses a partial index only for a
        # query whose WHERE holds the index's WHERE term as it is (kind = 'link_status'
        # alone does not count), else it scans every record.
        health = f"unit_id = ? AND {HEALTH_TERM} AND kind = 'link_status'"
        before = self._execute(
            f"SELECT time_us, payload FROM records WHERE {health} AND time_us < ? "
            "ORDER BY time_us DESC LIMIT 1",
            (unit_id, _us(since)),
        ).fetchall()
        inside = self._execute(
            f"SELECT time_us, payload FROM records WHERE {health} AND time_us >= ? "
            "AND time_us < ? ORDER BY time_us",
            (unit_id, _us(since), _us(until)),
        ).fetchall()
        # Within the window but compacted: the batches (fleet.store.batches).
        link = ("link_status",)
        before += [(r[0], r[3]) for r in batches.nearest_rows(self, unit_id, *link, _us(since), 1)]
        before = sorted(before)[-1:]
        inside += [
            (r[0], r[3]) for r in batches.rows_in(self, unit_id, link, _us(since), _us(until))
        ]
        # Beyond the retention window the link's changes live on in records_kept
        # (fleet.store.retention): whether and when the link was down in the span (what
        # a verdict asks) comes out the same across the edge.
        kept = "unit_id = ? AND kind = 'link_status'"
        before = sorted(
            before
            + self._execute(
                f"SELECT time_us, payload FROM records_kept WHERE {kept} AND time_us < ? "
                "ORDER BY time_us DESC LIMIT 1",
                (unit_id, _us(since)),
            ).fetchall()
        )[-1:]
        inside = sorted(
            self._execute(
                f"SELECT time_us, payload FROM records_kept WHERE {kept} AND time_us >= ? "
                "AND time_us < ?",
                (unit_id, _us(since), _us(until)),
            ).fetchall()
            + inside
        )
        return [(int(r[0]), bytes(r[1])) for r in [*before, *inside]]

    def watched_slots(self, unit_id: str, since: dt.date, until: dt.date) -> dict[dt.date, int]:
        """The fault-rate report's watched half-hours of ``unit_id`` per UTC day in [since,
        until) (`fleet.store.base.TripSpan.watched_slots`; a day absent: none)."""
        rows = self._execute(
            "SELECT day, watched_slots FROM unit_trips_daily WHERE unit_id = ? AND day >= ? "
            "AND day < ?",
            (unit_id, since.isoformat(), until.isoformat()),
        ).fetchall()
        return {dt.date.fromisoformat(str(r[0])): int(r[1]) for r in rows}


def _us(moment: dt.datetime) -> int:
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return delta // dt.timedelta(microseconds=1)
