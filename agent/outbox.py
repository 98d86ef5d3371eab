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
deleted) and reported; the agent carries on with a fresh one.
"""

from __future__ import annotations

import contextlib
import logging
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
THINNABLE = "car_state"
THIN_BLOCK = 2_000  # samples looked at per thinning step
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


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


class Outbox:
    """Durable FIFO of serialized `Record`s awaiting the fleet's acknowledgement."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        wall: Callable[[], float] = time.time,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self.thinned = 0
        self.moved_aside: Path | None = None
        try:
            self._db = self._open(path, wall)
        except sqlite3.DatabaseError as exc:
            self.moved_aside = _move_aside(path, wall)
            log.error(
                "outbox %s is corrupt (%s); moved it aside to %s and started a fresh one",
                path,
                exc,
                self.moved_aside,
            )
            self._db = self._open(path, wall)
        (self._last_seq,) = self._db.execute("SELECT last_seq FROM sequence").fetchone()
        # The connection's synchronous mode, so it is set only when it changes (appends of
        # telemetry and acks, the common case, all want NORMAL).
        self._synchronous: str | None = None
        (self._page_size,) = self._db.execute("PRAGMA page_size").fetchone()

    @staticmethod
    def _open(path: Path, wall: Callable[[], float]) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None)
        try:
            (check,) = db.execute("PRAGMA quick_check").fetchone()
            if check != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check}")
            db.execute("PRAGMA journal_mode=WAL")
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version == 0:
                db.executescript(
                    f"BEGIN IMMEDIATE; {_SCHEMA}"
                    f"INSERT INTO sequence (id, last_seq) VALUES (1, {int(wall() * 1e6)});"
                    f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
                )
            elif version != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"unknown outbox schema version {version}")
        except BaseException:
            db.close()
            raise
        return db

    @property
    def last_seq(self) -> int:
        """The highest sequence number ever handed out."""
        return int(self._last_seq)

    def append(self, records: list[records_pb2.Record]) -> list[int]:
        """Number ``records`` and commit them in one transaction; return their seqs.

        Each record's ``seq`` field is set in place. When this returns they are committed,
        and if any is an event, synced to the card.
        """
        seqs = list(range(self._last_seq + 1, self._last_seq + 1 + len(records)))
        rows = []
        durable = False
        for seq, record in zip(seqs, records, strict=True):
            record.seq = seq
            kind = record.WhichOneof("payload") or ""
            durable = durable or kind == "event"
            rows.append((seq, record.unit_id, kind, record.SerializeToString()))
        self._set_synchronous("FULL" if durable else "NORMAL")
        with self._transaction():
            self._db.executemany(
                "INSERT INTO records (seq, unit_id, kind, payload) VALUES (?, ?, ?, ?)", rows
            )
            self._db.execute("UPDATE sequence SET last_seq = ?", (self._last_seq + len(rows),))
        self._last_seq += len(rows)
        if self.used_bytes() > self.max_bytes:
            self._thin()
        return seqs

    def _thin(self) -> None:
        while self.used_bytes() > self.max_bytes:
            with self._transaction():
                cursor = self._db.execute(
                    "DELETE FROM records WHERE seq IN ("
                    " SELECT seq FROM ("
                    "  SELECT seq, row_number() OVER (ORDER BY seq) AS n FROM records"
                    "  WHERE kind = ? ORDER BY seq LIMIT ?)"
                    " WHERE n % 2 = 0)",
                    (THINNABLE, THIN_BLOCK),
                )
            if cursor.rowcount <= 0:
                log.warning(
                    "outbox over %d bytes with no samples left to thin: keeping every event",
                    self.max_bytes,
                )
                return
            self.thinned += cursor.rowcount
            log.warning("outbox full: thinned %d oldest state samples", cursor.rowcount)

    def used_bytes(self) -> int:
        """Bytes of the file in use by records (free pages after deletes not counted)."""
        # One statement rather than two PRAGMAs: this runs after every append.
        (used,) = self._db.execute(
            "SELECT page_count - freelist_count FROM pragma_page_count, pragma_freelist_count"
        ).fetchone()
        return int(used) * int(self._page_size)

    def pending(
        self, after_seq: int, limit: int, max_bytes: int | None = None
    ) -> list[PendingRecord]:
        """Kept records with seq > ``after_seq``, oldest first: at most ``limit`` of them
        and, when ``max_bytes`` is given, no more payload than that (but always at least one).
        """
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

    def ack(self, up_to_seq: int) -> int:
        """Delete every record with seq <= ``up_to_seq`` (the fleet has them); return how many."""
        self._set_synchronous("NORMAL")
        with self._transaction():
            cursor = self._db.execute("DELETE FROM records WHERE seq <= ?", (up_to_seq,))
        return cursor.rowcount

    def ensure_seq_above(self, committed_seq: int) -> None:
        """Make the next seq exceed ``committed_seq``, which the fleet already holds."""
        if committed_seq > self._last_seq:
            self._set_synchronous("FULL")
            with self._transaction():
                self._db.execute("UPDATE sequence SET last_seq = ?", (committed_seq,))
            self._last_seq = committed_seq

    def depth(self) -> int:
        """How many records await acknowledgement."""
        (count,) = self._db.execute("SELECT count(*) FROM records").fetchone()
        return int(count)

    def stats(self) -> OutboxStats:
        """Depth, oldest pending seq, bytes used and samples thinned so far."""
        count, oldest = self._db.execute("SELECT count(*), min(seq) FROM records").fetchone()
        return OutboxStats(int(count), oldest, self.used_bytes(), self.thinned)

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
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")


def _move_aside(path: Path, wall: Callable[[], float]) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(wall()))
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            source.rename(Path(f"{target}{suffix}"))
    return target
