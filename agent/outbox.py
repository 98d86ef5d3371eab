"""The outbox: every record is committed to SQLite before it is offered to the fleet.

A record gets the agent's next sequence number when appended and is deleted only when the
fleet acknowledges a seq at or above it. Sequence numbers are never reused:

- the high-water mark lives in its own table, so deleting acknowledged rows keeps it;
- a *new* outbox file (first start, a replaced SD card, a corrupt file moved aside) starts
  numbering at the current time in microseconds. Seqs issued before were at most one per
  microsecond since their own outbox was created, so the new ones are above every seq the
  fleet may already hold, even before the fleet's Welcome arrives; and
- `Outbox.ensure_seq_above` moves the mark past the fleet's committed seq on Welcome.

Durability, chosen for SD cards: WAL journal. A batch holding an event is committed with
``synchronous=FULL`` (fsync on commit: an entrapment survives a power cut the moment the
agent has decided it); telemetry with ``synchronous=NORMAL`` (fsync at checkpoints: a
power cut may lose the last second of samples, and the card is spared an fsync per
sample). The agent appends a poll cycle's telemetry in one call, so one commit per cycle.

Bounded: when the records use more than ``max_bytes`` of the file, CarState samples are
thinned oldest-first (every other sample of the oldest block is deleted, halving the
resolution of the oldest data first); events, counters, link and controller records are
never dropped. A file that fails SQLite's integrity check at start is moved aside (never
deleted) and reported; the agent carries on with a fresh one. Only corruption moves a file
aside: any other error opening it (a full disk, a read-only mount) is raised, so the agent
fails to start and systemd retries it with the file intact.

A full disk never costs an event. Beside the database lies a reserve file
(``outbox.db.reserve``, ``reserve_bytes`` of pre-allocated space, 8 MiB by default: tens
of thousands of events). When an append holding an event fails because the disk is full,
the reserve is released (deleted) and the append retried, and the oldest state samples are
thinned so the space freed inside the file is reused. An append of telemetry alone never
takes the reserve: it thins stored samples once and retries, else raises
`OutboxFullError`. Nothing is committed by a failed append (its transaction is rolled
back and the seqs it would have used are handed out again), so its caller keeps the
records and retries them (see `agent.app`). The reserve is put back, at most every
`RESERVE_RETRY_S`, once the disk has twice its size free again.

Evidence (the flight recorder's windows, agent/recorder.py) ranks with events: synced,
taking the reserve, never thinned. A fleet that does not take evidence (an older one)
gets none: the uplink skips evidence records in its batches, and `Outbox.ack` moves
those below the acknowledged seq to the ``held`` table, from which `Outbox.release_held`
appends them again, with new seqs, once a fleet that takes evidence connects.

Quarantine: a record the fleet refuses as malformed (a time outside the fleet's window,
say) would otherwise be resent forever and hold back every record after it.
`Outbox.quarantine` moves it into the ``quarantine`` table, with the fleet's reason, where
it stays for a person to look at; it is never sent again.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from protos.liftwatch.v1 import records_pb2

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE records (
    seq INTEGER PRIMARY KEY,
    unit_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX records_kind ON records (kind, seq);
CREATE TABLE sequence (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_seq INTEGER NOT NULL
);
"""
# Added later without a version change: created when missing, ignored by older agents.
_QUARANTINE = """
CREATE TABLE IF NOT EXISTS quarantine (
    seq INTEGER PRIMARY KEY,
    unit_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload BLOB NOT NULL,
    reason TEXT NOT NULL,
    quarantined_at REAL NOT NULL
)
"""
# Held back from a fleet that does not take evidence (see `Outbox.ack`); created when
# missing, like the quarantine.
_HELD = """
CREATE TABLE IF NOT EXISTS held (
    seq INTEGER PRIMARY KEY,
    unit_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload BLOB NOT NULL
)
"""
THINNABLE = "car_state"
# Kinds kept with an event's guarantees: synced on commit, taking the reserve on a full
# disk, never thinned. Evidence is the event's own flight-recorder window.
DURABLE_KINDS = frozenset({"event", "evidence"})
THIN_BLOCK = 2_000  # samples looked at per thinning step
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_RESERVE_BYTES = 8 * 1024 * 1024
# How often a missing reserve is tried again (it costs a statvfs, and a write when it fits).
RESERVE_RETRY_S = 10.0
# SQLite result codes that mean the file itself is damaged (anything else is the disk's or
# the system's trouble, and moving the file aside would only hide good records).
_CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


class OutboxFullError(Exception):
    """An append failed because the disk is full; nothing of it was committed."""


def disk_full(exc: BaseException) -> bool:
    """True when ``exc`` is SQLite's or the OS's way of saying the disk is full."""
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


@dataclass(frozen=True, slots=True)
class PendingRecord:
    seq: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class OutboxStats:
    depth: int
    oldest_seq: int | None
    used_bytes: int
    thinned: int
    quarantined: int


class Outbox:
    """Durable FIFO of serialized `Record`s awaiting the fleet's acknowledgement."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        reserve_bytes: int = DEFAULT_RESERVE_BYTES,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self.reserve_path = path.with_name(f"{path.name}.reserve")
        self.reserve_bytes = reserve_bytes
        self.thinned = 0
        self.reserve_releases = 0
        self.moved_aside: Path | None = None
        self._wall = wall
        self._monotonic = monotonic
        self._reserve_tried_at = float("-inf")
        try:
            self._db = self._open_or_release(path, wall)
        except sqlite3.DatabaseError as exc:
            if not _corrupt(exc):
                raise
            self.moved_aside = _move_aside(path, wall)
            log.error(
                "outbox %s is corrupt (%s); moved it aside to %s and started a fresh one",
                path,
                exc,
                self.moved_aside,
            )
            self._db = self._open_or_release(path, wall)
        (self._last_seq,) = self._db.execute("SELECT last_seq FROM sequence").fetchone()
        # The connection's synchronous mode, so it is set only when it changes (appends of
        # telemetry and acks, the common case, all want NORMAL).
        self._synchronous: str | None = None
        (self._page_size,) = self._db.execute("PRAGMA page_size").fetchone()
        self._restore_reserve()
        if self.reserve_bytes > 0 and not self.reserve_held():
            log.warning(
                "no outbox reserve yet: it needs %d bytes free beside %s (twice its size); "
                "until then a full disk may hold events in memory only",
                2 * self.reserve_bytes,
                path,
            )

    def _open_or_release(self, path: Path, wall: Callable[[], float]) -> sqlite3.Connection:
        # Recovering a WAL after a crash writes: on a full disk the reserve makes the room.
        try:
            return self._open(path, wall)
        except sqlite3.DatabaseError as exc:
            if not (disk_full(exc) and self._release_reserve("opening the outbox")):
                raise
        return self._open(path, wall)

    @staticmethod
    def _open(path: Path, wall: Callable[[], float]) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None)
        try:
            (check,) = db.execute("PRAGMA quick_check").fetchone()
            if check != "ok":
                raise _CorruptError(f"quick_check: {check}")
            db.execute("PRAGMA journal_mode=WAL")
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version == 0:
                db.executescript(
                    f"BEGIN IMMEDIATE; {_SCHEMA}"
                    f"INSERT INTO sequence (id, last_seq) VALUES (1, {int(wall() * 1e6)});"
                    f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
                )
            elif version != SCHEMA_VERSION:
                raise _CorruptError(f"unknown outbox schema version {version}")
            db.execute(_QUARANTINE)
            db.execute(_HELD)
        except BaseException:
            db.close()
            raise
        return db

    @property
    def last_seq(self) -> int:
        """The highest sequence number ever handed out."""
        return int(self._last_seq)

    def reserve_held(self) -> bool:
        """True while the reserve file for events is in place."""
        return self.reserve_path.exists()

    def append(self, records: list[records_pb2.Record]) -> list[int]:
        """Number ``records`` and commit them in one transaction; return their seqs.

        Each record's ``seq`` field is set in place. When this returns they are committed,
        and if any is an event, synced to the card. On a full disk an event takes the
        reserve (see the module doc); when even so nothing fits, `OutboxFullError` is
        raised and nothing was committed: the same records may be appended again later.
        Any other SQLite error is raised as it is, also with nothing committed.
        """
        durable = any(record.WhichOneof("payload") in DURABLE_KINDS for record in records)
        try:
            seqs = self._insert(records, durable)
        except sqlite3.Error as exc:
            if not disk_full(exc):
                raise
            # Room for an event first from the reserve, for telemetry only from samples.
            if durable:
                self._release_reserve("keeping an event")
            thinned = self._thin_on_full_disk()
            try:
                seqs = self._insert(records, durable)
            except sqlite3.Error as again:
                if not disk_full(again):
                    raise
                what = "an event" if durable else "telemetry"
                raise OutboxFullError(
                    f"disk full: cannot keep {len(records)} record(s) with {what} in "
                    f"{self.path} (thinned {thinned} samples"
                    + (", reserve released)" if durable else ")")
                ) from again
        if self.used_bytes() > self.max_bytes:
            self._thin()
        if self.reserve_bytes > 0 and not self.reserve_held():
            self._restore_reserve()
        return seqs

    def _insert(self, records: list[records_pb2.Record], durable: bool) -> list[int]:
        seqs = list(range(self._last_seq + 1, self._last_seq + 1 + len(records)))
        rows = []
        for seq, record in zip(seqs, records, strict=True):
            record.seq = seq
            kind = record.WhichOneof("payload") or ""
            rows.append((seq, record.unit_id, kind, record.SerializeToString()))
        self._set_synchronous("FULL" if durable else "NORMAL")
        with self._transaction():
            self._db.executemany(
                "INSERT INTO records (seq, unit_id, kind, payload) VALUES (?, ?, ?, ?)", rows
            )
            self._db.execute("UPDATE sequence SET last_seq = ?", (self._last_seq + len(rows),))
        self._last_seq += len(rows)
        return seqs

    def _thin_on_full_disk(self) -> int:
        """Thin one block of the oldest samples to free pages inside the file; the delete
        itself may not fit on a full disk, then nothing is thinned."""
        try:
            return self._thin_block()
        except sqlite3.Error as exc:
            if not disk_full(exc):
                raise
            return 0

    def _release_reserve(self, why: str) -> bool:
        """Delete the reserve file so its space serves the outbox; False when none was held."""
        try:
            self.reserve_path.unlink()
        except FileNotFoundError:
            return False
        self.reserve_releases += 1
        self._reserve_tried_at = self._monotonic()
        log.error(
            "disk full: released the outbox reserve (%d bytes) for %s; telemetry is thinned "
            "until the disk has room again",
            self.reserve_bytes,
            why,
        )
        return True

    def _restore_reserve(self) -> None:
        """Put the reserve back when the disk has room for it twice over (rate-limited)."""
        if self.reserve_bytes <= 0 or self.reserve_held():
            return
        now = self._monotonic()
        if now - self._reserve_tried_at < RESERVE_RETRY_S:
            return
        self._reserve_tried_at = now
        stat = os.statvfs(self.path.parent)
        if stat.f_bavail * stat.f_frsize < 2 * self.reserve_bytes:
            return
        partial = self.reserve_path.with_name(f"{self.reserve_path.name}.part")
        try:
            with partial.open("wb") as file:
                _allocate(file.fileno(), self.reserve_bytes)
                os.fsync(file.fileno())
            partial.rename(self.reserve_path)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            log.warning("cannot put the outbox reserve back yet: %s", exc)
            return
        log.info("outbox reserve of %d bytes in place", self.reserve_bytes)

    def _thin(self) -> None:
        while self.used_bytes() > self.max_bytes:
            if self._thin_block() <= 0:
                log.warning(
                    "outbox over %d bytes with no samples left to thin: keeping every event",
                    self.max_bytes,
                )
                return

    def _thin_block(self) -> int:
        """Delete every other sample of the oldest block of samples; return how many."""
        with self._transaction():
            cursor = self._db.execute(
                "DELETE FROM records WHERE seq IN ("
                " SELECT seq FROM ("
                "  SELECT seq, row_number() OVER (ORDER BY seq) AS n FROM records"
                "  WHERE kind = ? ORDER BY seq LIMIT ?)"
                " WHERE n % 2 = 0)",
                (THINNABLE, THIN_BLOCK),
            )
        if cursor.rowcount > 0:
            self.thinned += cursor.rowcount
            log.warning("outbox full: thinned %d oldest state samples", cursor.rowcount)
        return max(cursor.rowcount, 0)

    def used_bytes(self) -> int:
        """Bytes of the file in use by records (free pages after deletes not counted)."""
        # One statement rather than two PRAGMAs: this runs after every append.
        (used,) = self._db.execute(
            "SELECT page_count - freelist_count FROM pragma_page_count, pragma_freelist_count"
        ).fetchone()
        return int(used) * int(self._page_size)

    def pending(
        self, after_seq: int, limit: int, max_bytes: int | None = None, skip_kind: str = ""
    ) -> list[PendingRecord]:
        """Kept records with seq > ``after_seq``, oldest first: at most ``limit`` of them
        and, when ``max_bytes`` is given, no more payload than that (but always at least one);
        none of kind ``skip_kind`` (held back from this fleet, see `ack`).
        """
        if skip_kind:
            rows = self._db.execute(
                "SELECT seq, payload FROM records WHERE seq > ? AND kind != ? ORDER BY seq LIMIT ?",
                (after_seq, skip_kind, limit),
            ).fetchall()
        else:
            rows = self._db.execute(
                "SELECT seq, payload FROM records WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        batch: list[PendingRecord] = []
        size = 0
        for seq, payload in rows:
            size += len(payload)
            if max_bytes is not None and batch and size > max_bytes:
                break
            batch.append(PendingRecord(int(seq), bytes(payload)))
        return batch

    def ack(self, up_to_seq: int, hold_kind: str = "") -> int:
        """Delete every record with seq <= ``up_to_seq`` (the fleet has them); return how many.

        Records of kind ``hold_kind`` among them were not sent (this fleet does not take
        them: an older fleet and evidence): they are moved to the ``held`` table instead,
        kept with their durability, until `release_held` gives them new seqs for a fleet
        that takes them. A new seq, because the fleet's committed seq is past the old one
        and it would take a resend at that seq for a duplicate.
        """
        self._set_synchronous("FULL" if hold_kind else "NORMAL")
        with self._transaction():
            if hold_kind:
                self._db.execute(
                    "INSERT OR REPLACE INTO held (seq, unit_id, kind, payload)"
                    " SELECT seq, unit_id, kind, payload FROM records WHERE seq <= ? AND kind = ?",
                    (up_to_seq, hold_kind),
                )
            cursor = self._db.execute("DELETE FROM records WHERE seq <= ?", (up_to_seq,))
        return cursor.rowcount

    def release_held(self) -> int:
        """Append every held-back record again with a new seq (a fleet that takes them is
        connected), in their order, in one synced transaction; return how many."""
        rows = self._db.execute(
            "SELECT seq, unit_id, kind, payload FROM held ORDER BY seq"
        ).fetchall()
        if not rows:
            return 0
        first = self._last_seq + 1
        self._set_synchronous("FULL")
        with self._transaction():
            self._db.executemany(
                "INSERT INTO records (seq, unit_id, kind, payload) VALUES (?, ?, ?, ?)",
                [
                    (first + i, unit_id, kind, _renumbered(payload, first + i))
                    for i, (_, unit_id, kind, payload) in enumerate(rows)
                ],
            )
            self._db.execute("UPDATE sequence SET last_seq = ?", (first + len(rows) - 1,))
            self._db.execute("DELETE FROM held")
        self._last_seq = first + len(rows) - 1
        return len(rows)

    def held_count(self) -> int:
        """How many records are held back from the connected (or last) fleet."""
        (count,) = self._db.execute("SELECT count(*) FROM held").fetchone()
        return int(count)

    def ensure_seq_above(self, committed_seq: int) -> None:
        """Make the next seq exceed ``committed_seq``, which the fleet already holds."""
        if committed_seq > self._last_seq:
            self._set_synchronous("FULL")
            with self._transaction():
                self._db.execute("UPDATE sequence SET last_seq = ?", (committed_seq,))
            self._last_seq = committed_seq

    def quarantine(self, seq: int, reason: str) -> bool:
        """Move record ``seq`` out of the records to send into the quarantine table, with
        ``reason``; False when no such record awaits sending."""
        self._set_synchronous("FULL")
        with self._transaction():
            moved = self._db.execute(
                "INSERT INTO quarantine (seq, unit_id, kind, payload, reason, quarantined_at)"
                " SELECT seq, unit_id, kind, payload, ?, ? FROM records WHERE seq = ?",
                (reason, self._wall(), seq),
            ).rowcount
            self._db.execute("DELETE FROM records WHERE seq = ?", (seq,))
        return moved > 0

    def quarantined(self) -> list[tuple[int, str, records_pb2.Record]]:
        """Every quarantined record as (seq, the fleet's reason, the record), by seq."""
        rows = self._db.execute(
            "SELECT seq, reason, payload FROM quarantine ORDER BY seq"
        ).fetchall()
        return [(int(seq), str(why), records_pb2.Record.FromString(p)) for seq, why, p in rows]

    def quarantine_count(self) -> int:
        """How many records sit in quarantine."""
        (count,) = self._db.execute("SELECT count(*) FROM quarantine").fetchone()
        return int(count)

    def unit_ids(self) -> set[str]:
        """The units of the records awaiting acknowledgement or held back (one scan of
        the outbox: for the start of an agent whose units a fleet document may have
        removed, agent.app)."""
        rows = self._db.execute("SELECT unit_id FROM records UNION SELECT unit_id FROM held")
        return {str(unit_id) for (unit_id,) in rows}

    def depth(self) -> int:
        """How many records await acknowledgement."""
        (count,) = self._db.execute("SELECT count(*) FROM records").fetchone()
        return int(count)

    def stats(self) -> OutboxStats:
        """Depth, oldest pending seq, bytes used, samples thinned so far, quarantined."""
        count, oldest = self._db.execute("SELECT count(*), min(seq) FROM records").fetchone()
        return OutboxStats(
            int(count), oldest, self.used_bytes(), self.thinned, self.quarantine_count()
        )

    def oldest_time(self) -> float | None:
        """UTC epoch seconds of the oldest pending record, None when empty."""
        row = self._db.execute("SELECT payload FROM records ORDER BY seq LIMIT 1").fetchone()
        if row is None:
            return None
        record = records_pb2.Record.FromString(row[0])
        return record.time.ToNanoseconds() / 1e9

    def close(self) -> None:
        """Close the database; everything appended is already committed."""
        self._db.close()

    def _set_synchronous(self, mode: str) -> None:
        if mode != self._synchronous:
            self._db.execute(f"PRAGMA synchronous={mode}")
            self._synchronous = mode

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            # Inside: a COMMIT that fails (a full disk when the WAL grows) must roll back too.
            self._db.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back already (it does on some SQLITE_FULL errors).
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise


def _renumbered(payload: bytes, seq: int) -> bytes:
    """A serialized Record with its seq field set to ``seq``."""
    record = records_pb2.Record.FromString(payload)
    record.seq = seq
    return record.SerializeToString()


class _CorruptError(sqlite3.DatabaseError):
    """The file is not an outbox this agent can use (failed check, unknown version)."""


def _corrupt(exc: sqlite3.DatabaseError) -> bool:
    if isinstance(exc, _CorruptError):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    # Without a code (raised by the sqlite3 module itself) only a damaged file says so.
    return code in _CORRUPT_CODES or (
        code is None and not isinstance(exc, sqlite3.OperationalError)
    )


def _allocate(fd: int, size: int) -> None:
    """Make the file ``size`` bytes of real blocks (not a sparse hole the disk may lack)."""
    try:
        os.posix_fallocate(fd, 0, size)
        return
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    chunk = b"\0" * (1 << 20)
    for offset in range(0, size, len(chunk)):
        os.write(fd, chunk[: min(len(chunk), size - offset)])


def _move_aside(path: Path, wall: Callable[[], float]) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(wall()))
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            source.rename(Path(f"{target}{suffix}"))
    return target
