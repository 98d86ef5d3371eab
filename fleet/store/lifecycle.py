"""The store's lifecycle side: alarms (the dispatch queue), the hash-chained unit history,
and the inputs of the reports (fault events, daily trip counter spans).

`LifecycleStore` is a mixin of `fleet.store.sql.SqlStore`: the same SQL on both backends,
run through its driver hooks, inside the transactions ``SqlStore`` opens. The ingest and
registry code of ``SqlStore`` *queues* history entries (`_queue_history`) while it
changes rows; `_flush_history` appends them at the end of the same transaction, unit by
unit in sorted order, so two fleets on one PostgreSQL lock chain heads in the same order.
A chain head is locked by a no-op ``UPDATE ... RETURNING`` (both backends; SQLite's write
lock already serializes), so no two writers can both extend one unit's chain.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from fleet.store import batches
from fleet.store.base import (
    MAX_CREW_CHARS,
    OPEN_ALARM_STATES,
    AlarmActionError,
    AlarmReasonRequiredError,
    AlarmRow,
    Delivery,
    DispatchPlan,
    EventRow,
    FaultEvent,
    RegisterEntry,
    TripSpan,
)
from fleet.store.chain import (
    ALARM_COLUMNS,
    GENESIS,
    AlarmFact,
    EventFact,
    Head,
    HistoryCheck,
    HistoryRow,
    canonical,
    detail_entry_hash,
    event_detail,
    iso_us,
)
from fleet.store.chain import type_name as _type_name
from fleet.store.reasons import params_of
from fleet.store.retention import StateHour, state_hours
from fleet.taxonomy import shown_gb_code
from protos.liftwatch.v1 import records_pb2

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

# The alarm types by default (``[alarms] types`` overrides): someone may be trapped or a
# car is moving with a door open — rescuers go at once (EN 81-28).
DEFAULT_ALARM_TYPES = frozenset(
    {
        records_pb2.EVENT_TYPE_ENTRAPMENT,
        records_pb2.EVENT_TYPE_DOOR_OPEN_WHILE_MOVING,
        records_pb2.EVENT_TYPE_DOOR_LOCK_BYPASS,
        records_pb2.EVENT_TYPE_UNINTENDED_MOVEMENT,
        records_pb2.EVENT_TYPE_ALARM_BUTTON,
    }
)

# Migration "lifecycle": the same DDL on both backends but for the ``{id}`` column type.
LIFECYCLE_TABLES = """
CREATE TABLE alarms (
    alarm_id         {id},
    unit_id          TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    agent_id         TEXT NOT NULL,
    type             INTEGER NOT NULL,
    floor            INTEGER,
    reason           TEXT NOT NULL DEFAULT '',
    onset_us         BIGINT,
    raised_us        BIGINT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'raised',
    dispatched_us    BIGINT,
    acknowledged_us  BIGINT,
    acknowledged_by  TEXT NOT NULL DEFAULT '',
    on_site_us       BIGINT,
    on_site_by       TEXT NOT NULL DEFAULT '',
    closed_us        BIGINT,
    closed_by        TEXT NOT NULL DEFAULT '',
    escalated_us     BIGINT,
    cleared_us       BIGINT,
    UNIQUE (unit_id, event_id)
);
CREATE INDEX alarms_state ON alarms (state, raised_us);
CREATE INDEX alarms_unit ON alarms (unit_id, raised_us);
CREATE TABLE alarm_deliveries (
    alarm_id      BIGINT NOT NULL,
    target        TEXT NOT NULL,
    escalation    INTEGER NOT NULL DEFAULT 0,
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_us       BIGINT NOT NULL,
    delivered_us  BIGINT,
    last_error    TEXT NOT NULL DEFAULT '',
    done          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (alarm_id, target)
);
CREATE INDEX alarm_deliveries_due ON alarm_deliveries (done, next_us);
CREATE TABLE unit_history (
    id         {id},
    unit_id    TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    at_us      BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    detail     TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE UNIQUE INDEX unit_history_unit_seq ON unit_history (unit_id, seq);
CREATE TABLE unit_history_head (
    unit_id  TEXT PRIMARY KEY,
    seq      BIGINT NOT NULL,
    hash     TEXT NOT NULL
);
CREATE TABLE unit_trips_daily (
    unit_id    TEXT NOT NULL,
    day        TEXT NOT NULL,
    min_trips  BIGINT NOT NULL,
    max_trips  BIGINT NOT NULL,
    PRIMARY KEY (unit_id, day)
);
"""

_ALARM_COLUMNS = (
    "a.alarm_id, a.unit_id, a.event_id, a.agent_id, a.type, a.floor, a.reason, a.onset_us, "
    "a.raised_us, a.state, a.dispatched_us, a.acknowledged_us, a.acknowledged_by, "
    "a.on_site_us, a.on_site_by, a.closed_us, a.closed_by, a.escalated_us, a.cleared_us, "
    "COALESCE(u.building, ''), COALESCE(u.address, ''), COALESCE(u.street, ''), "
    "COALESCE(u.contractor, ''), a.close_reason, a.crew, a.crew_eta_us, "
    "a.crew_dispatched_us, a.crew_dispatched_by"
)
_ALARM_FROM = "FROM alarms a LEFT JOIN units u ON u.unit_id = a.unit_id"

# action -> (states it may follow, new state, the columns it stamps)
_ACTIONS: dict[str, tuple[tuple[str, ...], str, str, str]] = {
    "ack": (("raised", "dispatched"), "acknowledged", "acknowledged_us", "acknowledged_by"),
    "on_site": (("acknowledged",), "on_site", "on_site_us", "on_site_by"),
    "resolve": (("acknowledged", "on_site"), "resolved", "closed_us", "closed_by"),
    "false_alarm": (OPEN_ALARM_STATES, "false_alarm", "closed_us", "closed_by"),
}
# "dispatch": who was sent and when they are expected, on an acknowledged alarm, which it
# leaves acknowledged (its step is not a state; the reports do not read it).
_DISPATCH = (("acknowledged",), "crew_dispatched", "crew_dispatched_us", "crew_dispatched_by")
ALARM_ACTIONS = (*_ACTIONS, "dispatch")
# The steps that close an alarm: while its event is still raised they need a reason.
_CLOSING = frozenset({"resolved", "false_alarm"})


def _us(moment: dt.datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _at(us: int | None) -> dt.datetime | None:
    return None if us is None else _EPOCH + dt.timedelta(microseconds=int(us))


# The ``events`` columns in the order ingest writes them (`fleet.store.sql`) and reads
# select them for `event_of_row`.
EVENT_COLUMNS = (
    "agent_id, seq, unit_id, time_us, event_id, type, phase, onset_us, floor, reason, "
    "committed_us, gb_code, at_landing, reason_code, reason_params"
)
# One placeholder per column of `EVENT_COLUMNS`, for ingest's INSERT.
EVENT_MARKS = ", ".join("?" * len(EVENT_COLUMNS.split(",")))


def event_of_row(row: Sequence[Any]) -> EventRow:
    """The `EventRow` of one ``events`` row selected as `EVENT_COLUMNS`.

    ``gb_code`` is stored as the agent sent it (NULL for the wire's 0, and in rows stored
    before migration "verdicts"); the row shows `fleet.taxonomy.shown_gb_code` of it."""
    kind = int(row[5])
    return EventRow(
        agent_id=row[0],
        seq=int(row[1]),
        unit_id=row[2],
        time=_at(row[3]) or _EPOCH,
        event_id=row[4],
        type=kind,
        phase=int(row[6]),
        onset=_at(row[7]),
        floor=None if row[8] is None else int(row[8]),
        reason=row[9],
        committed=_at(row[10]),
        gb_code=shown_gb_code(kind, None if row[11] is None else int(row[11])),
        at_landing=None if row[12] is None else bool(row[12]),
        reason_code=row[13] or "",
        reason_params=params_of(row[14]),
    )


def _alarm(row: Sequence[Any]) -> AlarmRow:
    raised = _at(row[8])
    assert raised is not None
    return AlarmRow(
        alarm_id=int(row[0]),
        unit_id=row[1],
        event_id=row[2],
        agent_id=row[3],
        type=int(row[4]),
        floor=None if row[5] is None else int(row[5]),
        reason=row[6],
        onset=_at(row[7]),
        raised=raised,
        state=row[9],
        dispatched=_at(row[10]),
        acknowledged=_at(row[11]),
        acknowledged_by=row[12],
        on_site=_at(row[13]),
        on_site_by=row[14],
        closed=_at(row[15]),
        closed_by=row[16],
        escalated=_at(row[17]),
        cleared=_at(row[18]),
        building=row[19],
        address=row[20],
        street=row[21],
        contractor=row[22],
        close_reason=row[23],
        crew=row[24] or "",
        crew_eta=_at(row[25]),
        crew_dispatched=_at(row[26]),
        crew_dispatched_by=row[27] or "",
    )


class LifecycleStore:
    """Alarms, history and report reads over the driver hooks of `SqlStore`."""

    # Which event types raise an alarm; serve sets it from ``[alarms] types``.
    alarm_types: frozenset[int] = DEFAULT_ALARM_TYPES
    _history_queue: list[tuple[str, int, str, dict[str, Any]]]

    # -- driver hooks (SqlStore supplies them) --------------------------------------------

    def _execute(self, text: str, params: Sequence[object] = ()) -> Any:
        raise NotImplementedError

    def _many(self, text: str, rows: Sequence[Sequence[object]]) -> None:
        raise NotImplementedError

    def _snapshot(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _run_many(self, text: str, rows: Sequence[Sequence[object]]) -> list[list[tuple[Any, ...]]]:
        raise NotImplementedError

    def _set_based(
        self, text: str, rows: Sequence[Sequence[object]], types: Sequence[str]
    ) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _transaction(self, *, durable: bool = False) -> AbstractContextManager[None]:
        raise NotImplementedError

    # -- history --------------------------------------------------------------------------

    def _queue_history(self, unit_id: str, at_us: int, kind: str, detail: dict[str, Any]) -> None:
        """Queue one entry for `_flush_history` at the end of this transaction."""
        try:
            queue = self._history_queue
        except AttributeError:
            queue = self._history_queue = []
        queue.append((unit_id, at_us, kind, detail))

    def _drop_history(self) -> None:
        """Forget queued entries (a transaction that failed takes them with it)."""
        self._history_queue = []

    def _flush_history(self) -> None:
        """Append the queued entries to their units' chains (inside the transaction)."""
        queue = getattr(self, "_history_queue", [])
        self._history_queue = []
        if not queue:
            return
        # One set-based statement per step, whatever the number of units (a group commit
        # of many Hellos queues two entries for each of their units).
        units = [(u,) for u in sorted({entry[0] for entry in queue})]
        self._set_based(
            "INSERT INTO unit_history_head (unit_id, seq, hash) "
            "SELECT column1, 0, column2 FROM {rows} WHERE true ON CONFLICT DO NOTHING",
            [(u, GENESIS) for (u,) in units],
            ("text", "text"),
        )
        # A no-op UPDATE locks each head row and returns it: the chain cannot fork. (On
        # PostgreSQL the join walks the sorted unit list, so two fleets lock heads in the
        # same order; a deadlock all the same fails the group, which is retried.)
        found = self._set_based(
            "UPDATE unit_history_head SET seq = seq FROM {rows} WHERE unit_id = v.column1 "
            "RETURNING unit_id, seq, hash",
            units,
            ("text",),
        )
        heads = {str(r[0]): (int(r[1]), str(r[2])) for r in found}
        rows: list[tuple[object, ...]] = []
        for unit_id, at_us, kind, detail in queue:
            seq, prev = heads[unit_id]
            seq += 1
            text = canonical(detail)
            digest = detail_entry_hash(unit_id, seq, at_us, kind, text, prev)
            rows.append((unit_id, seq, at_us, kind, text, prev, digest))
            heads[unit_id] = (seq, digest)
        self._set_based(
            "INSERT INTO unit_history (unit_id, seq, at_us, kind, detail, prev_hash, hash) "
            "SELECT * FROM {rows} WHERE true",
            rows,
            ("text", "bigint", "bigint", "text", "text", "text", "text"),
        )
        self._set_based(
            "UPDATE unit_history_head SET seq = v.column2, hash = v.column3 FROM {rows} "
            "WHERE unit_id = v.column1",
            [(u, seq, digest) for u, (seq, digest) in sorted(heads.items())],
            ("text", "bigint", "text"),
        )

    def _history_coverage(self, rows: Sequence[tuple[object, ...]]) -> None:
        """Rows of (unit_id, at_us, old_status, new_status, cause) just logged."""
        for unit_id, at_us, old, new, cause in rows:
            detail = {"old_status": old, "new_status": new, "cause": cause}
            self._queue_history(str(unit_id), int(str(at_us)), "coverage", detail)

    def _history_firmware(self, rows: Sequence[tuple[object, ...]]) -> None:
        """Rows as `SqlStore._log_firmware` inserts them (unit_id, at_us, agent_id, model,
        old fw, new fw, old agent version, new agent version)."""
        names = ("agent_id", "model", "old_firmware", "new_firmware")
        for row in rows:
            detail: dict[str, Any] = dict(zip(names, row[2:6], strict=True))
            detail["old_agent_version"], detail["new_agent_version"] = row[6], row[7]
            self._queue_history(str(row[0]), int(str(row[1])), "firmware", detail)

    def _history_register(self, entries: Sequence[RegisterEntry], at_us: int) -> None:
        """Queue a ``register`` entry for each of ``entries`` that is new or changed."""
        fields = (
            "building, address, street, use_unit, contractor, install_date, rated_speed_m_s, "
            "rated_load_kg, landings, registered_model, car_in_group"
        )
        known: dict[str, dict[str, Any]] = {}
        ids = [e.unit_id for e in entries]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            for row in self._execute(
                f"SELECT unit_id, {fields} FROM units WHERE registered = 1 AND unit_id IN "
                f"({marks})",
                chunk,
            ).fetchall():
                known[row[0]] = _register_detail_of_row(row[1:])
        for entry in entries:
            detail = _register_detail(entry)
            old = known.get(entry.unit_id)
            if old == detail:
                continue
            changed = sorted(k for k in detail if old is None or old.get(k) != detail[k])
            self._queue_history(
                entry.unit_id, at_us, "register", {**detail, "changed": changed, "new": old is None}
            )

    # -- ingest: events, alarms and trip counters -----------------------------------------

    def _on_events(self, events: Sequence[tuple[Any, ...]]) -> None:
        """Rows as `SqlStore` indexes events (`EVENT_COLUMNS`: agent_id, seq, unit_id,
        time_us, event_id, type, phase, onset_us, floor, reason, committed_us, gb_code,
        at_landing): history, and alarms of alarm types."""
        raised: list[tuple[object, ...]] = []
        cleared: list[tuple[object, ...]] = []
        for row in events:
            fact = _event_fact(row)
            now = row[10]
            # `event_detail` is the one statement of what is chained of an event: the
            # verifier recomputes it from the events row.
            self._queue_history(fact.unit_id, now, "event", event_detail(fact))
            if fact.type not in self.alarm_types:
                continue
            if fact.phase == records_pb2.PHASE_RAISED:
                raised.append(
                    (
                        fact.unit_id,
                        fact.event_id,
                        fact.agent_id,
                        fact.type,
                        fact.floor,
                        fact.reason,
                        fact.onset_us,
                        now,
                    )
                )
            elif fact.phase == records_pb2.PHASE_CLEARED:
                cleared.append((fact.time_us, fact.unit_id, fact.event_id))
        found = self._run_many(
            "INSERT INTO alarms (unit_id, event_id, agent_id, type, floor, reason, onset_us, "
            "raised_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING "
            "RETURNING alarm_id, unit_id, type, raised_us, event_id",
            raised,
        )
        for result in found:
            for alarm_id, unit_id, kind, at_us, alarm_event in result:
                detail = {
                    "alarm_id": int(alarm_id),
                    "step": "raised",
                    "type": _type_name(kind),
                    "event_id": alarm_event,
                }
                self._queue_history(unit_id, int(at_us), "alarm", detail)
        found = self._run_many(
            "UPDATE alarms SET cleared_us = ? WHERE unit_id = ? AND event_id = ? "
            "AND cleared_us IS NULL RETURNING alarm_id, unit_id, cleared_us",
            cleared,
        )
        for result in found:
            for alarm_id, unit_id, at_us in result:
                detail = {"alarm_id": int(alarm_id), "step": "cleared", "by": "event"}
                self._queue_history(unit_id, int(at_us), "alarm", detail)

    def _on_counters(self, rows: Sequence[tuple[str, int, int]]) -> None:
        """Rows of (unit_id, time_us, trips): widen that UTC day's counter span and mark
        the half-hour the record fell in as watched."""
        spans: dict[tuple[str, str], tuple[int, int, int]] = {}
        for unit_id, time_us, trips in rows:
            moment = _at(time_us)
            assert moment is not None
            key = (unit_id, moment.date().isoformat())
            low, high, slots = spans.get(key, (trips, trips, 0))
            slot = 1 << (moment.hour * 2 + moment.minute // 30)
            spans[key] = (min(low, trips), max(high, trips), slots | slot)
        self._many(
            "INSERT INTO unit_trips_daily (unit_id, day, min_trips, max_trips, watched_slots) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (unit_id, day) DO UPDATE SET "
            "min_trips = CASE WHEN excluded.min_trips < unit_trips_daily.min_trips "
            "THEN excluded.min_trips ELSE unit_trips_daily.min_trips END, "
            "max_trips = GREATEST(unit_trips_daily.max_trips, excluded.max_trips), "
            "watched_slots = unit_trips_daily.watched_slots | excluded.watched_slots",
            [(u, day, *span) for (u, day), span in sorted(spans.items())],
        )

    # -- alarms ---------------------------------------------------------------------------

    def alarms(
        self, *, open_only: bool = False, unit_id: str = "", limit: int = 0
    ) -> list[AlarmRow]:
        """Alarms, newest first; see `fleet.store.base.Store.alarms`."""
        clauses: list[str] = []
        params: list[object] = []
        if open_only:
            clauses.append(f"a.state IN ({', '.join('?' * len(OPEN_ALARM_STATES))})")
            params += OPEN_ALARM_STATES
        if unit_id:
            clauses.append("a.unit_id = ?")
            params.append(unit_id)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        tail = ""
        if limit > 0:
            tail = " LIMIT ?"
            params.append(limit)
        rows = self._execute(
            f"SELECT {_ALARM_COLUMNS} {_ALARM_FROM}{where} ORDER BY a.raised_us DESC, "
            f"a.alarm_id DESC{tail}",
            params,
        ).fetchall()
        return [_alarm(r) for r in rows]

    def _alarm_by_id(self, alarm_id: int) -> AlarmRow | None:
        row = self._execute(
            f"SELECT {_ALARM_COLUMNS} {_ALARM_FROM} WHERE a.alarm_id = ?", (alarm_id,)
        ).fetchone()
        return None if row is None else _alarm(row)

    def alarm_action(
        self,
        alarm_id: int,
        action: str,
        by: str,
        now: dt.datetime,
        reason: str = "",
        crew: str = "",
        eta: dt.datetime | None = None,
    ) -> AlarmRow:
        """Apply one disposal step; see `fleet.store.base.Store.alarm_action`.

        Whether the event is still raised is judged in the same UPDATE that closes the
        alarm, so a CLEARED record committed meanwhile cannot slip between check and close.
        """
        if action not in ALARM_ACTIONS:
            known = ", ".join(ALARM_ACTIONS)
            raise AlarmActionError(f"unknown action {action!r}; known: {known}")
        if not by.strip():
            raise AlarmActionError(f"alarm {alarm_id}: say who ({action} needs a name)")
        if action == "dispatch":
            return self._dispatch_crew(alarm_id, by.strip(), now, reason.strip(), crew, eta)
        if crew or eta is not None:
            raise AlarmActionError(f"alarm {alarm_id}: only dispatch says who was sent and when")
        allowed, state, at_column, by_column = _ACTIONS[action]
        closing = int(state in _CLOSING)
        reason = reason.strip()
        now_us = _us(now)
        with self._transaction(durable=True):
            self._drop_history()
            marks = ", ".join("?" * len(allowed))
            found = self._execute(
                f"UPDATE alarms SET state = ?, {at_column} = ?, {by_column} = ?, "
                "close_reason = CASE WHEN ? = 1 AND cleared_us IS NULL THEN ? "
                "ELSE close_reason END "
                f"WHERE alarm_id = ? AND state IN ({marks}) "
                "AND (? = 0 OR cleared_us IS NOT NULL OR ? <> '') "
                "RETURNING unit_id, cleared_us",
                [state, now_us, by.strip(), closing, reason, alarm_id, *allowed, closing, reason],
            ).fetchone()
            if found is None:
                current = self._alarm_by_id(alarm_id)
                if current is None:
                    raise AlarmActionError(f"alarm {alarm_id} does not exist")
                if current.state not in allowed:
                    raise AlarmActionError(
                        f"alarm {alarm_id} is {current.state}; {action} needs it "
                        f"{' or '.join(allowed)}"
                    )
                raise AlarmReasonRequiredError(
                    f"alarm {alarm_id}: its {_type_name(current.type)} event is still raised "
                    f"(no CLEARED record: the passenger may still be inside); {action} needs "
                    "a reason"
                )
            if state != "on_site":
                # Acknowledged (or closed): the rescuers have it; stop the repeats.
                self._execute(
                    "UPDATE alarm_deliveries SET done = 1 WHERE alarm_id = ?", (alarm_id,)
                )
            detail: dict[str, Any] = {"alarm_id": alarm_id, "step": state, "by": by.strip()}
            if closing:
                detail["event"] = "raised" if found[1] is None else "cleared"
            self._chain_step(found[0], now_us, detail, reason)
        return self._stepped(alarm_id)

    def _chain_step(self, unit_id: str, at_us: int, detail: dict[str, Any], note: str) -> None:
        """Chain one alarm step (with the person's note, if any) and end the transaction's
        history: the step and its row change commit together."""
        if note:
            detail["reason"] = note
        self._queue_history(unit_id, at_us, "alarm", detail)
        self._flush_history()

    def _stepped(self, alarm_id: int) -> AlarmRow:
        """The alarm a step just changed (it exists: the step's UPDATE found it)."""
        result = self._alarm_by_id(alarm_id)
        assert result is not None
        return result

    def _dispatch_crew(
        self,
        alarm_id: int,
        by: str,
        now: dt.datetime,
        reason: str,
        crew: str,
        eta: dt.datetime | None,
    ) -> AlarmRow:
        """The ``dispatch`` action of `alarm_action`: stamp who was sent and their ETA on an
        acknowledged alarm and chain a ``crew_dispatched`` step (again if re-sent)."""
        crew = crew.strip()
        if not crew:
            raise AlarmActionError(f"alarm {alarm_id}: dispatch needs who was sent (crew)")
        if len(crew) > MAX_CREW_CHARS:
            raise AlarmActionError(
                f"alarm {alarm_id}: crew is longer than {MAX_CREW_CHARS} characters"
            )
        if eta is None or eta < now:
            raise AlarmActionError(f"alarm {alarm_id}: dispatch needs an ETA not before now")
        allowed, step, at_column, by_column = _DISPATCH
        now_us, eta_us = _us(now), _us(eta)
        with self._transaction(durable=True):
            self._drop_history()
            found = self._execute(
                f"UPDATE alarms SET {at_column} = ?, {by_column} = ?, crew = ?, crew_eta_us = ? "
                "WHERE alarm_id = ? AND state = ? RETURNING unit_id",
                (now_us, by, crew, eta_us, alarm_id, allowed[0]),
            ).fetchone()
            if found is None:
                current = self._alarm_by_id(alarm_id)
                if current is None:
                    raise AlarmActionError(f"alarm {alarm_id} does not exist")
                raise AlarmActionError(
                    f"alarm {alarm_id} is {current.state}; dispatch needs it {allowed[0]}"
                )
            detail: dict[str, Any] = {
                "alarm_id": alarm_id,
                "step": step,
                "by": by,
                "crew": crew,
                "eta": iso_us(eta_us),
            }
            self._chain_step(found[0], now_us, detail, reason)
        return self._stepped(alarm_id)

    def claim_deliveries(self, plan: DispatchPlan, now: dt.datetime) -> list[Delivery]:
        """Create, escalate and lease due sends; see `Store.claim_deliveries`."""
        now_us = _us(now)
        with self._transaction():
            self._drop_history()
            self._many(
                "INSERT INTO alarm_deliveries (alarm_id, target, next_us) "
                "SELECT alarm_id, ?, ? FROM alarms WHERE state = 'raised' ON CONFLICT DO NOTHING",
                [(t, now_us) for t in plan.targets],
            )
            if plan.escalation_targets:
                overdue = self._execute(
                    "UPDATE alarms SET escalated_us = ? WHERE state IN ('raised', 'dispatched') "
                    "AND escalated_us IS NULL AND raised_us <= ? RETURNING alarm_id, unit_id",
                    (now_us, now_us - round(plan.escalate_after_s * 1e6)),
                ).fetchall()
                overdue.sort()
                self._many(
                    "INSERT INTO alarm_deliveries (alarm_id, target, escalation, next_us) "
                    "VALUES (?, ?, 1, ?) ON CONFLICT DO NOTHING",
                    [(a, t, now_us) for a, _ in overdue for t in plan.escalation_targets],
                )
                for alarm_id, unit_id in overdue:
                    detail = {
                        "alarm_id": int(alarm_id),
                        "step": "escalated",
                        "targets": list(plan.escalation_targets),
                    }
                    self._queue_history(unit_id, now_us, "alarm", detail)
            claimed = self._execute(
                "UPDATE alarm_deliveries SET next_us = ?, attempts = attempts + 1 "
                "WHERE done = 0 AND next_us <= ? RETURNING alarm_id, target, attempts, escalation",
                (now_us + round(plan.lease_s * 1e6), now_us),
            ).fetchall()
            self._flush_history()
        alarms = {a.alarm_id: a for a in self._alarms_by_ids(sorted({int(c[0]) for c in claimed}))}
        return [
            Delivery(alarms[int(a)], str(t), int(n), bool(e))
            for a, t, n, e in sorted(claimed)
            if int(a) in alarms
        ]

    def _alarms_by_ids(self, ids: Sequence[int]) -> list[AlarmRow]:
        found: list[AlarmRow] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            rows = self._execute(
                f"SELECT {_ALARM_COLUMNS} {_ALARM_FROM} WHERE a.alarm_id IN ({marks})", chunk
            ).fetchall()
            found += [_alarm(r) for r in rows]
        return found

    def delivery_done(
        self, delivery: Delivery, error: str, now: dt.datetime, next_at: dt.datetime | None
    ) -> None:
        """Record the outcome of one send; see `Store.delivery_done`."""
        now_us = _us(now)
        alarm_id = delivery.alarm.alarm_id
        next_us = _us(next_at) if next_at is not None else now_us
        with self._transaction(durable=not error):
            self._drop_history()
            self._execute(
                "UPDATE alarm_deliveries SET next_us = ?, last_error = ?, done = CASE WHEN ? = 1 "
                "THEN 1 ELSE done END, delivered_us = CASE WHEN ? = '' THEN "
                "COALESCE(delivered_us, ?) ELSE delivered_us END "
                "WHERE alarm_id = ? AND target = ? AND done = 0",
                (next_us, error, int(next_at is None), error, now_us, alarm_id, delivery.target),
            )
            if not error:
                found = self._execute(
                    "UPDATE alarms SET state = 'dispatched', dispatched_us = ? "
                    "WHERE alarm_id = ? AND state = 'raised' RETURNING unit_id",
                    (now_us, alarm_id),
                ).fetchone()
                if found is not None:
                    detail = {"alarm_id": alarm_id, "step": "dispatched", "target": delivery.target}
                    self._queue_history(found[0], now_us, "alarm", detail)
            self._flush_history()

    def next_dispatch_at(self, plan: DispatchPlan) -> dt.datetime | None:
        """The earliest pending send or escalation; see `Store.next_dispatch_at`."""
        times: list[int] = []
        row = self._execute("SELECT MIN(next_us) FROM alarm_deliveries WHERE done = 0").fetchone()
        if row and row[0] is not None:
            times.append(int(row[0]))
        if plan.escalation_targets:
            row = self._execute(
                "SELECT MIN(raised_us) FROM alarms WHERE state IN ('raised', 'dispatched') "
                "AND escalated_us IS NULL"
            ).fetchone()
            if row and row[0] is not None:
                times.append(int(row[0]) + round(plan.escalate_after_s * 1e6))
        if (
            plan.targets
            and self._execute(
                "SELECT 1 FROM alarms a WHERE state = 'raised' AND NOT EXISTS (SELECT 1 FROM "
                "alarm_deliveries d WHERE d.alarm_id = a.alarm_id) LIMIT 1"
            ).fetchone()
        ):
            return _EPOCH  # raised alarms may lack delivery rows: a round is due now
        return _at(min(times)) if times else None

    # -- reads for verification and reports -----------------------------------------------

    def history(self, unit_id: str = "") -> tuple[list[HistoryRow], list[Head]]:
        """Rows by unit and seq, and the heads; see `Store.history`."""
        where, params = ("WHERE unit_id = ? ", [unit_id]) if unit_id else ("", [])
        rows = self._execute(
            "SELECT id, unit_id, seq, at_us, kind, detail, prev_hash, hash FROM unit_history "
            f"{where}ORDER BY unit_id, seq, id",
            params,
        ).fetchall()
        heads = self._execute(
            f"SELECT unit_id, seq, hash FROM unit_history_head {where}ORDER BY unit_id", params
        ).fetchall()
        return (
            [
                HistoryRow(int(r[0]), r[1], int(r[2]), int(r[3]), r[4], r[5], r[6], r[7])
                for r in rows
            ],
            [Head(h[0], int(h[1]), h[2]) for h in heads],
        )

    def chained_rows(self, unit_id: str = "") -> tuple[list[EventFact], list[AlarmFact]]:
        """The events and alarms rows (of ``unit_id`` unless "") that the chains record;
        see `Store.chained_rows`."""
        where, params = ("WHERE unit_id = ? ", [unit_id]) if unit_id else ("", [])
        events = [
            _event_fact(r)
            for r in self._execute(
                f"SELECT {EVENT_COLUMNS} FROM events {where}ORDER BY unit_id, agent_id, seq",
                params,
            ).fetchall()
        ]
        columns = (*ALARM_COLUMNS, "close_reason")
        alarms = [
            AlarmFact(
                int(r[0]), r[1], r[2], int(r[3]), r[4], dict(zip(columns, r[5:], strict=True))
            )
            for r in self._execute(
                f"SELECT alarm_id, unit_id, event_id, type, state, {', '.join(columns)} "
                f"FROM alarms {where}ORDER BY alarm_id",
                params,
            ).fetchall()
        ]
        return events, alarms

    def history_hashes(self, points: Sequence[tuple[str, int]]) -> dict[tuple[str, int], str]:
        """The stored hash of each (unit_id, seq) of ``points`` that has a row; see
        `Store.history_hashes`."""
        found = self._set_based(
            "SELECT h.unit_id, h.seq, h.hash FROM unit_history h JOIN {rows} "
            "ON h.unit_id = v.column1 AND h.seq = v.column2",
            sorted(set(points)),
            ("text", "bigint"),
        )
        return {(str(r[0]), int(r[1])): str(r[2]) for r in found}

    def history_heads(self) -> list[Head]:
        """Every unit's chain head; see `Store.history_heads`."""
        rows = self._execute(
            "SELECT unit_id, seq, hash FROM unit_history_head ORDER BY unit_id"
        ).fetchall()
        return [Head(h[0], int(h[1]), h[2]) for h in rows]

    def record_history_check(self, check: HistoryCheck) -> None:
        """Keep one verification's outcome; see `Store.record_history_check`."""
        with self._transaction(durable=True):
            self._execute(
                "INSERT INTO history_checks (checked_us, source, checkpoint_file, "
                "checkpoint_written_us, units, problems, summary) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    _us(check.checked),
                    check.source,
                    check.checkpoint_file,
                    None if check.checkpoint_written is None else _us(check.checkpoint_written),
                    check.units,
                    check.problems,
                    check.summary,
                ),
            )

    def last_history_check(self) -> HistoryCheck | None:
        """The newest kept verification; see `Store.last_history_check`."""
        row = self._execute(
            "SELECT checked_us, source, checkpoint_file, checkpoint_written_us, units, "
            "problems, summary FROM history_checks ORDER BY checked_us DESC, id DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        return HistoryCheck(
            checked=_at(row[0]) or _EPOCH,
            source=row[1],
            checkpoint_file=row[2],
            checkpoint_written=_at(row[3]),
            units=int(row[4]),
            problems=int(row[5]),
            summary=row[6],
        )

    def fault_events(self, since: dt.datetime, until: dt.datetime) -> list[FaultEvent]:
        """RAISED events in [since, until); see `Store.fault_events`."""
        rows = self._execute(
            "SELECT unit_id, type, time_us, onset_us, event_id FROM events "
            "WHERE phase = ? AND time_us >= ? AND time_us < ? ORDER BY time_us",
            (records_pb2.PHASE_RAISED, _us(since), _us(until)),
        ).fetchall()
        return [FaultEvent(r[0], int(r[1]), _at(r[2]) or _EPOCH, _at(r[3]), r[4]) for r in rows]

    def trip_spans(self, since: dt.date, until: dt.date) -> list[TripSpan]:
        """Daily trip counter spans; see `Store.trip_spans`."""
        rows = self._execute(
            "SELECT unit_id, day, min_trips, max_trips, watched_slots FROM unit_trips_daily "
            "WHERE day >= ? AND day < ? ORDER BY unit_id, day",
            (since.isoformat(), until.isoformat()),
        ).fetchall()
        return [
            TripSpan(r[0], dt.date.fromisoformat(r[1]), int(r[2]), int(r[3]), int(r[4]))
            for r in rows
        ]

    def state_hours(self, unit_id: str, since: dt.datetime, until: dt.datetime) -> list[StateHour]:
        """Folded car-state hours of one unit; see `Store.state_hours`."""
        return state_hours(self, unit_id, _us(since), _us(until))

    @batches.snapshot_read
    def record_times(
        self, unit_id: str, agent_id: str, since: dt.datetime, until: dt.datetime
    ) -> list[dt.datetime]:
        """Record times of one unit; see `Store.record_times`. Scans the agent's records
        (their key is (agent_id, seq)): an audit's read, no index kept for it on ingest."""
        rows = self._execute(
            "SELECT time_us FROM records WHERE agent_id = ? AND unit_id = ? AND time_us >= ? "
            "AND time_us < ? ORDER BY time_us",
            (agent_id, unit_id, _us(since), _us(until)),
        ).fetchall()
        # The older part of the span lies in batches (fleet.store.batches). Sorted, not
        # put first: after a clock set back, compaction (which stops at the agent's first
        # record past its cutoff) leaves hot rows older than batched ones.
        span = (_us(since), _us(until))
        times = [r[0] for r in batches.rows_in(self, unit_id, None, *span, agent_id=agent_id)]
        times = sorted(times + [int(r[0]) for r in rows])
        return [_EPOCH + dt.timedelta(microseconds=t) for t in times]

    def unit_events(self, unit_id: str, since: dt.datetime, until: dt.datetime) -> list[EventRow]:
        """Events of one unit touching [since, until); see `Store.unit_events`."""
        rows = self._execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE unit_id = ? AND ((time_us >= ? "
            "AND time_us < ?) OR (onset_us >= ? AND onset_us < ?)) ORDER BY time_us, seq",
            (unit_id, _us(since), _us(until), _us(since), _us(until)),
        ).fetchall()
        return [event_of_row(r) for r in rows]


def _event_fact(row: Sequence[Any]) -> EventFact:
    """The `EventFact` of an events row as ingest writes it and `EVENT_COLUMNS` selects it
    (``committed_us``, the fleet's own stamp, is not part of the chained record)."""
    return EventFact(
        agent_id=row[0],
        seq=int(row[1]),
        unit_id=row[2],
        time_us=int(row[3]),
        event_id=row[4],
        type=int(row[5]),
        phase=int(row[6]),
        onset_us=None if row[7] is None else int(row[7]),
        floor=None if row[8] is None else int(row[8]),
        reason=row[9],
        gb_code=None if row[11] is None else int(row[11]),
        at_landing=None if row[12] is None else bool(row[12]),
        codes=True,
    )


def _register_detail(entry: RegisterEntry) -> dict[str, Any]:
    return {
        "building": entry.building,
        "address": entry.address,
        "street": entry.street,
        "use_unit": entry.use_unit,
        "contractor": entry.contractor,
        "install_date": entry.install_date.isoformat() if entry.install_date else None,
        "rated_speed_m_s": entry.rated_speed_m_s,
        "rated_load_kg": entry.rated_load_kg,
        "landings": entry.landings,
        "controller_model": entry.controller_model,
        "car_in_group": entry.car_in_group,
    }


def _register_detail_of_row(row: Sequence[Any]) -> dict[str, Any]:
    names = (
        "building",
        "address",
        "street",
        "use_unit",
        "contractor",
        "install_date",
        "rated_speed_m_s",
        "rated_load_kg",
        "landings",
        "controller_model",
        "car_in_group",
    )
    detail = dict(zip(names, row, strict=True))
    if detail["rated_speed_m_s"] is not None:
        detail["rated_speed_m_s"] = float(detail["rated_speed_m_s"])
    return detail
