"""The outbox: every record is committed to SQLite before it is offered to the fleet.

A record gets the agent's next sequence number when appended and is deleted only when the
fleet acknowledges a seq at or above it. Sequence numbers are never reused, even after the
rows are deleted: the high-water mark lives in its own table, and `Outbox.ensure_seq_above`
moves it past what the fleet already committed (a replaced SD card must not make new
records look like replays).

Durability: WAL with ``synchronous=FULL``: each commit is on the card before `append`
returns, so a record the agent considers kept survives a power cut. The cost is one fsync
per commit, which is why CarState samples are recorded on change, not at poll rate.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from protos.liftwatch.v1 import records_pb2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    unit_id TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS sequence (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_seq INTEGER NOT NULL
);
INSERT OR IGNORE INTO sequence (id, last_seq) VALUES (1, 0);
"""


@dataclass(frozen=True, slots=True)
class PendingRecord:
    seq: int
    payload: bytes


class Outbox:
    """Durable FIFO of serialized `Record`s awaiting the fleet's acknowledgement."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        (self._last_seq,) = self._db.execute("SELECT last_seq FROM sequence").fetchone()

    @property
    def last_seq(self) -> int:
        """The highest sequence number ever handed out."""
        return int(self._last_seq)

    def append(self, records: list[records_pb2.Record]) -> list[int]:
        """Number ``records`` and commit them in one transaction; return their seqs.

        Each record's ``seq`` field is set in place. When this returns, they are on disk.
        """
        seqs = list(range(self._last_seq + 1, self._last_seq + 1 + len(records)))
        for seq, record in zip(seqs, records, strict=True):
            record.seq = seq
        with self._transaction():
            self._db.executemany(
                "INSERT INTO records (seq, unit_id, payload) VALUES (?, ?, ?)",
                [(r.seq, r.unit_id, r.SerializeToString()) for r in records],
            )
            self._db.execute("UPDATE sequence SET last_seq = ?", (self._last_seq + len(records),))
        self._last_seq += len(records)
        return seqs

    def pending(self, after_seq: int, limit: int) -> list[PendingRecord]:
        """Up to ``limit`` kept records with seq > ``after_seq``, oldest first."""
        rows = self._db.execute(
            "SELECT seq, payload FROM records WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()
        return [PendingRecord(int(seq), bytes(payload)) for seq, payload in rows]

    def ack(self, up_to_seq: int) -> int:
        """Delete every record with seq <= ``up_to_seq`` (the fleet has them); return how many."""
        with self._transaction():
            cursor = self._db.execute("DELETE FROM records WHERE seq <= ?", (up_to_seq,))
        return cursor.rowcount

    def ensure_seq_above(self, committed_seq: int) -> None:
        """Make the next seq exceed ``committed_seq``, which the fleet already holds."""
        if committed_seq > self._last_seq:
            with self._transaction():
                self._db.execute("UPDATE sequence SET last_seq = ?", (committed_seq,))
            self._last_seq = committed_seq

    def depth(self) -> int:
        """How many records await acknowledgement."""
        (count,) = self._db.execute("SELECT count(*) FROM records").fetchone()
        return int(count)

    def close(self) -> None:
        """Close the database; everything appended is already durable."""
        self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
