"""Migration "retention" (issue 18) and the store side of the raw records' lifecycle.

Raw records older than the window ([retention] window_days, 14 by default) are *folded*:
what the long-term reads need of them is kept, the rest is deleted. Per record kind:

- ``car_state`` (almost every record: about 0.65 per car per second on the demo's mix):
  folded into ``unit_hours``, one row per unit and UTC hour, kept for the lift's life
  (keyed by the unit's number, ``unit_keys``, not its text id):
  car-state records seen, the first and last one's time, the widest silence between two
  of them, trips (starts: not moving -> moving), door cycles (into DOOR_STATE_OPEN), run
  time (moving), time in each service mode (``mode_us``, JSON ``{"mode number": µs}``).
  Time is sample-and-hold: a record's state lasts until the next record, at most
  `HOLD_US` (a longer silence is unwatched time, counted in no mode). The newest car
  state of each unit is also copied to ``records_kept`` (the unit page's "last seen
  state" of a lift silent for longer than the window).
- ``counters`` (one a minute): the last one of each hour (h, h + 1 h] is folded into
  ``unit_hours``
  (``counters_us`` and its totals, door medians and trends): the maintenance plan's
  counters "at or last before" a time answer from it beyond the window, exactly for a
  time on the hour, else to the hour. Kept whole in ``records_kept``: a unit's very
  first Counters record (the reading "first after" a time before it), and the readings
  at or last before the start and end of each of its visits and the end of each of its
  maintenance records (where the plan by need counts usage from), so those answer
  exactly too.
- ``link_status`` (about two a minute on the demo): ``link_up`` / ``link_n`` of
  ``unit_hours`` count the hour's link-status records and those saying up (the link's
  availability); the records where the link changed (up -> down, down -> up, and a
  unit's first) are kept whole in ``records_kept``. A verdict asks of a span whether a
  record in it, or the last one before it, says down, and when: the changes answer that
  as all the records did (`fleet.store.maintenance.MaintenanceStore.link_states`). So is
  each unit's newest (the unit page's link of a lift silent for longer than the window).
- ``controller_info`` (at start and on change): kept whole (``records_kept``), it feeds
  the firmware history.
- ``event``, ``evidence``: their own tables hold them forever (``events``, ``evidence``);
  the raw copy is deleted. Alarms, the history chains, maintenance records, visits,
  verdicts, audits and ``unit_trips_daily`` (the fault-rate report's exposure) are other
  tables and never touched.

Folding is incremental per agent, in the order of the agent's seq (the primary key, so
no time index is needed on the ingest path): ``retention_agents`` holds the highest seq
folded. It never passes the agent's ``committed_seq`` nor the visit derivation's cursor
(``maintenance_derived``): retention waits for the slowest consumer of raw records, so
the derivation never misses a record. (The northbound forwarder reads the history chain,
not raw records.) It stops at an agent's first record inside the window. Each batch is
one short transaction: fold, copy, delete, move the cursor; ingest's transactions
interleave between batches, so retention never holds ingest up for longer than a batch.

``retention_state`` has one row (``name`` = 'raw') with the lease that makes one fleet
instance at a time the one that runs retention (`fleet.store.lease`, as the northbound
forwarder's senders hold theirs; every batch is fenced by it), and the last run's
figures for `liftwatch-fleet retention status` and the metrics.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from fleet.store import batches, lease
from protos.liftwatch.v1 import records_pb2

if TYPE_CHECKING:
    from fleet.store.sql import SqlStore

__all__ = [
    "HOLD_US",
    "HOUR_US",
    "RETENTION_MIGRATION",
    "UNIT_HOURS_PACKED_MIGRATION_POSTGRES",
    "UNIT_KEYS_MIGRATION_POSTGRES",
    "UNIT_KEYS_MIGRATION_SQLITE",
    "FoldPass",
    "FoldResult",
    "Held",
    "Retention",
    "RetentionLeaseLostError",
    "RetentionStatus",
    "StateHour",
    "state_hours",
]

RETENTION_MIGRATION = """
CREATE TABLE unit_hours (
    unit_id              TEXT NOT NULL,
    hour_us              BIGINT NOT NULL,
    car_states           INTEGER NOT NULL DEFAULT 0,
    first_us             BIGINT,
    last_us              BIGINT,
    widest_gap_us        BIGINT NOT NULL DEFAULT 0,
    trips                INTEGER NOT NULL DEFAULT 0,
    door_cycles          INTEGER NOT NULL DEFAULT 0,
    run_us               BIGINT NOT NULL DEFAULT 0,
    mode_us              TEXT NOT NULL DEFAULT '{{}}',
    last_mode            INTEGER,
    last_moving          INTEGER,
    last_door            INTEGER,
    link_n               INTEGER NOT NULL DEFAULT 0,
    link_up              INTEGER NOT NULL DEFAULT 0,
    counters_us          BIGINT,
    trips_total          BIGINT,
    door_cycles_total    BIGINT,
    run_hours_total      BIGINT,
    door_open_median_ms  INTEGER,
    door_close_median_ms INTEGER,
    door_open_trend      REAL,
    door_close_trend     REAL,
    PRIMARY KEY (unit_id, hour_us)
){without_rowid};
CREATE TABLE records_kept (
    agent_id  TEXT NOT NULL,
    seq       BIGINT NOT NULL,
    unit_id   TEXT NOT NULL,
    time_us   BIGINT NOT NULL,
    kind      TEXT NOT NULL,
    payload   {blob} NOT NULL,
    PRIMARY KEY (agent_id, seq)
);
CREATE INDEX records_kept_unit ON records_kept (unit_id, kind, time_us);
CREATE TABLE retention_agents (
    agent_id  TEXT PRIMARY KEY,
    seq       BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE retention_state (
    name            TEXT PRIMARY KEY,
    owner           TEXT NOT NULL DEFAULT '',
    lease_until_us  BIGINT NOT NULL DEFAULT 0,
    epoch           BIGINT NOT NULL DEFAULT 0,
    last_run_us     BIGINT,
    cutoff_us       BIGINT,
    folded          BIGINT NOT NULL DEFAULT 0,
    deleted         BIGINT NOT NULL DEFAULT 0,
    kept            BIGINT NOT NULL DEFAULT 0
);
INSERT INTO retention_state (name) VALUES ('raw');
"""

log = logging.getLogger(__name__)

HOUR_US = 3_600_000_000
# A compaction step takes this many times [retention] batch_records records, and at most
# STEP_BYTES of payloads: an hour of a unit's batch is then written once or twice a run,
# not re-encoded at every small step (an agent of 32 cars touches 32 hours a step).
COMPACT_STEP_FACTOR = 10
STEP_BYTES = 16_000_000
# A car-state record's state counts for at most this long: a longer silence is time the
# fleet did not watch (the verdicts' default watch gap, [maintenance.verdicts] max_gap_s).
HOLD_US = 60_000_000
# Kinds copied to records_kept whole (forever): rare, and read by time beyond the window.
KEPT_KINDS = ("controller_info",)

_MOVING_UNKNOWN = -1
# A batch's last Counters reading of a unit stands for the next 10 minutes (its next
# reading lies in the next batch): kept when a visit's boundary falls in them.
_READING_REACH_US = 600_000_000
_KEEP = (
    "INSERT INTO records_kept (agent_id, seq, unit_id, time_us, kind, payload) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_HOUR_COLUMNS = (
    "unit_id, hour_us, car_states, first_us, last_us, widest_gap_us, trips, door_cycles, "
    "run_us, mode_us, last_mode, last_moving, last_door, link_n, link_up, counters_us, "
    "trips_total, door_cycles_total, run_hours_total, door_open_median_ms, "
    "door_close_median_ms, door_open_trend, door_close_trend"
)
# Parameters as `_Hour.row` gives them, the unit id first (its number looked up).
_HOUR_UPSERT = (
    "INSERT INTO unit_hours (unit_no, {rest}) VALUES ((SELECT unit_no FROM unit_keys "
    "WHERE unit_id = ?), {marks}) ON CONFLICT (unit_no, hour_us) DO UPDATE SET {sets}"
).format(
    rest=_HOUR_COLUMNS.removeprefix("unit_id, "),
    marks=", ".join("?" * 22),
    sets=", ".join(f"{c} = excluded.{c}" for c in _HOUR_COLUMNS.split(", ")[2:]),
)


def _owned_as(old: str, new: str) -> str:
    """PostgreSQL: a DO block giving table ``new`` the owner of table ``old`` and every
    grant made on it (`grant_app_role`'s among them), for a migration that rewrites a
    table: the application role keeps what it had."""
    return f"""DO $$
DECLARE
    owner oid := (SELECT relowner FROM pg_class WHERE oid = '{old}'::regclass);
    given record;
BEGIN
    EXECUTE format('ALTER TABLE {new} OWNER TO %I', pg_get_userbyid(owner));
    FOR given IN
        SELECT a.privilege_type, a.grantee, a.is_grantable
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.oid = '{old}'::regclass AND a.grantee <> c.relowner
    LOOP
        EXECUTE format(
            'GRANT %s ON {new} TO %s%s',
            given.privilege_type,
            CASE WHEN given.grantee = 0 THEN 'PUBLIC'
                 ELSE quote_ident(pg_get_userbyid(given.grantee)) END,
            CASE WHEN given.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END
        );
    END LOOP;
END
$$;"""


# PostgreSQL only: ``unit_hours`` rewritten with its columns in order of alignment. An
# 8-byte column starts on an 8-byte boundary, so the original order (text, then 8-byte
# and 4-byte columns mixed) padded about 11 bytes a row; ``last_moving`` holds -1, 0 or 1
# (`_add_car_state`), so SMALLINT. On bench/storage.py's folded hours: 183 -> 170 bytes a
# row (pg_column_size), 184 -> 176 on the page. The other types stay: times, run time (up
# to an hour and HOLD_US: over 2^31 µs) and the uint64 totals need 8 bytes, the per-hour
# counts have no bound that 2 bytes hold, and a mode or door is a proto3 enum, any int32
# an agent sends. SQLite stores integers as varints, unpadded: it needs no such
# migration. Names, meanings and the values read back are unchanged; the table's owner
# and grants (`grant_app_role`) pass to the new table.
# The packed layout's 8-byte columns, then its 4- and 2-byte ones (both DDL below).
_WIDE_COLUMNS = """\
    hour_us              BIGINT NOT NULL,
    first_us             BIGINT,
    last_us              BIGINT,
    widest_gap_us        BIGINT NOT NULL DEFAULT 0,
    run_us               BIGINT NOT NULL DEFAULT 0,
    counters_us          BIGINT,
    trips_total          BIGINT,
    door_cycles_total    BIGINT,
    run_hours_total      BIGINT,
"""
_NARROW_COLUMNS = """\
    car_states           INTEGER NOT NULL DEFAULT 0,
    trips                INTEGER NOT NULL DEFAULT 0,
    door_cycles          INTEGER NOT NULL DEFAULT 0,
    link_n               INTEGER NOT NULL DEFAULT 0,
    link_up              INTEGER NOT NULL DEFAULT 0,
    last_mode            INTEGER,
    last_door            INTEGER,
    door_open_median_ms  INTEGER,
    door_close_median_ms INTEGER,
    door_open_trend      REAL,
    door_close_trend     REAL,
    last_moving          SMALLINT,
"""
UNIT_HOURS_PACKED_MIGRATION_POSTGRES = f"""
CREATE TABLE unit_hours_packed (
{_WIDE_COLUMNS}{_NARROW_COLUMNS}    unit_id              TEXT NOT NULL,
    mode_us              TEXT NOT NULL DEFAULT '{{}}',
    PRIMARY KEY (unit_id, hour_us)
);
INSERT INTO unit_hours_packed ({_HOUR_COLUMNS}) SELECT {_HOUR_COLUMNS} FROM unit_hours;
{_owned_as("unit_hours", "unit_hours_packed")}
DROP TABLE unit_hours;
ALTER TABLE unit_hours_packed RENAME TO unit_hours;
ALTER TABLE unit_hours RENAME CONSTRAINT unit_hours_packed_pkey TO unit_hours_pkey;
"""


# ``unit_hours`` keyed by a unit's number (issue 18, long-term bytes): the text unit id
# (about 20 characters) stood in every hour row and its primary-key entry, 24 rows a
# car-day; now once per unit in ``unit_keys``. Both backends: SQLite keeps the hours
# WITHOUT ROWID, so a text key stood in its rows too and they shrink as well; one SQL
# path then serves both. ``unit_no`` is given by the fold (`_UNIT_KEY`), not an identity
# column: PostgreSQL's sequence would draw a number at every conflicting insert and its
# privileges would have to follow the table's. The columns keep the packed order
# (PostgreSQL), the 4-byte ``unit_no`` among the 4-byte ones; SQLite ignores the order.
_KEYED_COLUMNS = "unit_no, " + _HOUR_COLUMNS.removeprefix("unit_id, ")
_UNIT_HOURS_KEYED = f"""
CREATE TABLE unit_keys (
    unit_no  INTEGER PRIMARY KEY,
    unit_id  TEXT NOT NULL UNIQUE
);
INSERT INTO unit_keys (unit_no, unit_id)
SELECT row_number() OVER (ORDER BY unit_id), unit_id
FROM (SELECT DISTINCT unit_id FROM unit_hours) u;
CREATE TABLE unit_hours_keyed (
{_WIDE_COLUMNS}    unit_no              INTEGER NOT NULL,
{_NARROW_COLUMNS}    mode_us              TEXT NOT NULL DEFAULT '{{{{}}}}',
    PRIMARY KEY (unit_no, hour_us)
){{without_rowid}};
INSERT INTO unit_hours_keyed ({_KEYED_COLUMNS})
SELECT {_KEYED_COLUMNS} FROM unit_hours JOIN unit_keys USING (unit_id);
"""
_KEYED_SWAP = """
DROP TABLE unit_hours;
ALTER TABLE unit_hours_keyed RENAME TO unit_hours;
"""
UNIT_KEYS_MIGRATION_SQLITE = _UNIT_HOURS_KEYED.format(without_rowid=" WITHOUT ROWID") + _KEYED_SWAP
UNIT_KEYS_MIGRATION_POSTGRES = "\n".join(
    (
        _UNIT_HOURS_KEYED.format(without_rowid=""),
        _owned_as("unit_hours", "unit_keys"),
        _owned_as("unit_hours", "unit_hours_keyed"),
        _KEYED_SWAP,
        "ALTER TABLE unit_hours RENAME CONSTRAINT unit_hours_keyed_pkey TO unit_hours_pkey;",
    )
)
# What the readers read, a unit's hours (the unit id the parameter): ``unit_id`` comes
# from unit_keys, every other column from the hour. The unit's number is looked up first
# (a scalar subquery, not only the join's condition): PostgreSQL then reads the primary
# key in hour order for an ORDER BY hour_us ... LIMIT; filtering on the joined unit_id it
# sorted every hour of the unit to find the newest.
_HOURS_OF_UNIT = (
    "unit_hours JOIN unit_keys USING (unit_no) "
    "WHERE unit_no = (SELECT unit_no FROM unit_keys WHERE unit_id = ?)"
)
# A unit's number, the next free one, given the first time one of its hours is written.
# NOT EXISTS: no statement runs for a unit already numbered; ON CONFLICT: a fleet that lost
# the retention lease numbering the same unit at once (its transaction then fails, fenced).
_UNIT_KEY = (
    "INSERT INTO unit_keys (unit_no, unit_id) "
    "SELECT (SELECT COALESCE(MAX(unit_no), 0) + 1 FROM unit_keys), ? "
    "WHERE NOT EXISTS (SELECT 1 FROM unit_keys WHERE unit_id = ?) ON CONFLICT DO NOTHING"
)


@dataclass(slots=True)
class _Hour:
    """One ``unit_hours`` row while a batch is folded into it (mutable scratch)."""

    unit_id: str
    hour_us: int
    car_states: int = 0
    first_us: int | None = None
    last_us: int | None = None
    widest_gap_us: int = 0
    trips: int = 0
    door_cycles: int = 0
    run_us: int = 0
    mode_us: dict[str, int] = dataclasses.field(default_factory=dict)
    last_mode: int | None = None
    last_moving: int | None = None
    last_door: int | None = None
    link_n: int = 0
    link_up: int = 0
    counters_us: int | None = None
    trips_total: int | None = None
    door_cycles_total: int | None = None
    run_hours_total: int | None = None
    door_open_median_ms: int | None = None
    door_close_median_ms: int | None = None
    door_open_trend: float | None = None
    door_close_trend: float | None = None

    def row(self) -> tuple[object, ...]:
        values = [getattr(self, f.name) for f in dataclasses.fields(self)]
        values[9] = json.dumps(self.mode_us, separators=(",", ":"), sort_keys=True)
        return tuple(values)


def _hour_of_row(row: Sequence[Any]) -> _Hour:
    hour = _Hour(*row)
    hour.mode_us = json.loads(str(row[9]))
    return hour


class RetentionLeaseLostError(Exception):
    """Another fleet instance took the retention lease: this one stops folding."""


@dataclass(frozen=True, slots=True)
class Held:
    """The retention lease as this instance holds it (`Retention.acquire`)."""

    owner: str
    epoch: int


@dataclass(frozen=True, slots=True)
class FoldResult:
    """What one retention run did: records folded into aggregates, deleted from the raw
    batches, copied to ``records_kept``; the cutoff (µs) it folded up to; agents held
    back by a consumer (the visit derivation) that has not read their old records yet;
    records compacted into batches, batches written, partitions dropped (PostgreSQL),
    agents whose records could not be compacted this run and batches that did not decode
    (both named in the log, tried again next run)."""

    cutoff_us: int
    folded: int
    deleted: int
    kept: int
    held_back: int
    compacted: int = 0
    batches: int = 0
    partitions_dropped: int = 0
    failed_agents: int = 0
    damaged_batches: int = 0


@dataclass(frozen=True, slots=True)
class RetentionStatus:
    """Where retention stands: the last run (µs, None before the first), its cutoff and
    counts, the oldest raw record's time (None: none), the lease holder ("" = none)."""

    last_run_us: int | None
    cutoff_us: int | None
    folded: int
    deleted: int
    kept: int
    oldest_raw_us: int | None
    owner: str
    lease_until_us: int


class Retention:
    """Folding and deleting raw records over the driver hooks of a `SqlStore` (both
    backends: the same SQL); use from the store's thread."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    # -- the lease: one instance runs retention at a time ------------------------------

    def acquire(self, owner: str, now_us: int, lease_s: float) -> Held | None:
        """Take the retention lease for ``owner`` when free or run out (`fleet.store.lease`,
        as the northbound senders do); None when another instance holds it."""
        s = self._store
        with s._transaction():
            until = now_us + int(lease_s * 1_000_000)
            epoch = lease.acquire(s, "retention_state", "name", "raw", owner, until, now_us)
        return None if epoch is None else Held(owner, epoch)

    def renew(self, held: Held, now_us: int, lease_s: float) -> bool:
        """Extend ``held``; False when another instance took the lease meanwhile."""
        s = self._store
        with s._transaction():
            until = now_us + int(lease_s * 1_000_000)
            return self._fence(held, "lease_until_us = ?", (until,))

    def release(self, held: Held) -> None:
        """Give the lease up (a clean stop) so another instance takes over at once."""
        s = self._store
        with s._transaction():
            lease.release(s, "retention_state", "name", "raw", held.owner, held.epoch)

    def _fence(self, held: Held, assignments: str, params: Sequence[object]) -> bool:
        key = ("raw", held.owner, held.epoch)
        return lease.fence(self._store, "retention_state", "name", *key, assignments, params)

    # -- folding -----------------------------------------------------------------------

    def run(
        self,
        held: Held,
        now_us: int,
        window_us: int,
        batch: int,
        *,
        compact_after_us: int = HOUR_US,
    ) -> FoldResult:
        """Fold and delete every raw record older than the window's hour-aligned cutoff
        (the batches first, then the hot records among those compaction takes) and
        compact the rest older than ``compact_after_us`` that the slowest consumer has
        read (`FoldPass`), ``batch`` records a transaction, while ``held`` is the lease
        (each transaction is fenced by it; `RetentionLeaseLostError` when another
        instance took it: what was committed stays, it continues there). In one go, for
        the CLI; serve runs a `FoldPass` a step per store call."""
        run = FoldPass(held, now_us, window_us, batch, compact_after_us=compact_after_us)
        while run.step(self._store):
            pass
        return run.finish(self._store)

    def _compact_batch(
        self,
        held: Held,
        agent_id: str,
        after: int,
        limit: int,
        cutoffs: tuple[int, int],
        step: int,
    ) -> tuple[int, int, int, int, int, int, bool]:
        """One transaction over the agent's raw records after seq ``after`` (up to
        ``limit``, at most ``step`` records and `STEP_BYTES` of payloads) with a time
        before the compaction cutoff (``cutoffs``: the fold's, then compaction's): those
        older than the fold's cutoff (a first run after an upgrade, an agent's late
        records) are folded at once, the rest moved into their (unit, kind, hour)
        batches (`fleet.store.batches`). Returns (records moved, batches written,
        records folded, records folded and deleted, copied to records_kept, the new
        cursor, whether the agent's first record at or past the cutoff was reached)."""
        s = self._store
        fold_cutoff, cutoff = cutoffs
        # Most agents' next record is the newest hour's: one row tells, not a batch of
        # payloads.
        first = s._execute(
            "SELECT time_us FROM records WHERE agent_id = ? AND seq > ? AND seq <= ? "
            "ORDER BY seq LIMIT 1",
            (agent_id, after, limit),
        ).fetchone()
        if first is None or int(first[0]) >= cutoff:
            return 0, 0, 0, 0, 0, after, True
        with s._transaction():
            # First, so that on PostgreSQL a second instance's batch (its lease lost) waits
            # on this row's lock, then finds the epoch moved on: no record moves twice.
            if not self._fence(held, "epoch = epoch", ()):
                raise RetentionLeaseLostError("retention: lease lost (another instance runs it)")
            # Then the agent's row, which ingest's write locks first too: a replay of
            # records being moved waits here and then finds them behind the cursor,
            # instead of slipping in beside their batch (PostgreSQL; SQLite has one
            # writer).
            s._lock_agent(agent_id)
            sizes = s._execute(
                "SELECT seq, time_us, length(payload) FROM records WHERE agent_id = ? "
                "AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                (agent_id, after, limit, step),
            ).fetchall()
            last, total, reached = after, 0, len(sizes) < step
            for seq, time_us, size in sizes:
                if int(time_us) >= cutoff:
                    reached = True
                    break
                # At least one record a step, however large: a step always moves on.
                if total and total + int(size) > STEP_BYTES:
                    break
                last, total = int(seq), total + int(size)
            if last == after:
                return 0, 0, 0, 0, 0, after, True
            rows = s._execute(
                "SELECT seq, unit_id, time_us, kind, payload FROM records WHERE agent_id = ? "
                "AND seq > ? AND seq <= ? ORDER BY seq",
                (agent_id, after, last),
            ).fetchall()
            old = [r for r in rows if int(r[2]) < fold_cutoff]
            folded, copied = self._fold(agent_id, old) if old else (0, 0)
            groups: dict[tuple[str, str, int], list[batches.BatchRecord]] = {}
            for seq, unit_id, time_us, kind, payload in rows:
                at = int(time_us)
                if at < fold_cutoff:
                    continue
                groups.setdefault((str(unit_id), str(kind), at // HOUR_US * HOUR_US), []).append(
                    batches.BatchRecord(int(seq), at, str(kind), bytes(payload))
                )
            # Once per day the step touches, not per batch: on PostgreSQL each asks the
            # catalog (a step holds hundreds of unit-hours of one or two days).
            for day in sorted({hour_us // batches.DAY_US for _, _, hour_us in groups}):
                s._batch_partition(day * batches.DAY_US)
            written = sum(
                self._merge_batch(agent_id, unit_id, kind, hour_us, records)
                for (unit_id, kind, hour_us), records in groups.items()
            )
            moved = s._execute(
                "DELETE FROM records WHERE agent_id = ? AND seq > ? AND seq <= ? RETURNING seq",
                (agent_id, after, last),
            ).fetchall()
            if len(moved) != len(rows):
                # A row came or went between the read and the delete: undo, try next run.
                raise RuntimeError(
                    f"retention: agent {agent_id}'s records after seq {after} changed while "
                    "they were compacted"
                )
            s._execute(
                "INSERT INTO retention_agents (agent_id, seq) VALUES (?, ?) "
                "ON CONFLICT (agent_id) DO UPDATE SET seq = excluded.seq",
                (agent_id, last),
            )
        return len(moved) - len(old), written, folded, len(old), copied, last, reached

    def _merge_batch(
        self,
        agent_id: str,
        unit_id: str,
        kind: str,
        hour_us: int,
        records: list[batches.BatchRecord],
    ) -> int:
        """Write ``records`` (seq order, one kind) into the (unit, hour, kind, agent)
        batch, merged with the last part an earlier compaction wrote there while it has
        room (`batches.PART_RECORDS`, `batches.PART_BYTES`), else as the next parts; how
        many parts were written. The hour's partition must exist (`_compact_batch` makes
        each day's once a step)."""
        s = self._store
        found = s._execute(
            "SELECT first_seq, records, payload_bytes, body FROM record_batches "
            "WHERE unit_id = ? AND hour_us = ? AND kind = ? AND agent_id = ? "
            "ORDER BY first_seq DESC LIMIT 1",
            (unit_id, hour_us, kind, agent_id),
        ).fetchone()
        size = sum(len(r.payload) for r in records)
        if (
            found is not None
            and int(found[1]) + len(records) <= batches.PART_RECORDS
            and int(found[2]) + size <= batches.PART_BYTES
        ):
            s._execute(
                "DELETE FROM record_batches WHERE unit_id = ? AND hour_us = ? AND kind = ? "
                "AND agent_id = ? AND first_seq = ?",
                (unit_id, hour_us, kind, agent_id, int(found[0])),
            )
            records = sorted([*batches.decode(bytes(found[3])), *records], key=lambda r: r.seq)
        # A step brings up to COMPACT_STEP_FACTOR x batch_records records and STEP_BYTES
        # of payloads, more than a part takes: cut into parts, each within the bounds.
        parts = _parts(records)
        for part in parts:
            s._execute(
                "INSERT INTO record_batches (unit_id, hour_us, kind, agent_id, first_seq, "
                "last_seq, start_us, end_us, records, payload_bytes, body) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    unit_id,
                    hour_us,
                    kind,
                    agent_id,
                    part[0].seq,
                    part[-1].seq,
                    min(r.time_us for r in part),
                    max(r.time_us for r in part),
                    len(part),
                    sum(len(r.payload) for r in part),
                    batches.encode(part),
                ),
            )
        return len(parts)

    def _fold_batches(
        self, held: Held, cutoff: int, batch: int, skip: set[tuple[Any, ...]]
    ) -> tuple[int, int, int, int]:
        """One transaction: fold the oldest batches of an hour before ``cutoff`` into the
        aggregates and delete them, about ``batch`` records' worth; (records folded,
        records deleted, records copied to records_kept, batches done). A batch that
        does not decode is left where it is, named in the log and added to ``skip``
        (the caller's, for the rest of its run): one damaged row must not stop the
        folding of every other."""
        s = self._store
        keys = s._execute(
            "SELECT unit_id, hour_us, kind, agent_id, first_seq, records FROM record_batches "
            "WHERE hour_us < ? ORDER BY hour_us, unit_id, kind, agent_id, first_seq LIMIT ?",
            (cutoff, max(1, batch // 100) + len(skip)),
        ).fetchall()
        taken, records = [], 0
        for key in keys:
            if tuple(key[:5]) in skip:
                continue
            taken.append(tuple(key[:5]))
            records += int(key[5])
            if records >= batch:
                break
        if not taken:
            return 0, 0, 0, 0
        folded = deleted = copied = 0
        with s._transaction():
            if not self._fence(held, "epoch = epoch", ()):
                raise RetentionLeaseLostError("retention: lease lost (another instance runs it)")
            for key in taken:
                found = s._execute(
                    "SELECT body FROM record_batches WHERE unit_id = ? AND hour_us = ? "
                    "AND kind = ? AND agent_id = ? AND first_seq = ?",
                    key,
                ).fetchone()
                if found is None:
                    continue  # folded by a run that lost its lease just before
                try:
                    decoded = batches.decode(bytes(found[0]))
                except batches.BatchError as exc:
                    log.error("retention: batch %s cannot be folded: %s", key, exc)
                    skip.add(key)
                    continue
                s._execute(
                    "DELETE FROM record_batches WHERE unit_id = ? AND hour_us = ? "
                    "AND kind = ? AND agent_id = ? AND first_seq = ?",
                    key,
                )
                rows = [(r.seq, key[0], r.time_us, r.kind, r.payload) for r in decoded]
                count, kept = self._fold(str(key[3]), rows)
                folded, deleted, copied = folded + count, deleted + len(rows), copied + kept
        return folded, deleted, copied, len(taken)

    def _fold(self, agent_id: str, rows: Sequence[Sequence[Any]]) -> tuple[int, int]:
        """Fold ``rows`` (seq order) into unit_hours and records_kept; (folded, copied)."""
        s = self._store
        hours: dict[tuple[str, int], _Hour] = {}
        # Each unit's newest hour row with a car state (the state carried on).
        latest: dict[str, _Hour] = {}

        def hour(unit_id: str, hour_us: int) -> _Hour:
            key = (unit_id, hour_us)
            if key not in hours:
                found = s._execute(
                    f"SELECT {_HOUR_COLUMNS} FROM {_HOURS_OF_UNIT} AND hour_us = ?",
                    key,
                ).fetchone()
                hours[key] = _hour_of_row(found) if found else _Hour(unit_id, hour_us)
            return hours[key]

        def previous(unit_id: str) -> _Hour | None:
            if unit_id not in latest:
                found = s._execute(
                    f"SELECT {_HOUR_COLUMNS} FROM {_HOURS_OF_UNIT} "
                    "AND last_us IS NOT NULL ORDER BY hour_us DESC LIMIT 1",
                    (unit_id,),
                ).fetchone()
                if found is None:
                    return None
                row = _hour_of_row(found)
                latest[unit_id] = hours.setdefault((unit_id, row.hour_us), row)
            return latest[unit_id]

        copies: list[tuple[object, ...]] = []
        newest_car: dict[str, tuple[object, ...]] = {}
        counted: set[str] = set()  # units whose first Counters record is kept
        link: dict[str, bool | None] = {}  # each unit's link state as last kept
        newest_link: dict[str, tuple[Any, ...]] = {}
        readings: dict[str, list[tuple[Any, ...]]] = {}  # each unit's Counters rows
        folded = 0
        for seq, unit_id, time_us, kind, payload in rows:
            at = int(time_us)
            record = records_pb2.Record.FromString(bytes(payload))
            row = (agent_id, int(seq), unit_id, at, kind, bytes(payload))
            if kind in KEPT_KINDS:
                copies.append(row)
            if kind == "car_state":
                newest_car[unit_id] = row
                before = previous(unit_id)
                here = hour(unit_id, at // HOUR_US * HOUR_US)
                _add_car_state(before, here, at, record.car_state)
                if before is None or here.hour_us >= before.hour_us:
                    latest[unit_id] = here
                folded += 1
            elif kind == "counters":
                # An hour (h, h + 1 h] holds the reading at its end: "the last reading at
                # or before" a time on the hour is then the reading the raw records gave.
                _add_counters(hour(unit_id, (at - 1) // HOUR_US * HOUR_US), at, record.counters)
                readings.setdefault(unit_id, []).append(row)
                if unit_id not in counted:
                    counted.add(unit_id)
                    if not s._execute(
                        "SELECT 1 FROM records_kept WHERE unit_id = ? AND kind = 'counters'",
                        (unit_id,),
                    ).fetchall():
                        copies.append(row)  # the unit's first: where its counting starts
                folded += 1
            elif kind == "link_status":
                here = hour(unit_id, at // HOUR_US * HOUR_US)
                here.link_n += 1
                up = bool(record.link_status.up)
                here.link_up += int(up)
                if unit_id not in link:
                    found = s._execute(
                        "SELECT payload FROM records_kept WHERE unit_id = ? "
                        "AND kind = 'link_status' ORDER BY time_us DESC LIMIT 1",
                        (unit_id,),
                    ).fetchone()
                    link[unit_id] = (
                        None
                        if found is None
                        else records_pb2.Record.FromString(bytes(found[0])).link_status.up
                    )
                if link[unit_id] != up:
                    copies.append(row)  # a change of the link (or the unit's first)
                    link[unit_id] = up
                newest_link[unit_id] = row
                folded += 1
        units = sorted({h.unit_id for h in hours.values()})
        s._many(_UNIT_KEY, [(u, u) for u in units])
        s._many(_HOUR_UPSERT, [h.row() for h in hours.values()])
        for unit_id, car in newest_car.items():
            # Only the newest car state of a unit is kept: the older copy goes.
            s._execute(
                "DELETE FROM records_kept WHERE unit_id = ? AND kind = 'car_state' "
                "AND time_us <= ?",
                (unit_id, car[3]),
            )
            copies.append(car)
        for unit_id, found in readings.items():
            copies += self._readings_at_boundaries(unit_id, found)
        s._many(_KEEP, copies)
        for newest in newest_link.values():
            if newest not in copies:
                self._keep_newest_link(newest)
        return folded, len(copies) + len(newest_link)

    def _readings_at_boundaries(
        self, unit_id: str, rows: Sequence[tuple[Any, ...]]
    ) -> list[tuple[Any, ...]]:
        """Of a unit's Counters rows (time order), those that are the reading at or last
        before the start or end of one of its visits, or the end of one of its
        maintenance records: the maintenance plan counts usage from there."""
        s = self._store
        lo, hi = int(rows[0][3]), int(rows[-1][3]) + _READING_REACH_US
        found = s._execute(
            "SELECT start_us, end_us FROM maintenance_visits WHERE unit_id = ? "
            "AND ((start_us >= ? AND start_us < ?) OR (end_us >= ? AND end_us < ?))",
            (unit_id, lo, hi, lo, hi),
        ).fetchall()
        found += s._execute(
            "SELECT end_us, end_us FROM maintenance_records WHERE unit_id = ? "
            "AND end_us >= ? AND end_us < ?",
            (unit_id, lo, hi),
        ).fetchall()
        marks = sorted({int(t) for pair in found for t in pair if t is not None})
        kept = []
        for i, row in enumerate(rows):
            at = int(row[3])
            after = int(rows[i + 1][3]) if i + 1 < len(rows) else at + _READING_REACH_US
            if any(at <= mark < after for mark in marks):
                kept.append(row)
        return kept

    def _keep_newest_link(self, row: tuple[Any, ...]) -> None:
        """Keep ``row``, a unit's newest link-status record (the unit page's link state
        of a lift silent for longer than the window), in place of the newest kept
        before it unless that one was a change of the link."""
        s = self._store
        last = s._execute(
            "SELECT agent_id, seq, payload FROM records_kept WHERE unit_id = ? "
            "AND kind = 'link_status' ORDER BY time_us DESC LIMIT 2",
            (row[2],),
        ).fetchall()
        ups = [records_pb2.Record.FromString(bytes(r[2])).link_status.up for r in last]
        if len(last) == 2 and ups[0] == ups[1]:
            s._execute(
                "DELETE FROM records_kept WHERE agent_id = ? AND seq = ?",
                (last[0][0], last[0][1]),
            )
        s._execute(_KEEP, row)

    # -- status ------------------------------------------------------------------------

    def status(self) -> RetentionStatus:
        """The last run's figures, the oldest raw record and the lease holder."""
        s = self._store
        row = s._execute(
            "SELECT last_run_us, cutoff_us, folded, deleted, kept, owner, lease_until_us "
            "FROM retention_state WHERE name = 'raw'"
        ).fetchone()
        # Each agent's first record past its retention cursor, by the primary key (a
        # scan of the whole table for MIN(time_us) would read every raw record).
        oldest = s._execute(
            "SELECT MIN(r.time_us) FROM agents a JOIN records r ON r.agent_id = a.agent_id "
            "AND r.seq = (SELECT MIN(f.seq) FROM records f WHERE f.agent_id = a.agent_id "
            "AND f.seq > COALESCE((SELECT c.seq FROM retention_agents c "
            "WHERE c.agent_id = a.agent_id), 0))"
        ).fetchone()
        # The oldest batch's records: its first record (the hour index finds the hour).
        batched = s._execute(
            "SELECT MIN(start_us) FROM record_batches WHERE hour_us = "
            "(SELECT MIN(hour_us) FROM record_batches)"
        ).fetchone()
        times = [int(r[0]) for r in (oldest, batched) if r is not None and r[0] is not None]
        return RetentionStatus(
            last_run_us=None if row[0] is None else int(row[0]),
            cutoff_us=None if row[1] is None else int(row[1]),
            folded=int(row[2]),
            deleted=int(row[3]),
            kept=int(row[4]),
            oldest_raw_us=min(times) if times else None,
            owner=str(row[5]),
            lease_until_us=int(row[6]),
        )

    # -- long-term reads ---------------------------------------------------------------

    def unit_hours(self, unit_id: str, since_us: int, until_us: int) -> list[dict[str, Any]]:
        """The ``unit_hours`` rows of ``unit_id`` with hour_us in [since_us, until_us), as
        dicts by column name, oldest first."""
        rows = self._store._execute(
            f"SELECT {_HOUR_COLUMNS} FROM {_HOURS_OF_UNIT} "
            "AND hour_us >= ? AND hour_us < ? ORDER BY hour_us",
            (unit_id, since_us, until_us),
        ).fetchall()
        names = _HOUR_COLUMNS.split(", ")
        return [dict(zip(names, r, strict=True)) for r in rows]


class FoldPass:
    """One retention run as steps, each one short transaction on the store, so that a
    caller on the store's thread lets ingest's writes run between them: ``while
    pass.step(store): ...``, then ``finish``.

    First folding: batches of an hour before the window's hour-aligned cutoff are folded
    into ``unit_hours`` and deleted. Then compaction: each agent's raw records older than
    ``compact_after_us`` (to the hour) that every consumer has read move into their
    (unit, kind, hour) batches, or are folded at once when already older than the
    window's cutoff (after the batches, which hold the agent's older records). Last
    (PostgreSQL), the day partitions folding emptied are dropped."""

    def __init__(
        self,
        held: Held,
        now_us: int,
        window_us: int,
        batch: int,
        *,
        compact_after_us: int = HOUR_US,
    ) -> None:
        self.held, self.now_us, self.batch = held, now_us, batch
        self.cutoff = (now_us - window_us) // HOUR_US * HOUR_US
        # Never behind the fold's cutoff: what folding reads must have been compacted.
        self.compact_cutoff = max(
            self.cutoff, (now_us - max(compact_after_us, 0)) // HOUR_US * HOUR_US
        )
        # [agent_id, next seq after, limit (the slowest consumer), derived, committed]
        self._agents: list[list[Any]] | None = None
        self._folding = True
        self._damaged: set[tuple[Any, ...]] = set()  # batches that did not decode
        self.folded = self.deleted = self.kept = self.held_back = 0
        self.compacted = self.batches = self.dropped = self.failed = 0

    def step(self, store: SqlStore) -> bool:
        """Do the next step on ``store``; whether any remain."""
        retention = Retention(store)
        if self._folding:
            # Batches before compaction: they hold each agent's older records, and
            # compaction folds at once the hot records already past the cutoff (a fleet
            # stopped for longer than the window, an agent held back that long). Folded
            # first, those would stand as the car state before every batched one, and
            # the batches' hours would get no time in a mode, no run time, trips or door
            # cycles.
            count, done, copied, taken = retention._fold_batches(
                self.held, self.cutoff, self.batch, self._damaged
            )
            self.folded, self.deleted, self.kept = (
                self.folded + count,
                self.deleted + done,
                self.kept + copied,
            )
            if not taken:
                self._folding = False
            return True
        if self._agents is None:
            rows = store._execute(
                "SELECT a.agent_id, COALESCE(r.seq, 0), a.committed_seq, COALESCE(d.seq, 0) "
                "FROM agents a LEFT JOIN retention_agents r ON r.agent_id = a.agent_id "
                "LEFT JOIN maintenance_derived d ON d.agent_id = a.agent_id "
                "WHERE a.committed_seq > COALESCE(r.seq, 0) ORDER BY a.agent_id"
            ).fetchall()
            self._agents = [
                [str(a), int(after), min(int(c), int(d)), int(d), int(c)] for a, after, c, d in rows
            ]
            return True
        if self._agents:
            agent = self._agents[0]
            agent_id, after, limit, _, _ = agent
            if after >= limit:
                self._agent_done()
                return True
            try:
                moved, written, folded, gone, copied, agent[1], reached = retention._compact_batch(
                    self.held,
                    agent_id,
                    after,
                    limit,
                    (self.cutoff, self.compact_cutoff),
                    self.batch * COMPACT_STEP_FACTOR,
                )
            except RetentionLeaseLostError:
                raise
            except Exception:
                # One agent's records that cannot be moved (a store limit, a damaged
                # batch to merge into) must not stop every other agent's, nor folding:
                # named in the log, counted, tried again next run.
                log.exception("retention: agent %s's records could not be compacted", agent_id)
                self.failed += 1
                self._agents.pop(0)
                return True
            self.compacted += moved
            self.batches += written
            self.folded += folded
            self.deleted += gone
            self.kept += copied
            if reached:
                self._agent_done()
            return True
        fence = lambda: retention._fence(self.held, "epoch = epoch", ())  # noqa: E731
        self.dropped += store._drop_batch_partitions(self.cutoff, fence)
        return False

    def _agent_done(self) -> None:
        # Counted however the cursor came to the limit: in this run's last step too (a
        # step that takes every record left up to the limit says it reached the end).
        assert self._agents is not None
        _, after, limit, derived, committed = self._agents.pop(0)
        if after >= limit and derived < committed:
            self.held_back += 1  # the visit derivation has not read them yet

    def finish(self, store: SqlStore) -> FoldResult:
        """Record the run (fenced by the lease) and return its figures."""
        with store._transaction():
            assignments = (
                "last_run_us = ?, cutoff_us = ?, folded = folded + ?, deleted = deleted + ?, "
                "kept = kept + ?"
            )
            figures = (self.now_us, self.cutoff, self.folded, self.deleted, self.kept)
            if not Retention(store)._fence(self.held, assignments, figures):
                raise RetentionLeaseLostError("retention: lease lost (another instance runs it)")
        return FoldResult(
            self.cutoff,
            self.folded,
            self.deleted,
            self.kept,
            self.held_back,
            compacted=self.compacted,
            batches=self.batches,
            partitions_dropped=self.dropped,
            failed_agents=self.failed,
            damaged_batches=len(self._damaged),
        )


def _parts(records: list[batches.BatchRecord]) -> list[list[batches.BatchRecord]]:
    """``records`` cut in order into parts of at most `batches.PART_RECORDS` records and
    `batches.PART_BYTES` of payloads (a record larger than that alone in its part)."""
    parts: list[list[batches.BatchRecord]] = []
    size = 0
    for record in records:
        if not parts or (
            len(parts[-1]) >= batches.PART_RECORDS
            or size + len(record.payload) > batches.PART_BYTES
        ):
            parts.append([])
            size = 0
        parts[-1].append(record)
        size += len(record.payload)
    return parts


def _add_car_state(before: _Hour | None, here: _Hour, at: int, car: records_pb2.CarState) -> None:
    """Fold one car state at ``at`` into ``here``; the previous record's state (carried
    on ``before``, the unit's newest hour so far) is held until ``at`` (at most HOLD_US)
    and counted in the previous record's hour."""
    moving = int(car.moving) if car.HasField("moving") else _MOVING_UNKNOWN
    if before is not None and before.last_us is not None and at >= before.last_us:
        gap = at - before.last_us
        held = min(gap, HOLD_US)
        here.widest_gap_us = max(here.widest_gap_us, gap)
        if before.last_mode is not None:
            key = str(before.last_mode)
            before.mode_us[key] = before.mode_us.get(key, 0) + held
        if before.last_moving == 1:
            before.run_us += held
        if moving == 1 and before.last_moving == 0:
            here.trips += 1
        if car.door == records_pb2.DOOR_STATE_OPEN and before.last_door != car.door:
            here.door_cycles += 1
    here.car_states += 1
    here.first_us = at if here.first_us is None else min(here.first_us, at)
    if here.last_us is None or at >= here.last_us:
        here.last_us = at
        here.last_mode = int(car.mode)
        here.last_moving = moving
        here.last_door = int(car.door)


def _add_counters(here: _Hour, at: int, counters: records_pb2.Counters) -> None:
    """Keep the hour's last Counters reading (totals, door medians and trends)."""
    if here.counters_us is not None and at < here.counters_us:
        return
    here.counters_us = at
    here.trips_total = int(counters.trips)
    here.door_cycles_total = int(counters.door_cycles)
    here.run_hours_total = int(counters.run_hours)
    c = counters
    here.door_open_median_ms = (
        int(c.door_open_median_ms) if c.HasField("door_open_median_ms") else None
    )
    here.door_close_median_ms = (
        int(c.door_close_median_ms) if c.HasField("door_close_median_ms") else None
    )
    here.door_open_trend = float(c.door_open_trend) if c.HasField("door_open_trend") else None
    here.door_close_trend = float(c.door_close_trend) if c.HasField("door_close_trend") else None


# The columns of a folded Counters reading, as `counters_record` takes them.
_READING = (
    "unit_id, counters_us, trips_total, door_cycles_total, run_hours_total, "
    "door_open_median_ms, door_close_median_ms, door_open_trend, door_close_trend"
)


class _Executes(Protocol):
    def _execute(self, text: str, params: Sequence[object] = ()) -> Any: ...


def counters_in_hours(
    store: _Executes, unit_id: str, at_us: int, *, after: bool
) -> tuple[int, bytes] | None:
    """The folded Counters reading of ``unit_id`` at or last before ``at_us`` (``after``:
    the first after it) from ``unit_hours``: (time µs, serialized Record), None if none."""
    if after:
        # Only a time before the unit's first reading has none at or before it: the
        # answer is that first reading, kept whole.
        kept = store._execute(
            "SELECT time_us, payload FROM records_kept WHERE unit_id = ? "
            "AND kind = 'counters' AND time_us > ? ORDER BY time_us LIMIT 1",
            (unit_id, at_us),
        ).fetchone()
        return None if kept is None else (int(kept[0]), bytes(kept[1]))
    row = store._execute(
        f"SELECT {_READING} FROM {_HOURS_OF_UNIT} AND counters_us IS NOT NULL "
        "AND counters_us <= ? ORDER BY hour_us DESC LIMIT 1",
        (unit_id, at_us),
    ).fetchone()
    # The readings kept whole at visits' boundaries: exact there, not only on the hour.
    kept = store._execute(
        "SELECT time_us, payload FROM records_kept WHERE unit_id = ? AND kind = 'counters' "
        "AND time_us <= ? ORDER BY time_us DESC LIMIT 1",
        (unit_id, at_us),
    ).fetchone()
    if kept is not None and (row is None or int(kept[0]) >= int(row[1])):
        return int(kept[0]), bytes(kept[1])
    return None if row is None else (int(row[1]), counters_record(row))


def counters_readings(
    store: _Executes, unit_id: str, before_us: int, limit: int
) -> list[tuple[int, bytes]]:
    """The folded Counters readings of ``unit_id`` (each hour's last) before
    ``before_us``, newest first, at most ``limit``: (time µs, serialized Record)."""
    rows = store._execute(
        f"SELECT {_READING} FROM {_HOURS_OF_UNIT} AND counters_us IS NOT NULL "
        "AND counters_us < ? ORDER BY hour_us DESC LIMIT ?",
        (unit_id, before_us, max(limit, 0)),
    ).fetchall()
    return [(int(r[1]), counters_record(r)) for r in rows]


def counters_record(row: Sequence[Any]) -> bytes:
    """The serialized Counters Record a ``unit_hours`` row's reading stands for
    (``row``: unit_id, counters_us, totals, door medians, trends as `counters_in_hours`
    selects them); what the raw record said but its reopenings by landing."""
    record = records_pb2.Record(unit_id=str(row[0]))
    record.time.FromMicroseconds(int(row[1]))
    c = record.counters
    c.trips, c.door_cycles, c.run_hours = int(row[2]), int(row[3]), int(row[4])
    if row[5] is not None:
        c.door_open_median_ms = int(row[5])
    if row[6] is not None:
        c.door_close_median_ms = int(row[6])
    if row[7] is not None:
        c.door_open_trend = float(row[7])
    if row[8] is not None:
        c.door_close_trend = float(row[8])
    return record.SerializeToString(deterministic=True)


@dataclass(frozen=True, slots=True)
class StateHour:
    """One folded hour of a unit's car states (a ``unit_hours`` row with car states):
    the hour (µs), how many, the first and last one's time, the widest silence ending at
    one of them (from the car state before it, wherever that lay; 0 for a unit's very
    first), and every service mode a car state of the hour said."""

    hour_us: int
    car_states: int
    first_us: int
    last_us: int
    widest_gap_us: int
    modes: frozenset[int]


def state_hours(store: _Executes, unit_id: str, since_us: int, until_us: int) -> list[StateHour]:
    """The folded hours of ``unit_id``'s car states that hold any time in [since_us,
    until_us) (the hour holding ``since_us`` included), oldest first; [] for a span inside
    the window. A watch check beyond the window reads these (`fleet.reports.claims`)."""
    rows = store._execute(
        "SELECT hour_us, car_states, first_us, last_us, widest_gap_us, mode_us, last_mode "
        f"FROM {_HOURS_OF_UNIT} AND hour_us >= ? AND hour_us < ? "
        "AND car_states > 0 ORDER BY hour_us",
        (unit_id, since_us // HOUR_US * HOUR_US, until_us),
    ).fetchall()
    hours = []
    for r in rows:
        # Each car state's mode is a key of its own hour's mode_us once the next one came
        # (held for 0 µs or more); the hour's last one's mode is last_mode.
        modes = {int(m) for m in json.loads(str(r[5]))}
        if r[6] is not None:
            modes.add(int(r[6]))
        hours.append(
            StateHour(int(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]), frozenset(modes))
        )
    return hours
