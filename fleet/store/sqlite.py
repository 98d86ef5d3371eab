"""SQLite implementation of the fleet `Store` (stdlib sqlite3, WAL, versioned schema).

One connection, used from one thread (see `fleet.store.worker`). Times are stored as
integer microseconds since the Unix epoch (UTC) so they compare and sort as numbers.
Readers in other processes (the CLI) open the same file read-only while serve writes:
WAL lets them read without blocking the writer.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from google.protobuf import timestamp_pb2

from fleet.store.base import (
    CommitResult,
    ControllerIdentity,
    EventQuery,
    EventRow,
    RegisterEntry,
    StoreError,
    UnitClaim,
    UnitQuery,
    UnitRow,
)
from protos.liftwatch.v1 import records_pb2

MEMORY = ":memory:"

# Append only: migration N takes the schema from user_version N to N + 1.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE units (
        unit_id          TEXT PRIMARY KEY,
        registered       INTEGER NOT NULL DEFAULT 0,
        building         TEXT NOT NULL DEFAULT '',
        address          TEXT NOT NULL DEFAULT '',
        street           TEXT NOT NULL DEFAULT '',
        use_unit         TEXT NOT NULL DEFAULT '',
        contractor       TEXT NOT NULL DEFAULT '',
        install_date     TEXT,
        rated_speed_m_s  REAL,
        rated_load_kg    INTEGER,
        landings         INTEGER,
        registered_model TEXT NOT NULL DEFAULT '',
        car_in_group     INTEGER,
        agent_id         TEXT NOT NULL DEFAULT '',
        agent_version    TEXT NOT NULL DEFAULT '',
        vendor           TEXT NOT NULL DEFAULT '',
        model            TEXT NOT NULL DEFAULT '',
        firmware         TEXT NOT NULL DEFAULT '',
        serial           TEXT NOT NULL DEFAULT '',
        profile          TEXT NOT NULL DEFAULT '',
        controller_us    INTEGER,
        last_seen_us     INTEGER,
        link_up          INTEGER,
        link_us          INTEGER
    );
    CREATE INDEX units_street ON units (street);
    CREATE INDEX units_contractor ON units (contractor);
    CREATE INDEX units_agent ON units (agent_id);
    CREATE TABLE agents (
        agent_id       TEXT PRIMARY KEY,
        agent_version  TEXT NOT NULL DEFAULT '',
        last_seen_us   INTEGER,
        committed_seq  INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE records (
        agent_id  TEXT NOT NULL,
        seq       INTEGER NOT NULL,
        unit_id   TEXT NOT NULL,
        time_us   INTEGER NOT NULL,
        kind      TEXT NOT NULL,
        payload   BLOB NOT NULL,
        PRIMARY KEY (agent_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE events (
        agent_id  TEXT NOT NULL,
        seq       INTEGER NOT NULL,
        unit_id   TEXT NOT NULL,
        time_us   INTEGER NOT NULL,
        event_id  TEXT NOT NULL,
        type      INTEGER NOT NULL,
        phase     INTEGER NOT NULL,
        onset_us  INTEGER,
        floor     INTEGER,
        reason    TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (agent_id, seq)
    );
    CREATE INDEX events_time ON events (time_us);
    CREATE INDEX events_unit_time ON events (unit_id, time_us);
    """,
    # When the fleet committed each event: the end of the agent-to-fleet latency, and in
    # an audit the moment the fleet knew (the record's own time is the agent's clock).
    """
    ALTER TABLE events ADD COLUMN committed_us INTEGER;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

_UNIT_COLUMNS = (
    "unit_id, registered, building, address, street, use_unit, contractor, install_date, "
    "rated_speed_m_s, rated_load_kg, landings, registered_model, car_in_group, agent_id, "
    "agent_version, vendor, model, firmware, serial, profile, last_seen_us, link_up"
)


def to_us(moment: dt.datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> dt.datetime:
    """The aware UTC datetime of ``us`` microseconds since the epoch."""
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)


def _timestamp_us(ts: timestamp_pb2.Timestamp) -> int:
    return int(ts.seconds) * 1_000_000 + int(ts.nanos) // 1000


class SqliteStore:
    """The SQLite `Store`. Create with `SqliteStore.open`; use from one thread only."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @classmethod
    def open(cls, path: str, *, readonly: bool = False) -> SqliteStore:
        """Open (and for writers create and migrate) the database at ``path``.

        ``readonly`` opens an existing database without writing, for the CLI; it must
        already carry the current schema. Raises `StoreError` with a one-line reason.
        """
        try:
            conn = _connect(path, readonly)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from None
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"database {path} has schema version {version}; this fleet knows "
                    f"up to {SCHEMA_VERSION} (newer software wrote it)"
                )
            if readonly:
                if version < SCHEMA_VERSION:
                    raise StoreError(
                        f"database {path} has schema version {version}, expected "
                        f"{SCHEMA_VERSION}: is it a fleet database? (serve migrates it)"
                    )
            else:
                if path != MEMORY:
                    conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA foreign_keys = ON")
                _migrate(conn, version)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot use database {path}: {exc}") from None
        except StoreError:
            conn.close()
            raise
        return cls(conn)

    @contextmanager
    def _transaction(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        # Telemetry rides on synchronous=NORMAL (WAL keeps it consistent, a power cut may
        # lose the last commits); a batch with safety events is fsynced before it is acked.
        self._conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
            self._conn.execute("COMMIT")
        except BaseException:
            # Also after a failed COMMIT (e.g. disk full): never leave the writer stuck
            # inside an open transaction.
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    def committed_seq(self, agent_id: str) -> int:
        """The highest seq stored for ``agent_id``; 0 when nothing is."""
        row = self._conn.execute(
            "SELECT committed_seq FROM agents WHERE agent_id = ?", (agent_id,)
        ).fetchone()
        return int(row[0]) if row else 0

    def register_hello(
        self, agent_id: str, agent_version: str, units: Sequence[UnitClaim], now: dt.datetime
    ) -> None:
        """Record an agent's Hello; see `fleet.store.base.Store.register_hello`."""
        now_us = to_us(now)
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO agents (agent_id, agent_version, last_seen_us) VALUES (?, ?, ?) "
                "ON CONFLICT (agent_id) DO UPDATE SET agent_version = excluded.agent_version, "
                "last_seen_us = excluded.last_seen_us",
                (agent_id, agent_version, now_us),
            )
            for claim in units:
                conn.execute("INSERT OR IGNORE INTO units (unit_id) VALUES (?)", (claim.unit_id,))
                conn.execute(
                    "UPDATE units SET agent_id = ?, agent_version = ?, "
                    "last_seen_us = max(coalesce(last_seen_us, 0), ?) WHERE unit_id = ?",
                    (agent_id, agent_version, now_us, claim.unit_id),
                )
                _update_controller(conn, claim.unit_id, claim.controller, None)

    def commit_batch(
        self, agent_id: str, records: Sequence[records_pb2.Record], now: dt.datetime
    ) -> CommitResult:
        """Store a batch idempotently; see `fleet.store.base.Store.commit_batch`."""
        now_us = to_us(now)
        inserted = 0
        highest = 0
        seen_units: set[str] = set()
        durable = any(r.WhichOneof("payload") == "event" for r in records)
        with self._transaction(durable=durable) as conn:
            conn.execute(
                "INSERT INTO agents (agent_id, last_seen_us) VALUES (?, ?) "
                "ON CONFLICT (agent_id) DO UPDATE SET last_seen_us = excluded.last_seen_us",
                (agent_id, now_us),
            )
            for record in records:
                kind = record.WhichOneof("payload") or ""
                time_us = _timestamp_us(record.time)
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO records (agent_id, seq, unit_id, time_us, kind, "
                    "payload) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        agent_id,
                        record.seq,
                        record.unit_id,
                        time_us,
                        kind,
                        record.SerializeToString(deterministic=True),
                    ),
                )
                if cursor.rowcount != 1:
                    continue  # a replay: already stored, and already applied to units
                inserted += 1
                highest = max(highest, record.seq)
                if record.unit_id not in seen_units:
                    seen_units.add(record.unit_id)
                    conn.execute(
                        "INSERT OR IGNORE INTO units (unit_id) VALUES (?)", (record.unit_id,)
                    )
                if kind == "event":
                    _insert_event(conn, agent_id, record, time_us, now_us)
                elif kind == "controller_info":
                    info = record.controller_info
                    identity = ControllerIdentity(
                        info.vendor, info.model, info.firmware, info.serial, info.profile
                    )
                    _update_controller(conn, record.unit_id, identity, time_us)
                elif kind == "link_status":
                    # Late arrivals of older seqs must not overwrite a newer link state.
                    conn.execute(
                        "UPDATE units SET link_up = ?, link_us = ? WHERE unit_id = ? "
                        "AND (link_us IS NULL OR link_us <= ?)",
                        (int(record.link_status.up), time_us, record.unit_id, time_us),
                    )
            for unit_id in seen_units:
                conn.execute(
                    "UPDATE units SET agent_id = ?, "
                    "last_seen_us = max(coalesce(last_seen_us, 0), ?) WHERE unit_id = ?",
                    (agent_id, now_us, unit_id),
                )
            conn.execute(
                "UPDATE agents SET committed_seq = max(committed_seq, ?) WHERE agent_id = ?",
                (highest, agent_id),
            )
            committed = int(
                conn.execute(
                    "SELECT committed_seq FROM agents WHERE agent_id = ?", (agent_id,)
                ).fetchone()[0]
            )
        return CommitResult(committed_seq=committed, inserted=inserted)

    def touch_agent(self, agent_id: str, now: dt.datetime) -> None:
        """A heartbeat; see `fleet.store.base.Store.touch_agent`."""
        now_us = to_us(now)
        with self._transaction() as conn:
            conn.execute(
                "UPDATE agents SET last_seen_us = max(coalesce(last_seen_us, 0), ?) "
                "WHERE agent_id = ?",
                (now_us, agent_id),
            )
            conn.execute(
                "UPDATE units SET last_seen_us = max(coalesce(last_seen_us, 0), ?) "
                "WHERE agent_id = ?",
                (now_us, agent_id),
            )

    def upsert_register(self, entries: Sequence[RegisterEntry]) -> int:
        """Insert or update register entries in one transaction; returns how many."""
        with self._transaction() as conn:
            conn.executemany(
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
        return len(entries)

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
            clauses.append("(CASE WHEN model != '' THEN model ELSE registered_model END) = ?")
            params.append(query.model)
        if query.reported_only:
            clauses.append("last_seen_us IS NOT NULL")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._conn.execute(
            f"SELECT {_UNIT_COLUMNS} FROM units{where} ORDER BY unit_id", params
        ).fetchall()
        return [_unit_row(row) for row in rows]

    def get_unit(self, unit_id: str) -> UnitRow | None:
        """The unit ``unit_id``, or None when unknown."""
        row = self._conn.execute(
            f"SELECT {_UNIT_COLUMNS} FROM units WHERE unit_id = ?", (unit_id,)
        ).fetchone()
        return _unit_row(row) if row else None

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
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        params.append(max(query.limit, 0))
        rows = self._conn.execute(
            "SELECT agent_id, seq, unit_id, time_us, event_id, type, phase, onset_us, floor, "
            f"reason, committed_us FROM events{where} "
            "ORDER BY time_us DESC, agent_id DESC, seq DESC LIMIT ?",
            params,
        ).fetchall()
        return [
            EventRow(
                agent_id=r[0],
                seq=int(r[1]),
                unit_id=r[2],
                time=from_us(int(r[3])),
                event_id=r[4],
                type=int(r[5]),
                phase=int(r[6]),
                onset=from_us(int(r[7])) if r[7] is not None else None,
                floor=int(r[8]) if r[8] is not None else None,
                reason=r[9],
                committed=from_us(int(r[10])) if r[10] is not None else None,
            )
            for r in reversed(rows)
        ]

    def close(self) -> None:
        """Close the connection (a clean close also checkpoints the WAL)."""
        self._conn.close()


def _connect(path: str, readonly: bool) -> sqlite3.Connection:
    if path == MEMORY:
        if readonly:
            raise sqlite3.OperationalError(
                "an in-memory database cannot be read by another process"
            )
        return sqlite3.connect(MEMORY, isolation_level=None)
    if readonly:
        if not Path(path).is_file():
            raise sqlite3.OperationalError("no such file")
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        return sqlite3.connect(uri, uri=True, isolation_level=None)
    if not Path(path).parent.is_dir():
        raise sqlite3.OperationalError(f"directory {Path(path).parent} does not exist")
    # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
    return sqlite3.connect(path, isolation_level=None)


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    for index in range(version, SCHEMA_VERSION):
        # executescript runs the whole migration and the version bump as one transaction.
        conn.executescript(
            f"BEGIN IMMEDIATE; {MIGRATIONS[index]}; PRAGMA user_version = {index + 1}; COMMIT;"
        )


def _update_controller(
    conn: sqlite3.Connection, unit_id: str, identity: ControllerIdentity, time_us: int | None
) -> None:
    """Apply a controller identity: ``time_us`` of a ControllerInfo record, None for Hello.

    ControllerInfo records are read from the controller and timestamped: the newest wins,
    so a replayed old one cannot roll back a firmware update. Hello carries no time and
    often only configured fields (model, profile): it fills in until a record arrives.
    """
    fields = {
        "vendor": identity.vendor,
        "model": identity.model,
        "firmware": identity.firmware,
        "serial": identity.serial,
        "profile": identity.profile,
    }
    # An agent that has not read the controller yet sends empty strings: keep what we know.
    known = {k: v for k, v in fields.items() if v}
    if not known:
        return
    assignments = ", ".join(f"{column} = ?" for column in known)
    if time_us is None:
        conn.execute(
            f"UPDATE units SET {assignments} WHERE unit_id = ? AND controller_us IS NULL",
            [*known.values(), unit_id],
        )
        return
    conn.execute(
        f"UPDATE units SET {assignments}, controller_us = ? WHERE unit_id = ? "
        "AND (controller_us IS NULL OR controller_us <= ?)",
        [*known.values(), time_us, unit_id, time_us],
    )


def _insert_event(
    conn: sqlite3.Connection,
    agent_id: str,
    record: records_pb2.Record,
    time_us: int,
    committed_us: int,
) -> None:
    event = record.event
    conn.execute(
        "INSERT OR IGNORE INTO events (agent_id, seq, unit_id, time_us, event_id, type, phase, "
        "onset_us, floor, reason, committed_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            agent_id,
            record.seq,
            record.unit_id,
            time_us,
            event.event_id,
            int(event.type),
            int(event.phase),
            _timestamp_us(event.onset) if event.HasField("onset") else None,
            event.floor if event.HasField("floor") else None,
            event.reason,
            committed_us,
        ),
    )


def _unit_row(row: sqlite3.Row | tuple[Any, ...]) -> UnitRow:
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
            rated_speed_m_s=rated_speed,
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
    )
