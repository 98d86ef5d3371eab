"""SQLite implementation of the fleet `Store` (stdlib sqlite3, WAL, versioned schema).

One connection, used from one thread (see `fleet.store.worker`). Times are stored as
integer microseconds since the Unix epoch (UTC) so they compare and sort as numbers.
Readers in other processes (the CLI) open the same file read-only while serve writes:
WAL lets them read without blocking the writer. Writers in several processes (``serve
--workers``, a CLI import beside them) take turns through a kernel lock on the empty file
``<database>-writer`` beside it (see `SqliteStore._transaction`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fleet.store.agents import AGENT_UNITS_TABLE
from fleet.store.base import StoreError
from fleet.store.batches import BATCHES_MIGRATION_SQLITE
from fleet.store.configs import CONFIGS_MIGRATION
from fleet.store.crew import CREW_MIGRATION
from fleet.store.evidence import EVIDENCE_MIGRATION
from fleet.store.lifecycle import LIFECYCLE_TABLES
from fleet.store.liveness import LIVENESS_MIGRATION
from fleet.store.maintenance import MAINTENANCE_MIGRATION
from fleet.store.northbound import NORTHBOUND_MIGRATION
from fleet.store.publication import PUBLICATION_MIGRATION
from fleet.store.reasons import REASONS_MIGRATION
from fleet.store.releases import RELEASES_MIGRATION
from fleet.store.retention import RETENTION_MIGRATION, UNIT_KEYS_MIGRATION_SQLITE
from fleet.store.roles import ROLES_MIGRATION
from fleet.store.sql import HISTORY_TABLES, RECORDS_HEALTH_INDEX, SqlStore, from_us, to_us
from fleet.store.users import USER_TABLES
from fleet.store.verdicts import VERDICTS_MIGRATION

__all__ = ["MEMORY", "SCHEMA_VERSION", "SqliteStore", "from_us", "to_us"]

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
    # Coverage and firmware history: ``status`` is the last status recorded in the history
    # (units already heard of start as online; the first sweep corrects them), ``prev_*``
    # are scratch columns that let RETURNING report a change (see fleet.store.sql).
    """
    ALTER TABLE units ADD COLUMN status TEXT NOT NULL DEFAULT 'never_seen';
    ALTER TABLE units ADD COLUMN prev_status TEXT NOT NULL DEFAULT '';
    ALTER TABLE units ADD COLUMN prev_firmware TEXT NOT NULL DEFAULT '';
    ALTER TABLE units ADD COLUMN prev_agent_version TEXT NOT NULL DEFAULT '';
    UPDATE units SET status = 'online' WHERE last_seen_us IS NOT NULL;
    CREATE INDEX units_status_seen ON units (status, last_seen_us);
    """
    + HISTORY_TABLES.format(id="INTEGER PRIMARY KEY"),
    # Version 4, "lifecycle": alarms and their sends, the hash-chained unit history, daily
    # trip counter spans (see fleet.store.lifecycle).
    LIFECYCLE_TABLES.format(id="INTEGER PRIMARY KEY"),
    # Version 5, "agent registry": the units each agent may report for under mutual
    # TLS (see fleet.store.agents).
    AGENT_UNITS_TABLE,
    # Version 6, "users": dashboard and API users, login sessions, API tokens (see
    # fleet.store.users).
    USER_TABLES,
    # Version 7, "dashboard": a partial index over the counters and link-status records
    # that a unit page reads over time (see fleet.store.sql.RECORDS_HEALTH_INDEX).
    RECORDS_HEALTH_INDEX,
    # Version 8, "verdicts": event codes and position, what each unit cannot detect, why
    # an alarm was closed early (see fleet.store.verdicts).
    VERDICTS_MIGRATION.format(id="INTEGER PRIMARY KEY"),
    # Version 9, "publication": the register's optional columns, the district's published
    # lists and their history (see fleet.store.publication).
    PUBLICATION_MIGRATION.format(id="INTEGER PRIMARY KEY"),
    # Version 10, "evidence": the flight recorder's windows and the dispatchers' requests
    # for them (issue 16, see fleet.store.evidence).
    EVIDENCE_MIGRATION.format(blob="BLOB"),
    # Version 11, "maintenance": watched maintenance visits, contractors' maintenance
    # records and their verdicts (issue 17, see fleet.store.maintenance).
    MAINTENANCE_MIGRATION.format(id="INTEGER PRIMARY KEY"),
    # Version 12, "northbound": per regional platform, the history cursor per unit, the
    # sender's lease and the dead letters (issue 21, see fleet.store.northbound).
    NORTHBOUND_MIGRATION.format(id="INTEGER PRIMARY KEY"),
    # Version 13, "retention": hourly per-unit aggregates of folded raw records, the
    # records kept beyond the window, retention's cursors and lease (issue 18, see
    # fleet.store.retention).
    RETENTION_MIGRATION.format(blob="BLOB", without_rowid=" WITHOUT ROWID"),
    # Version 14, "reason codes": an event's reason as a code and its parameters, for
    # the reader's language (issue 19, see fleet.store.reasons).
    REASONS_MIGRATION,
    # Version 15, "liveness": marking a unit seen rewrites no index (issue 18, see
    # fleet.store.liveness).
    LIVENESS_MIGRATION,
    # Version 16, "releases": signed releases, rollouts and their members, the release
    # each agent is offered, and agents' update reports (issue 20, see fleet.store.releases).
    RELEASES_MIGRATION.format(id="INTEGER PRIMARY KEY"),
    # Version 17, "roles": the lease of each fleet-wide job (the coverage sweep, alarm
    # dispatch), so that one instance runs it at a time (issue 18, see fleet.store.roles).
    ROLES_MIGRATION,
    # Version 18, "configs": agents' desired configuration documents, every version kept,
    # groups, and what each agent reports applied (issue 20, see fleet.store.configs).
    CONFIGS_MIGRATION.format(id="INTEGER PRIMARY KEY"),
    # Version 19, "crew": who a dispatcher sent to an alarm and when they are expected
    # (issue 19, see fleet.store.crew).
    CREW_MIGRATION,
    # Version 20, "batches": raw records compacted into per-unit hourly batches (issue
    # 18, see fleet.store.batches).
    BATCHES_MIGRATION_SQLITE,
    # Version 21, "unit keys": unit_hours keyed by a unit's number from unit_keys instead
    # of the text unit id (issue 18, long-term bytes; see fleet.store.retention).
    UNIT_KEYS_MIGRATION_SQLITE,
)
SCHEMA_VERSION = len(MIGRATIONS)


class SqliteStore(SqlStore):
    """The SQLite `Store`. Create with `SqliteStore.open`; use from one thread only."""

    # The open lock file of a writer on a file database (see `_transaction`), else None.
    _writer_lock: int | None = None

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
                if version == 0:
                    # Before the first table: retention's deletes then free pages that
                    # `PRAGMA incremental_vacuum` returns to the file system in small
                    # steps (fleet.store.retention). A database created before this
                    # keeps auto_vacuum NONE: freed pages are reused by new records, the
                    # file stops growing but does not shrink until an offline VACUUM.
                    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
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
        store = cls(conn, path)
        if not readonly and path != MEMORY:
            store._writer_lock = os.open(f"{path}-writer", os.O_RDWR | os.O_CREAT, 0o600)
        return store

    def close(self) -> None:
        """Close the connection and the writer lock file."""
        super().close()
        if self._writer_lock is not None:
            os.close(self._writer_lock)
            self._writer_lock = None

    @contextmanager
    def _transaction(self, *, durable: bool = False) -> Iterator[None]:
        # Telemetry rides on synchronous=NORMAL (WAL keeps it consistent, a power cut may
        # lose the last commits); a group with safety events is fsynced before it is acked.
        self._conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
        # Writers in several processes (serve --workers) queue on a kernel lock before
        # they take SQLite's: SQLite's own busy handler polls, sleeping 1, 2, 5, 10 ... up
        # to 100 ms between attempts, which added tens of milliseconds to commits of two
        # busy workers; the kernel hands the lock over the moment it is released.
        lock = self._writer_lock
        if lock is not None:
            fcntl.lockf(lock, fcntl.LOCK_EX)
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._conn.execute("COMMIT")
            except BaseException:
                # Also after a failed COMMIT (e.g. disk full): never leave the writer stuck
                # inside an open transaction.
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        finally:
            if lock is not None:
                fcntl.lockf(lock, fcntl.LOCK_UN)

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        # A deferred read transaction: in WAL mode its reads see one commit, whatever
        # another process (serve --workers, the CLI) commits meanwhile.
        if self._conn.in_transaction:
            yield
            return
        self._conn.execute("BEGIN")
        try:
            yield
        finally:
            if self._conn.in_transaction:
                self._conn.execute("COMMIT")

    def _sql(self, text: str) -> str:
        # SQLite's multi-argument max() is PostgreSQL's GREATEST.
        return text.replace("GREATEST(", "max(")

    def _run_many(self, text: str, rows: Sequence[Sequence[object]]) -> list[list[tuple[Any, ...]]]:
        # In-process: a statement per row costs microseconds, no round trip to save.
        sql = self._sql(text)
        return [self._conn.execute(sql, row).fetchall() for row in rows]

    def _rows(
        self, rows: Sequence[Sequence[object]], types: Sequence[str]
    ) -> tuple[str, list[object]]:
        # A VALUES list names its columns column1, column2, ... (as PostgreSQL's does).
        # 500 rows of a few columns stay far below SQLite's parameter limit (32,766), and
        # the statement text of a full chunk is the same every time (prepared once).
        one = f"({', '.join('?' * len(types))})"
        return f"(VALUES {', '.join([one] * len(rows))}) AS v", [x for r in rows for x in r]


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
    # The database holds password hashes, sessions, tokens and every record: created
    # owner-only (an empty file is an empty database). SQLite gives its -wal and -shm files
    # the database file's mode. An existing file keeps the mode its owner chose.
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
    return sqlite3.connect(path, isolation_level=None)


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    for index in range(version, SCHEMA_VERSION):
        # executescript runs the whole migration and the version bump as one transaction.
        conn.executescript(
            f"BEGIN IMMEDIATE; {MIGRATIONS[index]}; PRAGMA user_version = {index + 1}; COMMIT;"
        )
