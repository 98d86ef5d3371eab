"""PostgreSQL implementation of the fleet `Store` (psycopg 3, versioned schema).

The scale-out backend: any number of fleet processes share one database and nothing else.
What makes that safe: every write is keyed (records on (agent_id, seq), units on unit_id),
status and firmware changes are detected by UPDATE ... RETURNING on the row itself (row
locks serialize two fleets; neither reads a value the other is about to change), and
schema migrations run under an advisory lock so that replicas starting together migrate
once. Telemetry commits with ``synchronous_commit = off``; a group with an event waits
for the WAL flush, the same policy as SQLite's NORMAL / FULL.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from fleet.store.agents import AGENT_UNITS_TABLE
from fleet.store.base import StoreError
from fleet.store.batches import BATCHES_MIGRATION_POSTGRES, DAY_US, partition_name
from fleet.store.configs import CONFIGS_MIGRATION
from fleet.store.crew import CREW_MIGRATION
from fleet.store.evidence import EVIDENCE_MIGRATION
from fleet.store.lifecycle import LIFECYCLE_TABLES
from fleet.store.liveness import LIVENESS_MIGRATION, POSTGRES_FILLFACTOR
from fleet.store.maintenance import MAINTENANCE_MIGRATION
from fleet.store.northbound import NORTHBOUND_MIGRATION
from fleet.store.publication import PUBLICATION_MIGRATION
from fleet.store.reasons import REASONS_MIGRATION
from fleet.store.releases import RELEASES_MIGRATION
from fleet.store.retention import (
    RETENTION_MIGRATION,
    UNIT_HOURS_PACKED_MIGRATION_POSTGRES,
    UNIT_KEYS_MIGRATION_POSTGRES,
)
from fleet.store.roles import ROLES_MIGRATION
from fleet.store.sql import HISTORY_TABLES, RECORDS_HEALTH_INDEX, SqlStore
from fleet.store.users import USER_TABLES
from fleet.store.verdicts import VERDICTS_MIGRATION

log = logging.getLogger(__name__)

# An arbitrary constant naming the advisory lock that serializes migrations.
MIGRATION_LOCK = 0x4C69667457617463

# Append only: migration N takes the schema from version N to N + 1 (table schema_version).
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE units (
        unit_id            TEXT PRIMARY KEY,
        registered         INTEGER NOT NULL DEFAULT 0,
        building           TEXT NOT NULL DEFAULT '',
        address            TEXT NOT NULL DEFAULT '',
        street             TEXT NOT NULL DEFAULT '',
        use_unit           TEXT NOT NULL DEFAULT '',
        contractor         TEXT NOT NULL DEFAULT '',
        install_date       TEXT,
        rated_speed_m_s    DOUBLE PRECISION,
        rated_load_kg      INTEGER,
        landings           INTEGER,
        registered_model   TEXT NOT NULL DEFAULT '',
        car_in_group       INTEGER,
        agent_id           TEXT NOT NULL DEFAULT '',
        agent_version      TEXT NOT NULL DEFAULT '',
        vendor             TEXT NOT NULL DEFAULT '',
        model              TEXT NOT NULL DEFAULT '',
        firmware           TEXT NOT NULL DEFAULT '',
        serial             TEXT NOT NULL DEFAULT '',
        profile            TEXT NOT NULL DEFAULT '',
        controller_us      BIGINT,
        last_seen_us       BIGINT,
        link_up            INTEGER,
        link_us            BIGINT,
        status             TEXT NOT NULL DEFAULT 'never_seen',
        prev_status        TEXT NOT NULL DEFAULT '',
        prev_firmware      TEXT NOT NULL DEFAULT '',
        prev_agent_version TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX units_street ON units (street);
    CREATE INDEX units_contractor ON units (contractor);
    CREATE INDEX units_agent ON units (agent_id);
    CREATE INDEX units_status_seen ON units (status, last_seen_us);
    CREATE TABLE agents (
        agent_id       TEXT PRIMARY KEY,
        agent_version  TEXT NOT NULL DEFAULT '',
        last_seen_us   BIGINT,
        committed_seq  BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE records (
        agent_id  TEXT NOT NULL,
        seq       BIGINT NOT NULL,
        unit_id   TEXT NOT NULL,
        time_us   BIGINT NOT NULL,
        kind      TEXT NOT NULL,
        payload   BYTEA NOT NULL,
        PRIMARY KEY (agent_id, seq)
    );
    CREATE TABLE events (
        agent_id      TEXT NOT NULL,
        seq           BIGINT NOT NULL,
        unit_id       TEXT NOT NULL,
        time_us       BIGINT NOT NULL,
        event_id      TEXT NOT NULL,
        type          INTEGER NOT NULL,
        phase         INTEGER NOT NULL,
        onset_us      BIGINT,
        floor         INTEGER,
        reason        TEXT NOT NULL DEFAULT '',
        committed_us  BIGINT,
        PRIMARY KEY (agent_id, seq)
    );
    CREATE INDEX events_time ON events (time_us);
    CREATE INDEX events_unit_time ON events (unit_id, time_us);
    """
    + HISTORY_TABLES.format(id="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"),
    # Version 2, "lifecycle": alarms and their sends, the hash-chained unit history, daily
    # trip counter spans (see fleet.store.lifecycle).
    LIFECYCLE_TABLES.format(id="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"),
    # Version 3, "agent registry": the units each agent may report for under mutual
    # TLS (see fleet.store.agents).
    AGENT_UNITS_TABLE,
    # Version 4, "users": dashboard and API users, login sessions, API tokens (see
    # fleet.store.users).
    USER_TABLES,
    # Version 5, "dashboard": a partial index over the counters and link-status records
    # that a unit page reads over time (see fleet.store.sql.RECORDS_HEALTH_INDEX).
    RECORDS_HEALTH_INDEX,
    # Version 6, "verdicts": event codes and position, what each unit cannot detect, why
    # an alarm was closed early (see fleet.store.verdicts).
    VERDICTS_MIGRATION.format(id="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"),
    # Version 7, "publication": the register's optional columns, the district's published
    # lists and their history (see fleet.store.publication).
    PUBLICATION_MIGRATION.format(id="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"),
    # Version 8, "evidence": the flight recorder's windows and the dispatchers' requests
    # for them (issue 16, see fleet.store.evidence).
    EVIDENCE_MIGRATION.format(blob="BYTEA"),
    # Version 9, "maintenance": watched maintenance visits, contractors' maintenance
    # records and their verdicts (issue 17, see fleet.store.maintenance).
    MAINTENANCE_MIGRATION.format(id="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"),
    # Version 10, "northbound": per regional platform, the history cursor per unit, the
    # sender's lease and the dead letters (issue 21, see fleet.store.northbound).
    NORTHBOUND_MIGRATION.format(id="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"),
    # Version 11, "retention": hourly per-unit aggregates of folded raw records, the
    # records kept beyond the window, retention's cursors and lease (issue 18, see
    # fleet.store.retention).
    RETENTION_MIGRATION.format(blob="BYTEA", without_rowid=""),
    # Version 12, "reason codes": an event's reason as a code and its parameters, for
    # the reader's language (issue 19, see fleet.store.reasons).
    REASONS_MIGRATION,
    # Version 13, "liveness": marking a unit seen rewrites no index (issue 18, see
    # fleet.store.liveness).
    LIVENESS_MIGRATION + POSTGRES_FILLFACTOR,
    # Version 14, "releases": signed releases, rollouts and their members, the release
    # each agent is offered, and agents' update reports (issue 20, see fleet.store.releases).
    RELEASES_MIGRATION.format(id="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"),
    # Version 15, "roles": the lease of each fleet-wide job (the coverage sweep, alarm
    # dispatch), so that one instance runs it at a time (issue 18, see fleet.store.roles).
    ROLES_MIGRATION,
    # Version 16, "configs": agents' desired configuration documents, every version kept,
    # groups, and what each agent reports applied (issue 20, see fleet.store.configs).
    CONFIGS_MIGRATION.format(id="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"),
    # Version 17, "crew": who a dispatcher sent to an alarm and when they are expected
    # (issue 19, see fleet.store.crew).
    CREW_MIGRATION,
    # Version 18, "batches": raw records compacted into per-unit hourly batches, in a
    # table partitioned by day (issue 18, see fleet.store.batches).
    BATCHES_MIGRATION_POSTGRES,
    # Version 19, "unit hours packed": unit_hours rewritten with its columns in order of
    # alignment, unpadded (issue 18, see fleet.store.retention). PostgreSQL only: SQLite
    # pads nothing.
    UNIT_HOURS_PACKED_MIGRATION_POSTGRES,
    # Version 20, "unit keys": unit_hours keyed by a unit's number from unit_keys instead
    # of the text unit id (issue 18, long-term bytes; see fleet.store.retention).
    UNIT_KEYS_MIGRATION_POSTGRES,
)
SCHEMA_VERSION = len(MIGRATIONS)


def is_postgres_url(text: str) -> bool:
    """Whether ``text`` names a PostgreSQL database rather than a SQLite file."""
    return text.startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """``url`` without its password, for logs and error messages."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


class PostgresStore(SqlStore):
    """The PostgreSQL `Store`. Create with `PostgresStore.open`; use from one thread only."""

    @classmethod
    def open(cls, url: str, *, readonly: bool = False) -> PostgresStore:
        """Connect to ``url`` and (unless ``readonly``) migrate the schema.

        ``readonly`` sessions (the CLI) refuse to write and require the current schema.
        Raises `StoreError` with a one-line reason.
        """
        import psycopg  # the `postgres` extra; SQLite users never need it

        shown = redact(url)
        try:
            conn = psycopg.connect(url, autocommit=True, application_name="liftwatch-fleet")
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(f"cannot connect to {shown}: {reason}") from None
        try:
            if readonly:
                conn.execute("SET default_transaction_read_only = on")
                version = _version(conn)
                if version != SCHEMA_VERSION:
                    raise StoreError(
                        f"database {shown} has schema version {version}, expected "
                        f"{SCHEMA_VERSION}: is it a fleet database? (serve migrates it)"
                    )
            else:
                _migrate(conn, shown)
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(f"cannot use database {shown}: {exc}") from None
        except StoreError:
            conn.close()
            raise
        return cls(conn, shown)

    @contextmanager
    def _transaction(self, *, durable: bool = False) -> Iterator[None]:
        with self._conn.transaction():
            if not durable:
                self._conn.execute("SET LOCAL synchronous_commit = off")
            yield

    def _sql(self, text: str) -> str:
        return text.replace("?", "%s")

    def _run_many(self, text: str, rows: Sequence[Sequence[object]]) -> list[list[tuple[Any, ...]]]:
        # executemany pipelines the statements: one round trip for all rows.
        if not rows:
            return []
        cursor = self._conn.cursor()
        cursor.executemany(self._sql(text), rows, returning=True)
        results: list[list[tuple[Any, ...]]] = []
        while True:
            results.append(cursor.fetchall())
            if not cursor.nextset():
                break
        return results

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        from psycopg.pq import TransactionStatus

        if self._conn.info.transaction_status != TransactionStatus.IDLE:
            yield
            return
        # REPEATABLE READ: every statement of the block sees the same snapshot (READ
        # COMMITTED would let a compaction committed between two reads show its records
        # twice, or not at all).
        with self._conn.transaction():
            self._conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            yield

    def _lock_agent(self, agent_id: str) -> None:
        self._conn.execute("SELECT 1 FROM agents WHERE agent_id = %s FOR UPDATE", (agent_id,))

    def _batch_partition(self, hour_us: int) -> None:
        # One partition per UTC day, made by compaction in its own transaction before it
        # writes a day's first batch. Made standalone with the range as a CHECK, then
        # ATTACHed: that takes SHARE UPDATE EXCLUSIVE on record_batches, which readers
        # and writers do not wait for (CREATE TABLE ... PARTITION OF would take ACCESS
        # EXCLUSIVE until the compaction commits). Asked every time, not cached: another
        # instance may have dropped the day since (a late record of a folded day makes
        # it again, to be folded and dropped).
        name = partition_name(hour_us)
        start = hour_us // DAY_US * DAY_US
        found = self._conn.execute(
            "SELECT c.relispartition FROM pg_class c WHERE c.oid = to_regclass(%s)", (name,)
        ).fetchone()
        if found is not None and found[0]:
            return
        if found is None:
            self._conn.execute(
                f"CREATE TABLE {name} (LIKE record_batches INCLUDING DEFAULTS, "
                f"CHECK (hour_us >= {start} AND hour_us < {start + DAY_US}))"
            )
        self._conn.execute(
            f"ALTER TABLE record_batches ATTACH PARTITION {name} "
            f"FOR VALUES FROM ({start}) TO ({start + DAY_US})"
        )

    def _drop_batch_partitions(self, cutoff_us: int, fence: Callable[[], bool]) -> int:
        # A day wholly before the cutoff that folding has emptied goes whole: its space
        # returns at once, with no dead rows left for autovacuum. DETACH CONCURRENTLY
        # first (readers of record_batches are not blocked; a plain DROP of a partition
        # takes ACCESS EXCLUSIVE on the parent and queues every reader behind any long
        # one), then the emptiness is judged on the detached table, which nothing can
        # write to any more: a late batch that slipped in is attached again, never lost.
        found = self._conn.execute(
            "SELECT c.relname, c.relispartition, COALESCE(i.inhdetachpending, false) "
            "FROM pg_class c LEFT JOIN pg_inherits i ON i.inhrelid = c.oid "
            "WHERE c.relname LIKE 'record\\_batches\\_%%' AND c.relkind = 'r' "
            "AND pg_table_is_visible(c.oid) ORDER BY c.relname"
        ).fetchall()
        dropped = 0
        for name, attached, pending in found:
            day = str(name).removeprefix("record_batches_")
            if not (len(day) == 8 and day.isdigit()):
                continue
            start = int(
                (dt.datetime.strptime(day, "%Y%m%d") - dt.datetime(1970, 1, 1))
                / dt.timedelta(microseconds=1)
            )
            if start + DAY_US > cutoff_us:
                continue
            with self._transaction():
                if not fence():
                    return dropped  # another instance runs retention now
            try:
                if pending:  # a detach interrupted part-way (a crash, a cancel)
                    self._conn.execute(
                        f"ALTER TABLE record_batches DETACH PARTITION {name} FINALIZE"
                    )
                elif attached:
                    if self._conn.execute(f"SELECT 1 FROM {name} LIMIT 1").fetchone():
                        continue  # not folded yet (held back, or damaged batches)
                    self._conn.execute(
                        f"ALTER TABLE record_batches DETACH PARTITION {name} CONCURRENTLY"
                    )
                with self._transaction():
                    if self._conn.execute(f"SELECT 1 FROM {name} LIMIT 1").fetchone():
                        self._conn.execute(
                            f"ALTER TABLE record_batches ATTACH PARTITION {name} "
                            f"FOR VALUES FROM ({start}) TO ({start + DAY_US})"
                        )
                    else:
                        self._conn.execute(f"DROP TABLE {name}")
                        dropped += 1
            except Exception as exc:  # psycopg's errors; tried again next run
                log.warning("retention: partition %s not dropped: %s", name, exc)
        return dropped

    # One array per column: any number of rows binds as a few parameters.
    _rows_per_statement = 20_000

    def _rows(
        self, rows: Sequence[Sequence[object]], types: Sequence[str]
    ) -> tuple[str, list[object]]:
        # unnest() over one array per column: the statement text is the same whatever the
        # number of rows (one plan), and it never meets the limit of 65,535 parameters.
        arrays = ", ".join(f"?::{t}[]" for t in types)
        names = ", ".join(f"column{n}" for n in range(1, len(types) + 1))
        return f"unnest({arrays}) AS v({names})", [list(c) for c in zip(*rows, strict=True)]


def _version(conn: Any) -> int:
    exists = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()[0]
    if not exists:
        return 0
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def _migrate(conn: Any, shown: str) -> None:
    # Current already: write nothing, so an application role without DDL rights (see
    # `grant_app_role`) opens the database; the owner migrates it.
    if _version(conn) == SCHEMA_VERSION:
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        version = _version(conn)
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"database {shown} has schema version {version}; this fleet knows up to "
                f"{SCHEMA_VERSION} (newer software wrote it)"
            )
        for index in range(version, SCHEMA_VERSION):
            conn.execute(MIGRATIONS[index])
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION,))


# What `grant_app_role` lets the fleet's application role do, table by table: the rows the
# history chains and the reports rest on are append-only for it (no UPDATE, no DELETE, no
# TRUNCATE); a table not listed gets SELECT, INSERT, UPDATE and DELETE.
APP_ROLE_PRIVILEGES: dict[str, tuple[str, ...]] = {
    "schema_version": ("SELECT",),  # the owner migrates
    "unit_history": ("SELECT", "INSERT"),  # the hash chains
    "events": ("SELECT", "INSERT"),  # chained: an event entry per stored event
    "records": ("SELECT", "INSERT"),  # what the agents sent, as sent
    "coverage_history": ("SELECT", "INSERT"),
    "firmware_history": ("SELECT", "INSERT"),
    "history_checks": ("SELECT", "INSERT"),  # the checkpoint verifications
    "unit_history_head": ("SELECT", "INSERT", "UPDATE"),  # moves on every append
    "alarms": ("SELECT", "INSERT", "UPDATE"),  # steps UPDATE it; each step is chained
    "publication_steps": ("SELECT", "INSERT"),  # who drafted, approved, published
    "evidence": ("SELECT", "INSERT"),  # chained: its hash is in the unit's history
    "evidence_requests": ("SELECT", "INSERT", "UPDATE"),  # pending -> sent; each is chained
    # A record is never deleted; its verdict is updated, each change chained (issue 17).
    "maintenance_records": ("SELECT", "INSERT", "UPDATE"),
    "maintenance_visits": ("SELECT", "INSERT", "UPDATE"),  # open until it ends; chained then
}
FULL_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")


def grant_app_role(url: str, role: str) -> dict[str, tuple[str, ...]]:
    """Migrate the database at ``url`` (connected as its owner) and give the existing
    role ``role`` what the fleet needs to run and no more: `APP_ROLE_PRIVILEGES`.
    Idempotent (run it again after an upgrade adds tables). Returns the privileges
    granted by table. Raises `StoreError` naming what failed."""
    import psycopg
    from psycopg import sql

    PostgresStore.open(url).close()  # migrated: every table exists
    shown = redact(url)
    try:
        with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
            found = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if found is None:
                raise StoreError(
                    f"role {role!r} does not exist on {shown}: create it first "
                    f"(CREATE ROLE {role} LOGIN PASSWORD '...')"
                )
            name = sql.Identifier(role)
            schema = conn.execute("SELECT current_schema()").fetchone()
            assert schema is not None
            tables = [
                str(r[0])
                for r in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                    "ORDER BY tablename"
                ).fetchall()
            ]
            conn.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    sql.Identifier(str(conn.info.dbname)), name
                )
            )
            conn.execute(
                sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema[0]), name)
            )
            granted: dict[str, tuple[str, ...]] = {}
            for table in tables:
                privileges = APP_ROLE_PRIVILEGES.get(table, FULL_PRIVILEGES)
                target = sql.Identifier(table)
                # Revoke first: a second run after a policy change leaves nothing behind.
                conn.execute(sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(target, name))
                conn.execute(
                    sql.SQL("GRANT {} ON TABLE {} TO {}").format(
                        sql.SQL(", ").join(sql.SQL(p) for p in privileges), target, name
                    )
                )
                granted[table] = privileges
            # Identity columns draw from sequences the tables own.
            conn.execute(
                sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA {} TO {}").format(
                    sql.Identifier(schema[0]), name
                )
            )
    except psycopg.Error as exc:
        raise StoreError(f"cannot grant {role!r} on {shown}: {exc}") from None
    return granted
