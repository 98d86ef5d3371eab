"""The store logic both backends share: one SQL text, two drivers.

Statements are written once with ``?`` placeholders and ``GREATEST``; each backend says how
to run them (`SqlStore._sql` translates, `SqlStore._run_many` runs one statement over many
parameter rows and returns each row's RETURNING result, `SqlStore._rows` binds many rows
as one relation). Writes work in bulk per phase: the ingest path runs each phase as one
set-based statement over the whole group of batches (`SqlStore._set_based`: records,
units seen, agents' committed seqs), because a statement per record or per unit cost more
than everything else in the fleet at 10,000 agents (SQLite: ~10 µs of statement overhead
each; PostgreSQL: a round trip, or one execution per row even when pipelined).

Times are integer microseconds since the Unix epoch (UTC) in both backends. ``units.status``
is the coverage status the fleet last *recorded* (for the history); queries compute the
live status from ``last_seen_us`` and the clock (see `fleet.units.coverage`). ``prev_*`` columns
are scratch space: an UPDATE copies the old value there so that RETURNING can report the
change without a read-then-write race between two fleets on one database.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from google.protobuf import timestamp_pb2

from fleet.store.agents import AgentRegistryStore
from fleet.store.base import (
    BatchOp,
    CommitResult,
    ControllerIdentity,
    CoverageChange,
    EventQuery,
    EventRow,
    FirmwareChange,
    HeartbeatOp,
    HelloOp,
    RegisterEntry,
    UnitClaim,
    UnitQuery,
    UnitRow,
    WriteOp,
)
from fleet.store.batches import nearest_rows, rows_in, snapshot_read
from fleet.store.evidence import EvidenceStore
from fleet.store.lifecycle import EVENT_COLUMNS, EVENT_MARKS, LifecycleStore, event_of_row
from fleet.store.maintenance import HEALTH_TERM, MaintenanceStore
from fleet.store.publication import PublicationStore
from fleet.store.reasons import params_text
from fleet.store.retention import counters_readings
from fleet.store.users import UserStore
from fleet.taxonomy import gb_code
from protos.liftwatch.v1 import records_pb2

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

# The status a unit gets when it is heard of: blind while its controller link is down.
HEARD_STATUS = "CASE WHEN link_up = 0 THEN 'blind' ELSE 'online' END"
MODEL_EXPR = "CASE WHEN model <> '' THEN model ELSE registered_model END"

UNIT_COLUMNS = (
    "unit_id, registered, building, address, street, use_unit, contractor, install_date, "
    "rated_speed_m_s, rated_load_kg, landings, registered_model, car_in_group, agent_id, "
    "agent_version, vendor, model, firmware, serial, profile, last_seen_us, link_up, "
    "detectable, undetectable"
)
_CONTROLLER_FIELDS = ("vendor", "model", "firmware", "serial", "profile")

# The history tables, the same DDL in both backends' migrations but for the ``{id}``
# column type, which keeps rows of one moment in the order they were written.
HISTORY_TABLES = """
CREATE TABLE coverage_history (
    id          {id},
    unit_id     TEXT NOT NULL,
    at_us       BIGINT NOT NULL,
    old_status  TEXT NOT NULL,
    new_status  TEXT NOT NULL,
    cause       TEXT NOT NULL
);
CREATE INDEX coverage_history_unit ON coverage_history (unit_id, at_us);
CREATE INDEX coverage_history_at ON coverage_history (at_us);
CREATE TABLE firmware_history (
    id                 {id},
    unit_id            TEXT NOT NULL,
    at_us              BIGINT NOT NULL,
    agent_id           TEXT NOT NULL,
    model              TEXT NOT NULL,
    old_firmware       TEXT NOT NULL,
    new_firmware       TEXT NOT NULL,
    old_agent_version  TEXT NOT NULL,
    new_agent_version  TEXT NOT NULL
);
CREATE INDEX firmware_history_unit ON firmware_history (unit_id, at_us);
CREATE INDEX firmware_history_at ON firmware_history (at_us);
"""


def to_us(moment: dt.datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> dt.datetime:
    """The aware UTC datetime of ``us`` microseconds since the epoch."""
    return EPOCH + dt.timedelta(microseconds=us)


def timestamp_us(ts: timestamp_pb2.Timestamp) -> int:
    """Microseconds since the epoch of a protobuf Timestamp."""
    return int(ts.seconds) * 1_000_000 + int(ts.nanos) // 1000


# Record kinds whose group is fsynced before it is acked: safety events, and the
# evidence that goes with them (issue 16).
DURABLE_KINDS = frozenset({"event", "evidence"})
# Record kinds the dashboard reads per unit over time (counters trend, link health).
HEALTH_KINDS = ("counters", "link_status")
# Migration "dashboard" (both backends): a partial index over the rare health records
# only, so that a unit page reads its counter history without the car-state bulk
# paying for an index on every insert.
RECORDS_HEALTH_INDEX = (
    "CREATE INDEX records_health ON records (unit_id, kind, time_us) "
    "WHERE kind IN ('counters', 'link_status')"
)


class SqlStore(
    LifecycleStore,
    AgentRegistryStore,
    UserStore,
    PublicationStore,
    EvidenceStore,
    MaintenanceStore,
):
    """The `fleet.store.base.Store` logic over a DB-API connection; subclasses supply the
    driver specifics. Use from one thread only."""

    def __init__(self, conn: Any, description: str) -> None:
        self._conn = conn
        self._description = description

    # -- driver hooks -------------------------------------------------------------------

    def _sql(self, text: str) -> str:
        """``text`` in this backend's dialect (placeholders, function names)."""
        raise NotImplementedError

    def _transaction(self, *, durable: bool = False) -> AbstractContextManager[None]:
        """One write transaction; ``durable`` asks for an fsync before it returns."""
        raise NotImplementedError

    def _lock_agent(self, agent_id: str) -> None:
        """Inside a write transaction, lock ``agent_id``'s row of ``agents`` until it ends
        (PostgreSQL: ingest's write locks it first too, so the two take turns; SQLite
        has one writer at a time and needs nothing)."""

    def _snapshot(self) -> AbstractContextManager[None]:
        """One consistent view for several reads (a reader merging the raw rows with the
        batches compaction moves them into); inside a transaction, that one."""
        raise NotImplementedError

    def _batch_partition(self, hour_us: int) -> None:
        """Make sure ``record_batches`` can take a batch of ``hour_us`` (PostgreSQL: the
        day's partition; SQLite has none), inside the caller's transaction."""

    def _drop_batch_partitions(self, cutoff_us: int, fence: Callable[[], bool]) -> int:
        """Drop the emptied ``record_batches`` partitions of days wholly before
        ``cutoff_us`` (PostgreSQL), each after ``fence`` (run in a transaction) says this
        instance still holds the retention lease; how many. SQLite has no partitions: 0."""
        return 0

    def _run_many(self, text: str, rows: Sequence[Sequence[object]]) -> list[list[tuple[Any, ...]]]:
        """Run statement ``text`` once per parameter row; each row's RETURNING rows."""
        raise NotImplementedError

    # Rows `_set_based` binds per statement (SQLite binds each value as a parameter).
    _rows_per_statement = 500

    def _rows(
        self, rows: Sequence[Sequence[object]], types: Sequence[str]
    ) -> tuple[str, list[object]]:
        """A FROM item ``v`` whose columns ``column1`` .. ``columnN`` hold ``rows`` (``types``:
        each column's SQL type, for backends that bind arrays), and its parameters."""
        raise NotImplementedError

    def _insert_records(
        self, rows: Sequence[tuple[str, int, str, int, str, bytes]]
    ) -> set[tuple[str, int]]:
        """Insert record rows, skipping stored (agent_id, seq); returns those inserted."""
        # A seq retention has folded (and deleted) was stored once already: skipped too,
        # so a replay from an agent's old outbox is acked as a duplicate, not stored again
        # behind the retention cursor (fleet.store.retention).
        found = self._set_based(
            "INSERT INTO records (agent_id, seq, unit_id, time_us, kind, payload) "
            "SELECT * FROM {rows} WHERE NOT EXISTS (SELECT 1 FROM retention_agents r "
            "WHERE r.agent_id = v.column1 AND r.seq >= v.column2) "
            "ON CONFLICT DO NOTHING RETURNING agent_id, seq",
            rows,
            ("text", "bigint", "text", "bigint", "text", "bytea"),
        )
        return {(str(r[0]), int(r[1])) for r in found}

    # -- helpers ------------------------------------------------------------------------

    def _execute(self, text: str, params: Sequence[object] = ()) -> Any:
        return self._conn.execute(self._sql(text), params)

    def _many(self, text: str, rows: Sequence[Sequence[object]]) -> None:
        if rows:
            self._conn.cursor().executemany(self._sql(text), rows)

    def _set_based(
        self, text: str, rows: Sequence[Sequence[object]], types: Sequence[str]
    ) -> list[tuple[Any, ...]]:
        """Run ``text`` over all of ``rows`` at once, ``{rows}`` in it standing for the FROM
        item ``v`` of `_rows` (a few statements for very many rows); every RETURNING row.

        An UPDATE ... FROM applies one joined row per target row: the rows' keys must be
        unique (see `rounds`)."""
        found: list[tuple[Any, ...]] = []
        step = self._rows_per_statement
        for start in range(0, len(rows), step):
            relation, params = self._rows(rows[start : start + step], types)
            cursor = self._execute(text.replace("{rows}", relation), params)
            if cursor.description is not None:
                found += cursor.fetchall()
        return found

    @property
    def description(self) -> str:
        """Where the data lives, for logs."""
        return self._description

    # -- writes -------------------------------------------------------------------------

    def write(self, ops: Sequence[WriteOp], now: dt.datetime) -> list[CommitResult | None]:
        """Apply ``ops`` in one transaction; see `fleet.store.base.Store.write`."""
        now_us = to_us(now)
        durable = any(
            isinstance(op, BatchOp)
            and any(r.WhichOneof("payload") in DURABLE_KINDS for r in op.records)
            for op in ops
        )
        with self._transaction(durable=durable):
            self._drop_history()
            hellos = [op for op in ops if isinstance(op, HelloOp)]
            batches = [op for op in ops if isinstance(op, BatchOp)]
            beats = [op for op in ops if isinstance(op, HeartbeatOp)]
            self._apply_hellos(hellos, now_us)
            by_batch = self._apply_batches(batches, now_us)
            self._apply_heartbeats(beats, now_us)
            # Sorted: two fleets on one database then lock agent rows in the same order.
            agents = sorted({op.agent_id for op in ops if not isinstance(op, HeartbeatOp)})
            committed = self._committed(agents)
            self._flush_history()  # the lifecycle history, in this same transaction
        positions = [i for i, op in enumerate(ops) if isinstance(op, BatchOp)]
        inserted = {positions[b]: count for b, count in by_batch.items()}
        results: list[CommitResult | None] = []
        for index, op in enumerate(ops):
            if isinstance(op, HeartbeatOp):
                results.append(None)
            else:
                results.append(CommitResult(committed[op.agent_id], inserted.get(index, 0)))
        return results

    def _committed(self, agents: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = dict.fromkeys(agents, 0)
        for start in range(0, len(agents), 500):
            chunk = agents[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            for agent_id, seq in self._execute(
                f"SELECT agent_id, committed_seq FROM agents WHERE agent_id IN ({marks})", chunk
            ).fetchall():
                found[str(agent_id)] = int(seq)
        return found

    def _apply_hellos(self, hellos: Sequence[HelloOp], now_us: int) -> None:
        if not hellos:
            return
        # The last Hello of an agent wins, as it would applied one after the other.
        versions = {h.agent_id: h.agent_version for h in hellos}
        self._set_based(
            "INSERT INTO agents (agent_id, agent_version, last_seen_us) "
            "SELECT column1, column2, column3 FROM {rows} WHERE true "
            "ON CONFLICT (agent_id) DO UPDATE SET agent_version = excluded.agent_version, "
            "last_seen_us = excluded.last_seen_us",
            [(a, v, now_us) for a, v in sorted(versions.items())],
            ("text", "text", "bigint"),
        )
        claims = [(h, c) for h in hellos for c in h.units]
        self._ensure_units(sorted({c.unit_id for _, c in claims}))
        # Hello carries no time and often only configured fields (model, profile): it fills
        # in until a ControllerInfo record (read from the controller) has arrived, and an
        # empty field (not read yet) keeps what is known. Columns: agent, version, now,
        # the controller fields (v.column4 ..), the unit.
        sets = ", ".join(
            f"{f} = CASE WHEN controller_us IS NULL AND v.column{n} <> '' "
            f"THEN v.column{n} ELSE {f} END"
            for n, f in enumerate(_CONTROLLER_FIELDS, start=4)
        )
        # Then what the unit's profile lets the agent see (each Hello says it afresh: a
        # new profile changes it), and the unit last.
        seeing = 4 + len(_CONTROLLER_FIELDS)
        unit_column = f"column{seeing + 2}"
        rows = [
            (
                hello.agent_id,
                hello.agent_version,
                now_us,
                *(getattr(claim.controller, f) for f in _CONTROLLER_FIELDS),
                event_type_list(claim.detectable),
                event_type_list(claim.undetectable),
                claim.unit_id,
            )
            for hello, claim in claims
        ]
        types = ("text", "text", "bigint", *["text"] * (len(_CONTROLLER_FIELDS) + 3))
        returned: list[tuple[Any, ...]] = []
        for chunk in rounds(rows, len(rows[0]) - 1) if rows else []:
            found = self._set_based(
                "UPDATE units SET prev_status = status, prev_firmware = firmware, "
                "prev_agent_version = agent_version, agent_id = v.column1, "
                "agent_version = v.column2, "
                "last_seen_us = GREATEST(COALESCE(last_seen_us, 0), v.column3), "
                f"{sets}, detectable = v.column{seeing}, undetectable = v.column{seeing + 1}, "
                f"status = {HEARD_STATUS} FROM {{rows}} WHERE unit_id = v.{unit_column} "
                f"RETURNING unit_id, prev_status, status, prev_firmware, firmware, "
                f"prev_agent_version, agent_version, agent_id, {MODEL_EXPR}",
                chunk,
                types,
            )
            # In the order of the claims, as statement by statement.
            order = {str(row[-1]): n for n, row in enumerate(chunk)}
            returned += sorted(found, key=lambda r: order[str(r[0])])
        self._log_coverage([(r[0], r[1], r[2]) for r in returned], now_us, "hello")
        self._log_firmware([r[0:1] + r[3:] for r in returned], now_us)

    def _apply_batches(self, batches: Sequence[BatchOp], now_us: int) -> dict[int, int]:
        """Store the records of ``batches``; returns records newly stored per batch index."""
        if not batches:
            return {}
        self._set_based(
            "INSERT INTO agents (agent_id, last_seen_us) SELECT column1, column2 FROM {rows} "
            "WHERE true ON CONFLICT (agent_id) DO UPDATE SET last_seen_us = excluded.last_seen_us",
            sorted({(b.agent_id, now_us) for b in batches}),
            ("text", "bigint"),
        )
        rows: list[tuple[str, int, str, int, str, bytes]] = []
        owners: list[int] = []
        kept: list[records_pb2.Record] = []  # the record of each row
        keys: set[tuple[str, int]] = set()
        for index, batch in enumerate(batches):
            for record in batch.records:
                key = (batch.agent_id, int(record.seq))
                if key in keys:
                    continue  # the same record twice in one group (a reconnect's replay)
                keys.add(key)
                owners.append(index)
                kept.append(record)
                rows.append(
                    (
                        batch.agent_id,
                        int(record.seq),
                        record.unit_id,
                        timestamp_us(record.time),
                        record.WhichOneof("payload") or "",
                        record.SerializeToString(deterministic=True),
                    )
                )
        new = self._insert_records(rows)
        self._ensure_units(sorted({row[2] for row in rows if (row[0], row[1]) in new}))
        inserted: dict[int, int] = defaultdict(int)
        highest: dict[str, int] = {}
        seen: dict[str, str] = {}
        events: list[tuple[object, ...]] = []
        counters: list[tuple[str, int, int]] = []
        links: list[tuple[object, ...]] = []
        infos: list[records_pb2.Record] = []
        evidence: list[tuple[str, records_pb2.Record, int]] = []
        for owner, row, record in zip(owners, rows, kept, strict=True):
            if (row[0], row[1]) not in new:
                continue  # a replay: already stored, and already applied to units
            inserted[owner] += 1
            highest[row[0]] = max(highest.get(row[0], 0), row[1])
            seen[row[2]] = row[0]
            kind = row[4]
            if kind == "event":
                events.append(_event_row(row[0], record, row[3], now_us))
            elif kind == "controller_info":
                infos.append(record)
            elif kind == "evidence":
                evidence.append((row[0], record, row[3]))
            elif kind == "link_status":
                links.append((int(record.link_status.up), row[3], record.unit_id, row[3]))
            elif kind == "counters":
                counters.append((record.unit_id, row[3], int(record.counters.trips)))
        # Late arrivals of older seqs must not overwrite a newer link state.
        self._many(
            "UPDATE units SET link_up = ?, link_us = ? WHERE unit_id = ? "
            "AND (link_us IS NULL OR link_us <= ?)",
            links,
        )
        self._many(
            f"INSERT INTO events ({EVENT_COLUMNS}) VALUES ({EVENT_MARKS}) ON CONFLICT DO NOTHING",
            events,
        )
        self._on_events(events)  # history entries, alarms of alarm types
        self._on_evidence(evidence, now_us)  # after its event's entry (fleet.store.evidence)
        self._on_counters(counters)  # daily trip spans for the fault-rate report
        # After the link states (a unit whose link is down is heard of as blind), before
        # the firmware (its history names the agent that reported it).
        found = self._set_based(
            "UPDATE units SET prev_status = status, agent_id = v.column2, "
            "last_seen_us = GREATEST(COALESCE(last_seen_us, 0), v.column3), "
            f"status = {HEARD_STATUS} FROM {{rows}} WHERE unit_id = v.column1 "
            "RETURNING unit_id, prev_status, status",
            [(u, seen[u], now_us) for u in sorted(seen)],
            ("text", "text", "bigint"),
        )
        self._log_coverage(sorted(found), now_us, "record")
        for record in infos:
            self._apply_controller_info(record, now_us)
        self._set_based(
            "UPDATE agents SET committed_seq = GREATEST(committed_seq, v.column2) "
            "FROM {rows} WHERE agent_id = v.column1",
            sorted(highest.items()),
            ("text", "bigint"),
        )
        return dict(inserted)

    def _ensure_units(self, unit_ids: Sequence[str]) -> None:
        self._set_based(
            "INSERT INTO units (unit_id) SELECT column1 FROM {rows} WHERE true "
            "ON CONFLICT DO NOTHING",
            [(u,) for u in unit_ids],
            ("text",),
        )

    def _apply_controller_info(self, record: records_pb2.Record, now_us: int) -> None:
        # ControllerInfo records are read from the controller and timestamped: the newest
        # wins, so a replayed old one cannot roll back a firmware update.
        info = record.controller_info
        known = {f: getattr(info, f) for f in _CONTROLLER_FIELDS if getattr(info, f)}
        if not known:
            return
        time_us = timestamp_us(record.time)
        assignments = ", ".join(f"{column} = ?" for column in known)
        found = self._execute(
            "UPDATE units SET prev_firmware = firmware, prev_agent_version = agent_version, "
            f"{assignments}, controller_us = ? WHERE unit_id = ? "
            "AND (controller_us IS NULL OR controller_us <= ?) "
            f"RETURNING unit_id, prev_firmware, firmware, prev_agent_version, agent_version, "
            f"agent_id, {MODEL_EXPR}",
            [*known.values(), time_us, record.unit_id, time_us],
        ).fetchall()
        self._log_firmware(found, now_us)

    def _apply_heartbeats(self, beats: Sequence[HeartbeatOp], now_us: int) -> None:
        if not beats:
            return
        rows = [(a, now_us) for a in sorted({b.agent_id for b in beats})]
        self._set_based(
            "UPDATE agents SET last_seen_us = GREATEST(COALESCE(last_seen_us, 0), v.column2) "
            "FROM {rows} WHERE agent_id = v.column1",
            rows,
            ("text", "bigint"),
        )
        found = self._set_based(
            "UPDATE units SET prev_status = status, "
            "last_seen_us = GREATEST(COALESCE(last_seen_us, 0), v.column2), "
            f"status = {HEARD_STATUS} FROM {{rows}} WHERE agent_id = v.column1 "
            "RETURNING unit_id, prev_status, status",
            rows,
            ("text", "bigint"),
        )
        self._log_coverage(sorted(found), now_us, "heartbeat")

    def _log_coverage(self, changes: Sequence[Sequence[Any]], at_us: int, cause: str) -> None:
        rows = [(c[0], at_us, c[1], c[2], cause) for c in changes if c[1] != c[2]]
        self._many(
            "INSERT INTO coverage_history (unit_id, at_us, old_status, new_status, cause) "
            "VALUES (?, ?, ?, ?, ?)",
            rows,
        )
        self._history_coverage(rows)

    def _log_firmware(self, changes: Sequence[Sequence[Any]], at_us: int) -> None:
        """Rows of (unit_id, old fw, new fw, old agent version, new, agent_id, model)."""
        rows = [
            (c[0], at_us, c[5], c[6], c[1], c[2], c[3], c[4])
            for c in changes
            if c[1] != c[2] or c[3] != c[4]
        ]
        self._many(
            "INSERT INTO firmware_history (unit_id, at_us, agent_id, model, old_firmware, "
            "new_firmware, old_agent_version, new_agent_version) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        self._history_firmware(rows)

    def sweep(
        self, now: dt.datetime, stale_after_s: float, offline_after_s: float
    ) -> list[CoverageChange]:
        """Record online/blind -> stale -> offline; see `fleet.store.base.Store.sweep`."""
        now_us = to_us(now)
        changes: list[CoverageChange] = []
        with self._transaction():
            self._drop_history()
            # Offline first, so a unit silent past both thresholds goes straight there.
            for status, old, age_s in (
                ("offline", ("online", "blind", "stale"), offline_after_s),
                ("stale", ("online", "blind"), stale_after_s),
            ):
                marks = ", ".join("?" * len(old))
                rows = self._execute(
                    "UPDATE units SET prev_status = status, status = ? "
                    f"WHERE status IN ({marks}) AND last_seen_us <= ? "
                    "RETURNING unit_id, prev_status, status",
                    [status, *old, now_us - round(age_s * 1e6)],
                ).fetchall()
                rows.sort()
                self._log_coverage(rows, now_us, "sweep")
                changes += [CoverageChange(r[0], now, r[1], r[2], "sweep") for r in rows]
            self._flush_history()
        return changes

    def upsert_register(
        self, entries: Sequence[RegisterEntry], now: dt.datetime | None = None
    ) -> int:
        """Insert or update register entries in one transaction; returns how many.

        New and changed entries go into their units' lifecycle history, stamped ``now``
        (default: the wall clock).
        """
        at_us = to_us(now or dt.datetime.now(dt.UTC))
        with self._transaction():
            self._drop_history()
            self._history_register(entries, at_us)
            self._execute("INSERT INTO register_changes (changed_us) VALUES (?)", (at_us,))
            self._many(
                "INSERT INTO units (unit_id, registered, building, address, street, use_unit, "
                "contractor, install_date, rated_speed_m_s, rated_load_kg, landings, "
                "registered_model, car_in_group) VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (unit_id) DO UPDATE SET registered = 1, "
                "building = excluded.building, address = excluded.address, "
                "street = excluded.street, use_unit = excluded.use_unit, "
                "contractor = excluded.contractor, install_date = excluded.install_date, "
                "rated_speed_m_s = excluded.rated_speed_m_s, "
                "rated_load_kg = excluded.rated_load_kg, landings = excluded.landings, "
                "registered_model = excluded.registered_model, "
                "car_in_group = excluded.car_in_group",
                [
                    (
                        e.unit_id,
                        e.building,
                        e.address,
                        e.street,
                        e.use_unit,
                        e.contractor,
                        e.install_date.isoformat() if e.install_date else None,
                        e.rated_speed_m_s,
                        e.rated_load_kg,
                        e.landings,
                        e.controller_model,
                        e.car_in_group,
                    )
                    for e in entries
                ],
            )
            self._flush_history()
        return len(entries)

    # -- the single-op conveniences of the Store protocol --------------------------------

    def register_hello(
        self, agent_id: str, agent_version: str, units: Sequence[UnitClaim], now: dt.datetime
    ) -> None:
        """Record an agent's Hello; see `fleet.store.base.Store.register_hello`."""
        self.write([HelloOp(agent_id, agent_version, tuple(units))], now)

    def commit_batch(
        self, agent_id: str, records: Sequence[records_pb2.Record], now: dt.datetime
    ) -> CommitResult:
        """Store a batch idempotently; see `fleet.store.base.Store.commit_batch`."""
        result = self.write([BatchOp(agent_id, tuple(records))], now)[0]
        assert result is not None
        return result

    def touch_agent(self, agent_id: str, now: dt.datetime) -> None:
        """A heartbeat; see `fleet.store.base.Store.touch_agent`."""
        self.write([HeartbeatOp(agent_id)], now)

    # -- reads --------------------------------------------------------------------------

    def committed_seq(self, agent_id: str) -> int:
        """The highest seq stored for ``agent_id``; 0 when nothing is."""
        row = self._execute(
            "SELECT committed_seq FROM agents WHERE agent_id = ?", (agent_id,)
        ).fetchone()
        return int(row[0]) if row else 0

    def list_units(self, query: UnitQuery) -> list[UnitRow]:
        """Units matching ``query``, ordered by unit_id."""
        clauses: list[str] = []
        params: list[object] = []
        for column, value in (
            ("street", query.street),
            ("building", query.building),
            ("contractor", query.contractor),
            ("firmware", query.firmware),
        ):
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        if query.model:
            clauses.append(f"{MODEL_EXPR} = ?")
            params.append(query.model)
        if query.reported_only:
            clauses.append("last_seen_us IS NOT NULL")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._execute(
            f"SELECT {UNIT_COLUMNS} FROM units{where} ORDER BY unit_id", params
        ).fetchall()
        return [unit_row(row) for row in rows]

    def status_counts(
        self, now: dt.datetime, stale_after_s: float, offline_after_s: float
    ) -> list[tuple[str, bool, bool, int]]:
        """See `fleet.store.base.Store.status_counts`."""
        # Counted by the database: listing 40,000 units to count them held the store
        # thread (and so every ingest commit) for half a second to a second.
        now_us = to_us(now)
        rows = self._execute(
            "SELECT CASE WHEN last_seen_us IS NULL THEN 'never_seen' "
            "WHEN last_seen_us <= ? THEN 'offline' WHEN last_seen_us <= ? THEN 'stale' "
            "WHEN link_up = 0 THEN 'blind' ELSE 'online' END AS live, registered, "
            "last_seen_us IS NOT NULL AS seen, count(*) FROM units GROUP BY 1, 2, 3",
            [now_us - round(offline_after_s * 1e6), now_us - round(stale_after_s * 1e6)],
        ).fetchall()
        return [(str(r[0]), bool(r[1]), bool(r[2]), int(r[3])) for r in rows]

    def get_unit(self, unit_id: str) -> UnitRow | None:
        """The unit ``unit_id``, or None when unknown."""
        row = self._execute(
            f"SELECT {UNIT_COLUMNS} FROM units WHERE unit_id = ?", (unit_id,)
        ).fetchone()
        return unit_row(row) if row else None

    def list_events(self, query: EventQuery) -> list[EventRow]:
        """The newest ``query.limit`` matching events, oldest first."""
        clauses: list[str] = []
        params: list[object] = []
        if query.unit_id:
            clauses.append("unit_id = ?")
            params.append(query.unit_id)
        if query.type:
            clauses.append("type = ?")
            params.append(query.type)
        if query.contractor:
            clauses.append("unit_id IN (SELECT unit_id FROM units WHERE contractor = ?)")
            params.append(query.contractor)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        params.append(max(query.limit, 0))
        rows = self._execute(
            f"SELECT {EVENT_COLUMNS} FROM events{where} "
            "ORDER BY time_us DESC, agent_id DESC, seq DESC LIMIT ?",
            params,
        ).fetchall()
        return [event_of_row(r) for r in reversed(rows)]

    def unit_contractors(self) -> dict[str, str]:
        """unit_id -> maintenance contractor of every unit (two columns, not whole rows:
        the live streams' scoping re-reads it while ingest waits for the store thread)."""
        rows = self._execute("SELECT unit_id, contractor FROM units").fetchall()
        return {str(r[0]): str(r[1]) for r in rows}

    def register_version(self) -> int:
        """A number that grows with every register import (0 before the first): while it
        stands still, `unit_contractors` has not changed (the units' contractor is only
        written by `upsert_register`)."""
        row = self._execute("SELECT MAX(id) FROM register_changes").fetchone()
        return int(row[0]) if row is not None and row[0] is not None else 0

    @snapshot_read
    def latest_car_state(self, unit_id: str) -> tuple[dt.datetime, bytes] | None:
        """The newest CarState record of ``unit_id``: its time and the serialized Record."""
        # Walks the reporting agent's records back from its newest seq (the primary key):
        # car states are most of an agent's records, so the first hit comes within a few
        # rows and no index on unit_id is needed on the ingest path.
        row = self._execute(
            "SELECT time_us, payload FROM records WHERE agent_id = "
            "(SELECT agent_id FROM units WHERE unit_id = ?) AND unit_id = ? "
            "AND kind = 'car_state' ORDER BY seq DESC LIMIT 1",
            [unit_id, unit_id],
        ).fetchone()
        if row is None:
            # Silent since its records were compacted (fleet.store.batches).
            found = nearest_rows(self, unit_id, "car_state", 2**62, 1)
            row = (found[0][0], found[0][3]) if found else None
        if row is None:
            # Silent for longer than the retention window: its newest car state was kept
            # when its raw records were folded (fleet.store.retention).
            row = self._execute(
                "SELECT time_us, payload FROM records_kept WHERE unit_id = ? "
                "AND kind = 'car_state' ORDER BY time_us DESC LIMIT 1",
                [unit_id],
            ).fetchone()
        return None if row is None else (from_us(int(row[0])), bytes(row[1]))

    @snapshot_read
    def health_records(
        self, unit_id: str, kind: str, limit: int
    ) -> list[tuple[dt.datetime, bytes]]:
        """The newest ``limit`` ``counters`` or ``link_status`` records of ``unit_id``,
        oldest first: times and serialized Records."""
        if kind not in HEALTH_KINDS:
            raise ValueError(f"kind must be one of {', '.join(HEALTH_KINDS)}, not {kind!r}")
        # The kind is a literal, and the index's own WHERE term is written out, so that
        # the planner can use the partial index records_health (migration "dashboard"),
        # which only covers these kinds: SQLite takes a partial index only for a query
        # holding its WHERE term as it is (kind = 'counters' alone scanned every record).
        rows = self._execute(
            "SELECT time_us, payload FROM records WHERE unit_id = ? "
            f"AND {HEALTH_TERM} AND kind = '{kind}' ORDER BY time_us DESC LIMIT ?",
            [unit_id, max(limit, 0)],
        ).fetchall()
        if rows:
            # After a clock set back, compaction (which stops at an agent's first record
            # past its cutoff) leaves hot rows older than batched ones: those batched at
            # or after the oldest row here compete with the rows. Mostly no batch is that
            # new, and the index says so.
            newer = rows_in(self, unit_id, (kind,), int(rows[-1][0]), 2**62)
            rows = sorted([*rows, *((r[0], r[3]) for r in newer)], key=lambda r: -int(r[0]))
            rows = rows[: max(limit, 0)]
        if len(rows) < limit:
            # Older ones were compacted into batches (fleet.store.batches).
            oldest = int(rows[-1][0]) if rows else 2**62
            rows += [
                (r[0], r[3]) for r in nearest_rows(self, unit_id, kind, oldest, limit - len(rows))
            ]
        if len(rows) < limit:
            # Beyond the retention window (fleet.store.retention): the link's changes and
            # newest kept whole; of the counters, each hour's last reading (unit_hours),
            # so that a lift silent for longer than the window still shows its newest.
            oldest = int(rows[-1][0]) if rows else 2**62
            if kind == "counters":
                rows += counters_readings(self, unit_id, oldest, limit - len(rows))
            else:
                rows += self._execute(
                    "SELECT time_us, payload FROM records_kept WHERE unit_id = ? "
                    "AND kind = ? AND time_us < ? ORDER BY time_us DESC LIMIT ?",
                    [unit_id, kind, oldest, limit - len(rows)],
                ).fetchall()
        return [(from_us(int(r[0])), bytes(r[1])) for r in reversed(rows)]

    def coverage_history(self, unit_id: str, limit: int) -> list[CoverageChange]:
        """The newest ``limit`` coverage transitions (of ``unit_id`` unless empty)."""
        where, params = ("WHERE unit_id = ? ", [unit_id]) if unit_id else ("", [])
        rows = self._execute(
            "SELECT unit_id, at_us, old_status, new_status, cause FROM coverage_history "
            f"{where}ORDER BY at_us DESC, id DESC LIMIT ?",
            [*params, max(limit, 0)],
        ).fetchall()
        return [CoverageChange(r[0], from_us(int(r[1])), r[2], r[3], r[4]) for r in reversed(rows)]

    def firmware_history(self, unit_id: str, limit: int) -> list[FirmwareChange]:
        """The newest ``limit`` firmware / agent version changes (of ``unit_id`` unless "")."""
        where, params = ("WHERE unit_id = ? ", [unit_id]) if unit_id else ("", [])
        rows = self._execute(
            "SELECT unit_id, at_us, agent_id, model, old_firmware, new_firmware, "
            f"old_agent_version, new_agent_version FROM firmware_history {where}"
            "ORDER BY at_us DESC, id DESC LIMIT ?",
            [*params, max(limit, 0)],
        ).fetchall()
        return [
            FirmwareChange(r[0], from_us(int(r[1])), r[2], r[3], r[4], r[5], r[6], r[7])
            for r in reversed(rows)
        ]

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


def rounds(rows: Sequence[Sequence[object]], key: int) -> list[list[Sequence[object]]]:
    """``rows`` in order, split so that no round holds two rows with the same ``row[key]``.

    An UPDATE ... FROM applies only one of the rows that join one target row: a unit
    claimed twice in one group (a reconnect, two agents) takes two rounds, and so ends
    as two statements one after the other would leave it."""
    out: list[list[Sequence[object]]] = []
    last: dict[object, int] = {}  # the round each key was last put in
    for row in rows:
        index = last.get(row[key], -1) + 1
        if index == len(out):
            out.append([])
        out[index].append(row)
        last[row[key]] = index
    return out


def _event_row(
    agent_id: str, record: records_pb2.Record, time_us: int, committed_us: int
) -> tuple[object, ...]:
    """The ``events`` row of one Event record, in `EVENT_COLUMNS` order; ``gb_code`` as
    the agent sent it (NULL for the wire's 0), ``at_landing`` 1 / 0 / NULL, the reason's
    code and parameters ('' from an older agent, `fleet.store.reasons`)."""
    event = record.event
    return (
        agent_id,
        int(record.seq),
        record.unit_id,
        time_us,
        event.event_id,
        int(event.type),
        int(event.phase),
        timestamp_us(event.onset) if event.HasField("onset") else None,
        event.floor if event.HasField("floor") else None,
        event.reason,
        committed_us,
        gb_code(event.gb_code),
        int(event.at_landing) if event.HasField("at_landing") else None,
        event.reason_code,
        params_text(event.reason_params),
    )


def unit_row(row: Sequence[Any]) -> UnitRow:
    """A `UnitRow` from a row of `UNIT_COLUMNS`."""
    (
        unit_id,
        registered,
        building,
        address,
        street,
        use_unit,
        contractor,
        install_date,
        rated_speed,
        rated_load,
        landings,
        registered_model,
        car_in_group,
        agent_id,
        agent_version,
        vendor,
        model,
        firmware,
        serial,
        profile,
        last_seen_us,
        link_up,
        detectable,
        undetectable,
    ) = row
    return UnitRow(
        unit_id=unit_id,
        registered=bool(registered),
        register=RegisterEntry(
            unit_id=unit_id,
            building=building,
            address=address,
            street=street,
            use_unit=use_unit,
            contractor=contractor,
            install_date=dt.date.fromisoformat(install_date) if install_date else None,
            rated_speed_m_s=float(rated_speed) if rated_speed is not None else None,
            rated_load_kg=rated_load,
            landings=landings,
            controller_model=registered_model,
            car_in_group=car_in_group,
        ),
        agent_id=agent_id,
        agent_version=agent_version,
        controller=ControllerIdentity(vendor, model, firmware, serial, profile),
        last_seen=from_us(int(last_seen_us)) if last_seen_us is not None else None,
        link_up=None if link_up is None else bool(link_up),
        detectable=parse_event_type_list(detectable),
        undetectable=parse_event_type_list(undetectable),
    )


def event_type_list(types: Sequence[int]) -> str:
    """Wire EventType numbers as the units table keeps them: sorted, comma-separated."""
    return ",".join(str(t) for t in sorted(set(types)))


def parse_event_type_list(text: str) -> tuple[int, ...]:
    """The numbers of an `event_type_list`; "" (nothing said) is empty."""
    return tuple(int(part) for part in text.split(",") if part.strip())
