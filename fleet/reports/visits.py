"""Watched maintenance visits, derived from the car-state records the fleet stores.

A visit is one session of a unit out of normal service for maintenance: the car-state
records from the first in INSPECTION or STOPPED (out of service) mode to the first after
it in another known mode (NORMAL, fire service, ...), which ends it. Inspection and
out-of-service stretches next to each other are one visit (a worker stops the lift, then
switches to inspection on the car top); its ``mode`` is ``inspection`` when any of it was
in inspection, else ``stopped``. Per visit: start, end (None while it goes on), duration,
runs in inspection (the car starting to move), landings visited (distinct floors seen),
door cycles (the doors reaching fully open from another state), and ``unwatched_s``: the
silences between its records longer than ``max_gap_s`` (the agent or its link was away),
which no verdict counts as watched. A record in mode UNKNOWN (or none: a profile without a
mode signal) says nothing: it neither starts nor ends a visit, and its time is unwatched.

**Incremental, by a periodic job, not at ingest.** `derive_visits` folds each agent's
CarState records with a seq above the agent's mark, in seq order (an agent's seq follows
its clock), into the unit's session, carried between runs as a cursor; the visits, the
cursors and the new mark are stored in one transaction. Why a job and not the ingest
transaction: the group commit stays what it is (it carries 10,000 units' telemetry and
every added statement is paid on each group), a slow or failed derivation never holds up
or fails the records it reads, and a visit appears a minute later at most, which is
nothing for maintenance. Idempotent: a record is folded once (the mark moves with the
visits it made), a rerun finds nothing to do, and the same records give the same visits
in any split over runs (the fold carries its whole state). ``serve`` runs it every
``[maintenance.verdicts] derive_interval_s``; ``maintenance visits --derive`` and
``maintenance audit`` run it on demand.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from fleet.reports.maintenance_config import VerdictRulesConfig
from fleet.store.maintenance import UnitDerivation, VisitRow
from fleet.store.sql import SqlStore
from protos.liftwatch.v1 import records_pb2

_M = records_pb2
MAINTENANCE_MODES = {_M.SERVICE_MODE_INSPECTION: "inspection", _M.SERVICE_MODE_STOPPED: "stopped"}
SILENT_MODES = frozenset({_M.SERVICE_MODE_UNSPECIFIED, _M.SERVICE_MODE_UNKNOWN})
BATCH = 5_000  # car-state records read per step of one agent


@dataclass(slots=True)
class Session:
    """A visit in progress as the fold carries it (times in µs, UTC)."""

    start_us: int
    last_us: int
    mode: str
    runs: int = 0
    floors: set[int] = field(default_factory=set)
    door_cycles: int = 0
    unwatched_s: float = 0.0
    moving: bool | None = None
    door: int | None = None

    def to_json(self) -> str:
        """The cursor's state text (sorted keys: the same session, the same text)."""
        return json.dumps(
            {
                "start_us": self.start_us,
                "last_us": self.last_us,
                "mode": self.mode,
                "runs": self.runs,
                "floors": sorted(self.floors),
                "door_cycles": self.door_cycles,
                "unwatched_s": self.unwatched_s,
                "moving": self.moving,
                "door": self.door,
            },
            sort_keys=True,
        )

    @classmethod
    def of_json(cls, text: str) -> Session | None:
        """The session a cursor's state text holds; None for "" (none open)."""
        if not text:
            return None
        d = json.loads(text)
        return cls(
            start_us=int(d["start_us"]),
            last_us=int(d["last_us"]),
            mode=str(d["mode"]),
            runs=int(d["runs"]),
            floors={int(f) for f in d["floors"]},
            door_cycles=int(d["door_cycles"]),
            unwatched_s=float(d["unwatched_s"]),
            moving=d["moving"],
            door=d["door"],
        )

    def visit(
        self, visit_id: int | None, unit_id: str, end_us: int | None, now_us: int
    ) -> VisitRow:
        """The session as a visit row (``end_us`` None: still going on, so far)."""
        until = self.last_us if end_us is None else end_us
        return VisitRow(
            id=visit_id,
            unit_id=unit_id,
            start_us=self.start_us,
            end_us=end_us,
            duration_s=(until - self.start_us) / 1e6,
            mode=self.mode,
            inspection_runs=self.runs,
            landings_visited=len(self.floors),
            door_cycles=self.door_cycles,
            derived_us=now_us,
            unwatched_s=round(self.unwatched_s, 3),
        )


def _silence(session: Session, time_us: int, max_gap_s: float) -> float:
    """Seconds since the session's last record when longer than ``max_gap_s``, else 0."""
    gap = (time_us - session.last_us) / 1e6
    return gap if gap > max_gap_s else 0.0


def _step(session: Session, time_us: int, car: records_pb2.CarState, max_gap_s: float) -> None:
    """Fold one car state in a maintenance mode into the open session."""
    session.unwatched_s += _silence(session, time_us, max_gap_s)
    session.last_us = max(session.last_us, time_us)
    inspection = car.mode == _M.SERVICE_MODE_INSPECTION
    if inspection:
        session.mode = "inspection"
    if car.HasField("moving"):
        if inspection and car.moving and session.moving is not True:
            session.runs += 1
        session.moving = car.moving
    if car.HasField("floor"):
        session.floors.add(int(car.floor))
    if car.door != _M.DOOR_STATE_UNSPECIFIED:
        if car.door == _M.DOOR_STATE_OPEN and session.door not in (None, _M.DOOR_STATE_OPEN):
            session.door_cycles += 1
        session.door = int(car.door)


def fold(
    unit_id: str,
    session: Session | None,
    open_visit: VisitRow | None,
    states: Iterable[tuple[int, records_pb2.CarState]],
    max_gap_s: float,
    now_us: int,
) -> tuple[list[VisitRow], Session | None]:
    """Fold car states (time_us, CarState), in the agent's order, into ``session`` (the
    one in progress, stored as ``open_visit``): the visits begun, changed or ended, and
    the session still open after them. Pure: the same input, the same output."""
    visits: list[VisitRow] = []
    visit_id = None if open_visit is None else open_visit.id
    touched = False
    for time_us, car in states:
        if car.mode in SILENT_MODES:
            continue
        if car.mode in MAINTENANCE_MODES:
            if session is None:
                session = Session(time_us, time_us, MAINTENANCE_MODES[car.mode])
                visit_id = None
            _step(session, time_us, car, max_gap_s)
            touched = True
            continue
        if session is not None:  # NORMAL or another service mode: the visit is over
            session.unwatched_s += _silence(session, time_us, max_gap_s)
            visits.append(session.visit(visit_id, unit_id, time_us, now_us))
            session, visit_id, touched = None, None, False
    if session is not None and touched:
        visits.append(session.visit(visit_id, unit_id, None, now_us))
    return visits, session


@dataclass(frozen=True, slots=True)
class DeriveResult:
    """What one `derive_visits` run did."""

    agents: int
    car_states: int
    visits: int


def _car(payload: bytes) -> records_pb2.CarState:
    record = records_pb2.Record()
    record.ParseFromString(payload)
    return record.car_state


def derive_visits(
    store: SqlStore, rules: VerdictRulesConfig, now: dt.datetime, *, batch: int = BATCH
) -> DeriveResult:
    """Fold every agent's car-state records not folded yet into visits and store them
    (see the module docstring); safe to run again at any time."""
    agents = states = visits = 0
    for agent_id, done, committed in store.derivation_due():
        agents += 1
        folded, stored = derive_agent(store, agent_id, done, committed, rules, now, batch=batch)
        states += folded
        visits += stored
    return DeriveResult(agents, states, visits)


def derive_agent(
    store: SqlStore,
    agent_id: str,
    done: int,
    committed: int,
    rules: VerdictRulesConfig,
    now: dt.datetime,
    *,
    batch: int = BATCH,
) -> tuple[int, int]:
    """Fold ``agent_id``'s car-state records with a seq in (``done``, ``committed``] (as
    `SqlStore.derivation_due` gives them) into visits: (states folded, visits stored)."""
    now_us = int((now - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) / dt.timedelta(microseconds=1))
    states = visits = 0
    cursors = {
        unit: (Session.of_json(text), visit)
        for unit, (text, visit) in store.visit_cursors(agent_id).items()
    }
    while True:
        rows = [r for r in store.car_states_after(agent_id, done, batch) if r[0] <= committed]
        if not rows:
            break
        states += len(rows)
        by_unit: dict[str, list[tuple[int, records_pb2.CarState]]] = {}
        for _seq, unit_id, time_us, payload in rows:
            by_unit.setdefault(unit_id, []).append((time_us, _car(payload)))
        derived: list[UnitDerivation] = []
        for unit_id in sorted(by_unit):
            session, open_visit = cursors.get(unit_id, (None, None))
            found, session = fold(
                unit_id, session, open_visit, by_unit[unit_id], rules.max_gap_s, now_us
            )
            state = "" if session is None else session.to_json()
            derived.append(UnitDerivation(unit_id, agent_id, tuple(found), state))
            # The open visit stays this unit's while its session does (the batch had
            # only silent records for it); a session begun here gets its id on storing.
            kept = session is not None and open_visit is not None
            same = kept and session.start_us == open_visit.start_us  # type: ignore[union-attr]
            cursors[unit_id] = (session, open_visit if same else None)
        stored = store.save_derivation(agent_id, rows[-1][0], derived)
        visits += len(stored)
        for visit in stored:
            if visit.end_us is None:
                cursors[visit.unit_id] = (cursors[visit.unit_id][0], visit)
        done = rows[-1][0]
        if len(rows) < batch:
            break
    store.save_derivation(agent_id, committed, ())  # the rest are other kinds of record
    return states, visits
