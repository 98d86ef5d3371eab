"""Migration "batches" (issue 18): raw records kept compactly, in compressed batches of
one unit, one kind of record, one UTC hour and one agent, and the store's reads over them.

Raw records arrive one row each in ``records`` (the ingest table: (agent_id, seq) stored
once, cheap to append). Retention's compaction (`fleet.store.retention`) moves the
records older than ``[retention] compact_after_s`` that every consumer has read (the
agent's committed seq and the visit derivation's cursor, as folding always waited for)
into ``record_batches``. A batch holds its records by seq as columns: seq and time
deltas as 64-bit integers, payload lengths, then the payloads, each XORed with the one
before it where the two are as long, so that what did not change reads as zeros; zlib
then takes the zeros for almost nothing. The payloads come back byte for byte as the
agent sent them: a batch is lossless, only smaller (`bench/storage.py`).

Why one kind per batch: a reader asks for one kind (the unit page's counters, a
verdict's link states or car states), and an hour's car states are 20 times its
counters; a reader of counters decodes only counters. Why parts (``first_seq`` in the
key): a batch takes at most `PART_RECORDS` records and `PART_BYTES` payload bytes; a
later compaction that finds an hour's part already written merges into it while it has
room, else starts the next part, so a box that stamps everything into one hour cannot
grow one row without bound.

Folding reads batches, not rows: the batches of an hour before the window's cutoff are
decoded, folded into ``unit_hours`` and deleted in one transaction.

On PostgreSQL ``record_batches`` is partitioned by ``hour_us``, one partition per UTC
day (``record_batches_YYYYMMDD``), attached by compaction before it writes a day's first
batch; once folding has emptied a day wholly before the cutoff, the partition is
detached (CONCURRENTLY: readers are not blocked) and dropped whole, so its space goes
back without a vacuum (`fleet.store.postgres`). SQLite has no partitions: the rows are
deleted and ``PRAGMA incremental_vacuum`` gives the pages back (fleet.retention).

Readers (`rows_in`, `nearest_rows`) merge the batches with the rows still in
``records``, inside one snapshot (`SqlStore._snapshot`): a record is in exactly one of
the two at any commit (compaction moves it in one transaction), so a read sees each
record once.
"""

from __future__ import annotations

import datetime as dt
import functools
import struct
import sys
import zlib
from array import array
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

__all__ = [
    "BATCHES_MIGRATION_POSTGRES",
    "BATCHES_MIGRATION_SQLITE",
    "HOUR_US",
    "PART_BYTES",
    "PART_RECORDS",
    "BatchError",
    "BatchRecord",
    "decode",
    "encode",
    "nearest_rows",
    "partition_name",
    "rows_in",
    "snapshot_read",
]

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
# A batch's bounds (see the module's docstring): an hour of one car's states at the
# demo's rate is about 2,400 records and 100 kB of payloads.
PART_RECORDS = 20_000
PART_BYTES = 4_000_000

# last_seq, start_us and end_us are derivable from the body: kept so that an operator
# (and `Retention.status`'s oldest record) finds a batch's span without decoding it.
_COLUMNS = """
    unit_id    TEXT NOT NULL,
    hour_us    BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    agent_id   TEXT NOT NULL,
    first_seq  BIGINT NOT NULL,
    last_seq   BIGINT NOT NULL,
    start_us   BIGINT NOT NULL,
    end_us     BIGINT NOT NULL,
    records    INTEGER NOT NULL,
    payload_bytes BIGINT NOT NULL,
    body       {blob} NOT NULL,
    PRIMARY KEY (unit_id, hour_us, kind, agent_id, first_seq)
"""

BATCHES_MIGRATION_SQLITE = f"""
CREATE TABLE record_batches ({_COLUMNS.format(blob="BLOB")});
CREATE INDEX record_batches_hour ON record_batches (hour_us);
"""

# Partitioned by day of hour_us; the primary key holds the partition key, as PostgreSQL
# requires. The partitions themselves are attached by compaction (`PostgresStore`).
BATCHES_MIGRATION_POSTGRES = f"""
CREATE TABLE record_batches ({_COLUMNS.format(blob="BYTEA")}) PARTITION BY RANGE (hour_us);
CREATE INDEX record_batches_hour ON record_batches (hour_us);
"""

_VERSION = 1
# zlib's level: 9 took four times as long as 6 for 4.5 % fewer bytes (measured on the
# demo's records), and compaction runs on the store's thread that ingest shares.
_LEVEL = 6
_HEAD = struct.Struct("<IIqq")  # records, kinds, first seq, first time


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


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(len(a), "little")


def _column(typecode: str, values: Sequence[int]) -> bytes:
    column = array(typecode, values)
    if sys.byteorder == "big":
        column.byteswap()  # bodies are little-endian wherever they were written
    return column.tobytes()


def _read_column(typecode: str, data: bytes, at: int, n: int) -> tuple[array[int], int]:
    column = array(typecode)
    end = at + column.itemsize * n
    if end > len(data):
        raise BatchError("batch body ends inside its columns")
    column.frombytes(data[at:end])
    if sys.byteorder == "big":
        column.byteswap()
    return column, end


def encode(records: Sequence[BatchRecord]) -> bytes:
    """The batch body of ``records`` (in the order given; compaction gives seq order):
    a version byte, then the zlib-compressed columns. `decode` gives them back equal."""
    kinds: list[str] = []
    codes: dict[str, int] = {}
    for record in records:
        if record.kind not in codes:
            codes[record.kind] = len(kinds)
            kinds.append(record.kind)
    if len(kinds) > 255:
        raise BatchError("a batch holds at most 255 kinds of record")
    first_seq = records[0].seq if records else 0
    first_time = records[0].time_us if records else 0
    body = bytearray(_HEAD.pack(len(records), len(kinds), first_seq, first_time))
    for kind in kinds:
        name = kind.encode()
        body += struct.pack("<H", len(name)) + name
    seqs = [r.seq for r in records]
    times = [r.time_us for r in records]
    body += _column("q", [b - a for a, b in zip([first_seq, *seqs], seqs, strict=False)])
    body += _column("q", [b - a for a, b in zip([first_time, *times], times, strict=False)])
    body += bytes(codes[r.kind] for r in records)
    body += _column("I", [len(r.payload) for r in records])
    previous: dict[str, bytes] = {}
    for record in records:
        before = previous.get(record.kind)
        payload = record.payload
        # Consecutive records of a kind mostly differ in a few bytes (the time, a
        # position): XORed, the rest is zeros that zlib takes for almost nothing.
        same = before is not None and len(before) == len(payload)
        body += _xor(payload, before) if same and before is not None else payload
        previous[record.kind] = payload
    return bytes([_VERSION]) + zlib.compress(bytes(body), _LEVEL)


def decode(blob: bytes) -> list[BatchRecord]:
    """The records of a batch body, in the order they were encoded. `BatchError` names
    what is wrong with a body that is not one."""
    if not blob or blob[0] != _VERSION:
        found = blob[:1].hex() or "missing"
        raise BatchError(f"batch body version {found}, expected {_VERSION:02x}")
    inflate = zlib.decompressobj()
    try:
        data = inflate.decompress(blob[1:])
    except zlib.error as exc:
        raise BatchError(f"batch body does not decompress: {exc}") from None
    # zlib.decompress would take a body with anything after its stream (two bodies run
    # together) as its first part, the rest lost without a word.
    if not inflate.eof:
        raise BatchError("batch body ends inside its compressed stream")
    if inflate.unused_data:
        raise BatchError("batch body has bytes after its compressed stream")
    if len(data) < _HEAD.size:
        raise BatchError("batch body ends inside its header")
    n, k, first_seq, first_time = _HEAD.unpack_from(data)
    at = _HEAD.size
    # Each record takes at least 21 bytes of columns: a count beyond that is a lie,
    # refused before anything is allocated for it.
    if n * 21 > len(data):
        raise BatchError(f"batch body says {n} records, more than its {len(data)} bytes hold")
    kinds = []
    for _ in range(k):
        if at + 2 > len(data):
            raise BatchError("batch body ends inside its kinds")
        (size,) = struct.unpack_from("<H", data, at)
        # A name cut short would be taken as its first bytes, and the columns read from
        # past the body's end refused under another name.
        if at + 2 + size > len(data):
            raise BatchError("batch body ends inside its kinds")
        kinds.append(data[at + 2 : at + 2 + size].decode(errors="replace"))
        at += 2 + size
    seq_deltas, at = _read_column("q", data, at, n)
    time_deltas, at = _read_column("q", data, at, n)
    if at + n > len(data):
        raise BatchError("batch body ends inside its columns")
    codes = data[at : at + n]
    at += n
    if any(code >= len(kinds) for code in codes):
        raise BatchError("batch body names a kind it does not list")
    lengths, at = _read_column("I", data, at, n)
    if at + sum(lengths) != len(data):
        raise BatchError(
            "batch body ends inside a payload"
            if at + sum(lengths) > len(data)
            else "batch body has bytes after its last payload"
        )
    seqs = list(accumulate(seq_deltas, initial=first_seq))[1:]
    times = list(accumulate(time_deltas, initial=first_time))[1:]
    previous: dict[str, bytes] = {}
    out = []
    for i in range(n):
        kind = kinds[codes[i]]
        raw = data[at : at + lengths[i]]
        at += lengths[i]
        before = previous.get(kind)
        payload = _xor(raw, before) if before is not None and len(before) == len(raw) else raw
        previous[kind] = payload
        out.append(BatchRecord(seqs[i], times[i], kind, payload))
    return out


def partition_name(hour_us: int) -> str:
    """The PostgreSQL partition of ``record_batches`` holding ``hour_us``'s day."""
    day = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=hour_us // DAY_US * DAY_US)
    return f"record_batches_{day:%Y%m%d}"


class _Executes(Protocol):
    def _execute(self, text: str, params: Sequence[object] = ()) -> Any: ...


def _decoded(bodies: Sequence[Sequence[Any]]) -> list[BatchRecord]:
    return [record for (body,) in bodies for record in decode(bytes(body))]


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
    hour and its kind, so only the batches of those kinds and hours are read."""
    where = "unit_id = ? AND hour_us >= ? AND hour_us < ?"
    params: list[object] = [unit_id, since_us // HOUR_US * HOUR_US, until_us]
    if kinds is not None:
        where += f" AND kind IN ({', '.join('?' * len(kinds))})"
        params += kinds
    if agent_id is not None:
        where += " AND agent_id = ?"
        params.append(agent_id)
    found = store._execute(f"SELECT body FROM record_batches WHERE {where}", params).fetchall()
    out = [
        (r.time_us, r.seq, r.kind, r.payload)
        for r in _decoded(found)
        if since_us <= r.time_us < until_us
    ]
    out.sort(key=lambda row: (row[0], row[1]))
    return out


def nearest_rows(
    store: _Executes, unit_id: str, kind: str, at_us: int, limit: int, *, after: bool = False
) -> list[tuple[int, int, str, bytes]]:
    """The ``limit`` batched records of ``unit_id`` of ``kind`` nearest ``at_us``: those
    with a time before it, newest first; with ``after``, those at or after it, oldest
    first: (time_us, seq, kind, payload). Reads an hour's batches at a time, outwards
    from ``at_us``, until it has them."""
    out: list[tuple[int, int, str, bytes]] = []
    hour = at_us // HOUR_US * HOUR_US
    step = "hour_us >= ? ORDER BY hour_us" if after else "hour_us <= ? ORDER BY hour_us DESC"
    bound = hour
    while len(out) < limit:
        found = store._execute(
            f"SELECT hour_us FROM record_batches WHERE unit_id = ? AND kind = ? AND {step} LIMIT 1",
            (unit_id, kind, bound),
        ).fetchone()
        if found is None:
            break
        hour = int(found[0])
        bodies = store._execute(
            "SELECT body FROM record_batches WHERE unit_id = ? AND hour_us = ? AND kind = ?",
            (unit_id, hour, kind),
        ).fetchall()
        got = [
            (r.time_us, r.seq, r.kind, r.payload)
            for r in _decoded(bodies)
            if ((r.time_us >= at_us) if after else (r.time_us < at_us))
        ]
        got.sort(key=lambda row: (row[0], row[1]), reverse=not after)
        out += got
        bound = hour + HOUR_US if after else hour - HOUR_US
    return out[: max(limit, 0)]


class _Snapshots(Protocol):
    def _snapshot(self) -> AbstractContextManager[None]: ...


_S = TypeVar("_S", bound=_Snapshots)
_P = ParamSpec("_P")
_R = TypeVar("_R")


def snapshot_read(method: Callable[Concatenate[_S, _P], _R]) -> Callable[Concatenate[_S, _P], _R]:
    """A store reader that merges ``records`` with ``record_batches`` runs in one
    snapshot (`SqlStore._snapshot`), so a compaction committed between its reads can
    neither show a record twice nor hide it."""

    def read(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._snapshot():
            return method(self, *args, **kwargs)

    functools.update_wrapper(read, method)
    return read
