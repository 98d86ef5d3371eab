"""Migration "batches" (issue 18): raw records kept compactly, one compressed batch per
agent, unit and UTC hour, and the store's reads over them.

Raw records arrive one row each in ``records`` (the ingest table: (agent_id, seq) stored
once, cheap to append). Retention's compaction (`fleet.store.retention`) moves the
records older than ``[retention] compact_after_s`` that every consumer has read (the
agent's committed seq and the visit derivation's cursor, as folding always waited for)
into ``record_batches``: the records of one (agent, unit, hour) in one row, by seq,
as columns (seq and time deltas, kind codes, payload lengths, then the payloads, each
XORed with the previous payload of its kind where the two are as long, so that what did
not change reads as zeros), compressed with zlib. The payloads come back byte for byte
as the agent sent them: a batch is lossless, only smaller (measured in
``bench/storage.py``: about a fifth of the rows' bytes).

A later compaction that finds records of an hour already batched (the next run's part
of a partly compacted hour, or an agent's late records after an outage) merges them
into that hour's batch: one row per (unit, hour, agent).

Folding then reads batches, not rows: a batch whose hour lies before the window's
cutoff is decoded, folded into ``unit_hours`` and deleted in one transaction.

On PostgreSQL ``record_batches`` is partitioned by ``hour_us``, one partition per UTC
day (``record_batches_YYYYMMDD``), created by compaction before it writes a day's first
batch; once folding has emptied a day that lies wholly before the cutoff, the partition
is dropped whole (`drop_folded_partitions`), so its space goes back without a vacuum.
SQLite has no partitions: the rows are deleted and ``PRAGMA incremental_vacuum`` gives
the pages back (fleet.retention).

Readers (`rows_in`, `newest_rows`) merge the batches with the rows still in
``records``: a record is in exactly one of the two (compaction moves it in one
transaction), so a read sees each record once.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "BATCHES_MIGRATION_POSTGRES",
    "BATCHES_MIGRATION_SQLITE",
    "HOUR_US",
    "BatchError",
    "BatchRecord",
    "decode",
    "encode",
    "kinds_of",
    "nearest_rows",
    "partition_name",
    "rows_in",
]

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US

BATCHES_MIGRATION_SQLITE = """
CREATE TABLE record_batches (
    unit_id    TEXT NOT NULL,
    hour_us    BIGINT NOT NULL,
    agent_id   TEXT NOT NULL,
    first_seq  BIGINT NOT NULL,
    last_seq   BIGINT NOT NULL,
    start_us   BIGINT NOT NULL,
    end_us     BIGINT NOT NULL,
    records    INTEGER NOT NULL,
    kinds      TEXT NOT NULL,
    body       BLOB NOT NULL,
    PRIMARY KEY (unit_id, hour_us, agent_id)
);
CREATE INDEX record_batches_hour ON record_batches (hour_us);
"""

# Partitioned by day of hour_us; the primary key holds the partition key, as PostgreSQL
# requires. The partitions themselves are made by compaction (`ensure_partition`).
BATCHES_MIGRATION_POSTGRES = """
CREATE TABLE record_batches (
    unit_id    TEXT NOT NULL,
    hour_us    BIGINT NOT NULL,
    agent_id   TEXT NOT NULL,
    first_seq  BIGINT NOT NULL,
    last_seq   BIGINT NOT NULL,
    start_us   BIGINT NOT NULL,
    end_us     BIGINT NOT NULL,
    records    INTEGER NOT NULL,
    kinds      TEXT NOT NULL,
    body       BYTEA NOT NULL,
    PRIMARY KEY (unit_id, hour_us, agent_id)
) PARTITION BY RANGE (hour_us);
CREATE INDEX record_batches_hour ON record_batches (hour_us);
"""

_VERSION = 1
# zlib's level: compaction runs off the ingest path, once per record; 9 costs about
# twice 6 for a few per cent less (bench/storage.py).
_LEVEL = 9


class BatchError(ValueError):
    """A batch body that does not decode (damaged on disk, or not a batch)."""


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """One raw record as stored: the agent's seq, the record's time (µs since the epoch),
    its kind and the serialized Record, byte for byte as the agent sent it."""

    seq: int
    time_us: int
    kind: str
    payload: bytes


def _varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _zigzag(value: int) -> int:
    return value * 2 if value >= 0 else -value * 2 - 1


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def varint(self) -> int:
        value = shift = 0
        while True:
            if self.at >= len(self.data) or shift > 63:
                raise BatchError("batch body ends inside a number")
            byte = self.data[self.at]
            self.at += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    def signed(self) -> int:
        value = self.varint()
        return value >> 1 if value % 2 == 0 else -(value >> 1) - 1

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise BatchError("batch body ends inside a payload")
        chunk = self.data[self.at : self.at + n]
        self.at += n
        return chunk


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(len(a), "little")


def encode(records: Sequence[BatchRecord]) -> bytes:
    """The batch body of ``records`` (in the order given; compaction gives seq order):
    a version byte, then the zlib-compressed columns. `decode` gives them back equal."""
    kinds: list[str] = []
    codes: dict[str, int] = {}
    body = bytearray()
    _varint(body, len(records))
    for record in records:
        if record.kind not in codes:
            codes[record.kind] = len(kinds)
            kinds.append(record.kind)
    _varint(body, len(kinds))
    for kind in kinds:
        name = kind.encode()
        _varint(body, len(name))
        body += name
    base_seq = records[0].seq if records else 0
    base_time = records[0].time_us if records else 0
    _varint(body, base_seq)
    _varint(body, _zigzag(base_time))
    seq, time = base_seq, base_time
    for record in records:
        _varint(body, _zigzag(record.seq - seq))
        seq = record.seq
    for record in records:
        _varint(body, _zigzag(record.time_us - time))
        time = record.time_us
    body += bytes(codes[r.kind] for r in records) if len(kinds) < 256 else b""
    if len(kinds) >= 256:
        raise BatchError("a batch holds at most 255 kinds of record")
    for record in records:
        _varint(body, len(record.payload))
    previous: dict[str, bytes] = {}
    for record in records:
        before = previous.get(record.kind)
        payload = record.payload
        # Consecutive records of a kind mostly differ in a few bytes (the time, a
        # position): XORed, the rest is zeros that zlib takes for almost nothing.
        body += (
            _xor(payload, before) if before is not None and len(before) == len(payload) else payload
        )
        previous[record.kind] = payload
    return bytes([_VERSION]) + zlib.compress(bytes(body), _LEVEL)


def decode(blob: bytes) -> list[BatchRecord]:
    """The records of a batch body, in the order they were encoded. `BatchError` names
    what is wrong with a body that is not one."""
    if not blob or blob[0] != _VERSION:
        raise BatchError(
            f"batch body version {blob[:1].hex() or 'missing'}, expected {_VERSION:02x}"
        )
    # A decompressor object, not zlib.decompress: that one ignores bytes after the end of
    # the stream, so a damaged body (two bodies run together, say) would decode as its
    # first part with no error and the rest of its records silently gone.
    inflate = zlib.decompressobj()
    try:
        reader = _Reader(inflate.decompress(blob[1:]) + inflate.flush())
    except zlib.error as exc:
        raise BatchError(f"batch body does not decompress: {exc}") from None
    if not inflate.eof:
        raise BatchError("batch body ends inside its compressed stream")
    if inflate.unused_data:
        raise BatchError("batch body has bytes after its compressed stream")
    n = reader.varint()
    kinds = [reader.take(reader.varint()).decode(errors="replace") for _ in range(reader.varint())]
    seq = reader.varint()
    time = reader.signed()
    seqs, times = [], []
    for _ in range(n):
        seq += reader.signed()
        seqs.append(seq)
    for _ in range(n):
        time += reader.signed()
        times.append(time)
    codes = reader.take(n)
    if any(code >= len(kinds) for code in codes):
        raise BatchError("batch body names a kind it does not list")
    lengths = [reader.varint() for _ in range(n)]
    previous: dict[str, bytes] = {}
    out = []
    for i in range(n):
        kind = kinds[codes[i]]
        raw = reader.take(lengths[i])
        before = previous.get(kind)
        payload = _xor(raw, before) if before is not None and len(before) == len(raw) else raw
        previous[kind] = payload
        out.append(BatchRecord(seqs[i], times[i], kind, payload))
    if reader.at != len(reader.data):
        raise BatchError("batch body has bytes after its last payload")
    return out


def kinds_of(records: Iterable[BatchRecord]) -> str:
    """The ``kinds`` column of a batch of ``records``: its kinds, sorted, comma-joined."""
    return ",".join(sorted({r.kind for r in records}))


def partition_name(hour_us: int) -> str:
    """The PostgreSQL partition of ``record_batches`` holding ``hour_us``'s day."""
    day = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=hour_us // DAY_US * DAY_US)
    return f"record_batches_{day:%Y%m%d}"


class _Executes(Protocol):
    def _execute(self, text: str, params: Sequence[object] = ()) -> Any: ...


def _decoded(rows: Iterable[Sequence[Any]]) -> list[tuple[str, BatchRecord]]:
    return [(str(agent), record) for agent, body in rows for record in decode(bytes(body))]


def rows_in(
    store: _Executes,
    unit_id: str,
    kinds: Sequence[str] | None,
    since_us: int,
    until_us: int,
    *,
    agent_id: str | None = None,
) -> list[tuple[int, int, str, bytes]]:
    """The batched records of ``unit_id`` (of ``agent_id`` if given) whose kind is in
    ``kinds`` (None: any) and time in [since_us, until_us): (time_us, seq, kind,
    payload), by time then seq. Every record of a batch has its time in the batch's
    hour, so only the hours that overlap the span are read."""
    params: list[object] = [unit_id, since_us // HOUR_US * HOUR_US, until_us]
    where = "unit_id = ? AND hour_us >= ? AND hour_us < ?"
    if agent_id is not None:
        where += " AND agent_id = ?"
        params.append(agent_id)
    found = store._execute(
        f"SELECT agent_id, body FROM record_batches WHERE {where} ORDER BY hour_us", params
    ).fetchall()
    out = [
        (r.time_us, r.seq, r.kind, r.payload)
        for _, r in _decoded(found)
        if (kinds is None or r.kind in kinds) and since_us <= r.time_us < until_us
    ]
    out.sort(key=lambda row: (row[0], row[1]))
    return out


def nearest_rows(
    store: _Executes, unit_id: str, kind: str, at_us: int, limit: int, *, after: bool = False
) -> list[tuple[int, int, str, bytes]]:
    """The ``limit`` batched records of ``unit_id`` of ``kind`` nearest ``at_us``: those
    with a time before it, newest first; with ``after``, those at or after it, oldest
    first: (time_us, seq, kind, payload). Reads a batch hour at a time, outwards from
    ``at_us``, until it has them."""
    out: list[tuple[int, int, str, bytes]] = []
    hour = at_us // HOUR_US * HOUR_US
    if after:
        step, order, bound = "hour_us >= ? ORDER BY hour_us", False, hour
    else:
        step, order, bound = "hour_us <= ? ORDER BY hour_us DESC", True, hour
    while len(out) < limit:
        # Only hours whose batches hold the kind: a unit that never sends it costs one
        # index walk, not a decode of every hour.
        found = store._execute(
            "SELECT hour_us FROM record_batches WHERE unit_id = ? AND "
            f"(',' || kinds || ',') LIKE ? AND {step} LIMIT 1",
            (unit_id, f"%,{kind},%", bound),
        ).fetchone()
        if found is None:
            break
        hour = int(found[0])
        rows = store._execute(
            "SELECT agent_id, body FROM record_batches WHERE unit_id = ? AND hour_us = ?",
            (unit_id, hour),
        ).fetchall()
        got = [
            (r.time_us, r.seq, r.kind, r.payload)
            for _, r in _decoded(rows)
            if r.kind == kind and ((r.time_us >= at_us) if after else (r.time_us < at_us))
        ]
        got.sort(key=lambda row: (row[0], row[1]), reverse=order)
        out += got
        bound = hour + HOUR_US if after else hour - HOUR_US
    return out[: max(limit, 0)]
