"""Compacted raw-record batches (issue 18, `fleet.store.batches`): the codec gives back
every record byte for byte and refuses a damaged body by name; on both stores, compaction
moves the old hot rows into batches of one (unit, hour, kind, agent), in parts of bounded
size, merging what a later run adds to an hour, and every raw-record reader answers as
before; compaction waits for the agent's committed seq and the visit derivation; one
agent that cannot be compacted, or a batch that does not decode, holds no other back;
PostgreSQL's day partitions come and go, and one holding batches is never dropped."""

from __future__ import annotations

import datetime as dt
import itertools
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.reports.visits import derive_visits
from fleet.store import batches
from fleet.store.base import BatchOp, ControllerIdentity, HelloOp, RegisterEntry, UnitClaim
from fleet.store.batches import BatchError, BatchRecord, decode, encode, partition_name
from fleet.store.open import open_store
from fleet.store.postgres import PostgresStore
from fleet.store.retention import HOUR_US, Retention
from fleet.store.sql import SqlStore, to_us
from protos.liftwatch.v1 import records_pb2
from tests.fleet import factories
from tests.fleet.test_maintenance import CONFIG, DAY, Feed
from tests.fleet.test_retention import add_entrapment, open_two_units, raw_count, run_retention

M = records_pb2
WINDOW = dt.timedelta(days=14)
WINDOW_US = to_us(DAY + WINDOW) - to_us(DAY)
# An hour after 03:00 and a bit: compaction (after an hour) takes what is older than
# 03:00; the window (14 days) folds nothing.
NOW = DAY + dt.timedelta(hours=4, minutes=10)
HOT = DAY + dt.timedelta(hours=3)
# A hot row: (agent_id, seq, unit_id, time_us, kind, payload); the records of a batch's
# parts: (unit_id, hour_us, kind, agent_id) (the key without first_seq).
Row = tuple[str, int, str, int, str, bytes]
BatchKey = tuple[str, int, str, str]
# Every hour of the feeds below, for the long-term reads.
ALL_HOURS = (to_us(DAY) - 24 * HOUR_US, to_us(DAY) + 3 * 24 * HOUR_US)


def _at(hours: float) -> dt.datetime:
    return DAY + dt.timedelta(hours=hours)


def _batch_record(record: records_pb2.Record) -> BatchRecord:
    kind = record.WhichOneof("payload")
    assert kind is not None
    return BatchRecord(record.seq, record.time.ToMicroseconds(), kind, record.SerializeToString())


# -- the codec -------------------------------------------------------------------------


def _realistic() -> list[BatchRecord]:
    """Records of every kind an agent sends, in seq order with gaps, payloads of a kind
    alike and not (lengths vary), and a clock that steps back twice."""
    out: list[records_pb2.Record] = []
    seq, at = 1_000_000, DAY
    for i in range(120):
        seq += 1 if i % 17 else 5  # the gaps of a restored outbox
        at += dt.timedelta(seconds=-30 if i in (40, 90) else 10)  # the clock set back
        record = M.Record(seq=seq, unit_id="U1")
        record.time.FromDatetime(at)
        if i % 6 == 0:
            record.counters.trips = 1000 + i * 37  # a varint growing in length
            record.counters.door_cycles = 3 * i
        elif i % 6 == 3:
            record.link_status.up = i % 4 != 1
        else:
            record.car_state.floor = 1 + i % 9
            record.car_state.moving = i % 3 == 0
            record.car_state.mode = M.SERVICE_MODE_INSPECTION if i > 60 else M.SERVICE_MODE_NORMAL
        out.append(record)
    for n, record in enumerate(
        (
            factories.record(0, "U1", time=DAY, event=M.EVENT_TYPE_ENTRAPMENT, event_id="ev-1"),
            factories.evidence_record(0, "U1", time=DAY, event_id="ev-1", samples=40),
            factories.evidence_record(0, "U1", time=DAY, event_id="ev-2", samples=3),
            factories.record(0, "U1", time=DAY, firmware="3.1.2"),
        )
    ):
        record.seq = seq + 10 + n
        out.append(record)
    return [_batch_record(r) for r in out]


def test_a_batch_gives_back_every_record_byte_for_byte() -> None:
    records = _realistic()
    assert len({r.kind for r in records}) == 6
    assert any(b.time_us < a.time_us for a, b in itertools.pairwise(records))
    # Compaction writes one kind a batch; the codec still takes several in one body.
    blob = encode(records)
    assert decode(blob) == records
    # The payloads parse as the Records sent (the XOR with the previous one undone).
    assert [M.Record.FromString(r.payload).seq for r in decode(blob)] == [r.seq for r in records]
    # Smaller than the payloads alone: what the compaction is for.
    assert len(blob) < sum(len(r.payload) for r in records) / 2
    for kind in {r.kind for r in records}:
        alike = [r for r in records if r.kind == kind]
        assert decode(encode(alike)) == alike


def test_an_empty_batch_and_one_of_a_record() -> None:
    assert decode(encode([])) == []
    one = [BatchRecord(7, -5, "counters", b"")]  # a time before the epoch, no payload
    assert decode(encode(one)) == one
    # Seqs and times far apart (deltas beyond 32 bits), a payload shorter than the one
    # before.
    wide = [BatchRecord(1, -(2**40), "a", b"xyz"), BatchRecord(2**62, 2**40, "a", b"x")]
    assert decode(encode(wide)) == wide


def _body(inner: bytes) -> bytes:
    """A batch body around hand-made columns (the version byte, then zlib)."""
    return b"\x01" + zlib.compress(inner)


def _columns(code: int = 0, *, count: int = 1, name_size: int = 9) -> bytes:
    """One record (seq 5, time 7, kind ``code`` of ["car_state"], payload "abc") as the
    codec's columns: a header (records, kinds, first seq, first time), each kind's name
    (its size, then the name), seq and time deltas (8 bytes each), kind codes (1 byte),
    payload lengths (4 bytes), payloads; ``count`` and ``name_size`` as the header and
    the kind's size say them, true or not."""
    return (
        struct.pack("<IIqq", count, 1, 5, 7)
        + struct.pack("<H", name_size)
        + b"car_state"
        + struct.pack("<qqBI", 0, 0, code, 3)
        + b"abc"
    )


def test_hand_made_columns_decode() -> None:
    # The columns the refusals below damage are well formed as they stand, and are what
    # the codec writes.
    assert decode(_body(_columns())) == [BatchRecord(5, 7, "car_state", b"abc")]
    assert zlib.decompress(encode([BatchRecord(5, 7, "car_state", b"abc")])[1:]) == _columns()


_BLOB = encode([BatchRecord(1, 10, "car_state", b"abc"), BatchRecord(2, 20, "counters", b"xy")])


@pytest.mark.parametrize(
    ("blob", "problem"),
    [
        (b"", "version missing"),
        (b"\x02" + _BLOB[1:], "version 02, expected 01"),
        (b"\x01" + b"not a zlib stream at all", "does not decompress"),
        (_BLOB[:-3], "ends inside its compressed stream"),
        (_BLOB + b"\x00", "bytes after its compressed stream"),
        (_BLOB + _BLOB[1:], "bytes after its compressed stream"),
        (_body(_columns()[:23]), "ends inside its header"),
        (_body(_columns(count=1000)), "says 1000 records, more than its 59 bytes hold"),
        (_body(_columns(count=2)), "ends inside its columns"),
        (_body(_columns(count=0)), "bytes after its last payload"),
        (_body(_columns(name_size=200)), "ends inside its kinds"),
        (_body(_columns(1)), "names a kind it does not list"),
        (_body(_columns()[:-1]), "ends inside a payload"),
        (_body(_columns() + b"\x00"), "bytes after its last payload"),
    ],
    ids=[
        "empty",
        "wrong-version",
        "garbage",
        "truncated",
        "trailing-byte",
        "two-bodies",
        "short-header",
        "count-beyond-the-body",
        "count-one-too-many",
        "count-too-few",
        "short-kind-name",
        "kind-code-out-of-range",
        "short-payload",
        "trailing-column-byte",
    ],
)
def test_a_damaged_body_is_refused_by_name(blob: bytes, problem: str) -> None:
    with pytest.raises(BatchError, match=problem):
        decode(blob)


def test_every_cut_of_a_body_is_refused() -> None:
    blob = encode(_realistic())
    for cut in range(len(blob)):
        with pytest.raises(BatchError):
            decode(blob[:cut])


def test_a_batch_holds_at_most_255_kinds() -> None:
    many = [BatchRecord(i, i, f"kind{i}", b"") for i in range(256)]
    with pytest.raises(BatchError, match="at most 255 kinds"):
        encode(many)
    assert decode(encode(many[:255])) == many[:255]


# -- on the stores ---------------------------------------------------------------------


@pytest.fixture
def store(store_target: str) -> Iterator[SqlStore]:
    opened = open_two_units(store_target)
    yield opened
    opened.close()


def _link_down(feed: Feed, at: dt.datetime) -> None:
    feed._new("U1", at - dt.timedelta(seconds=5)).link_status.up = False


def _first_part(feed: Feed) -> dt.datetime:
    """U2 watched 00:00-00:40 then silent; U1 in service from 00:00 with an entrapment
    at 00:30, a visit in inspection 01:00-01:30 and its link down at 01:49:55; to 02:30."""
    feed.play("U2", DAY, 40, M.SERVICE_MODE_NORMAL)
    at = feed.play("U1", DAY, 30, M.SERVICE_MODE_NORMAL)
    add_entrapment(feed, "U1", at)
    at = feed.play("U1", at, 30, M.SERVICE_MODE_NORMAL)
    at = feed.play("U1", at, 30, M.SERVICE_MODE_INSPECTION, moving_every=6)
    at = feed.play("U1", at, 20, M.SERVICE_MODE_NORMAL)
    _link_down(feed, at)  # 01:49:55
    return feed.play("U1", at, 40, M.SERVICE_MODE_NORMAL)


def _second_part(feed: Feed, at: dt.datetime) -> None:
    """U1 on from 02:30 to 04:00, its link down again at 03:19:55."""
    at = feed.play("U1", at, 50, M.SERVICE_MODE_NORMAL)
    _link_down(feed, at)  # 03:19:55
    feed.play("U1", at, 40, M.SERVICE_MODE_NORMAL)


# Spans: inside the batches (across their hours), inside the hot rows, across both, all.
_SPANS = {
    "batched": (_at(20 / 60), _at(100 / 60)),
    "hot": (_at(3 + 10 / 60), _at(3 + 50 / 60)),
    "across": (_at(2.5), _at(3.5)),
    "all": (_at(-1), _at(5)),
}
# Spans of the link: one starting just after it went down (in the batches, in the hot
# rows) and one starting at 03:00, whose last state before lies in the batches.
_LINK_SPANS = {
    **_SPANS,
    "down_batched": (DAY + dt.timedelta(minutes=109, seconds=57), _at(2 + 10 / 60)),
    "down_hot": (DAY + dt.timedelta(minutes=199, seconds=57), _at(3 + 40 / 60)),
    "from_edge": (HOT, HOT + dt.timedelta(minutes=5)),
}
_COUNTERS_AT = {
    "before_any": _at(-1),
    "batched": DAY + dt.timedelta(minutes=30, seconds=30),
    "on_a_reading": _at(1),
    "last_batched": HOT - dt.timedelta(microseconds=1),
    "edge": HOT,
    "hot": DAY + dt.timedelta(hours=3, minutes=30, seconds=30),
    "after_all": _at(5),
}


Spans = dict[str, tuple[dt.datetime, dt.datetime]]


def _answers(
    store: SqlStore,
    spans: Spans = _SPANS,
    link_spans: Spans = _LINK_SPANS,
    counters_at: dict[str, dt.datetime] = _COUNTERS_AT,
) -> dict[str, object]:
    """What every reader of raw records says over ``spans`` (the link's: ``link_spans``)
    and at ``counters_at``, and of the newest records."""
    found: dict[str, object] = {}
    for unit in ("U1", "U2"):
        found[f"latest_car/{unit}"] = store.latest_car_state(unit)
        for kind in ("counters", "link_status"):
            for limit in (1, 30, 100, 400):
                found[f"health/{unit}/{kind}/{limit}"] = store.health_records(unit, kind, limit)
        for name, at in counters_at.items():
            found[f"counters_near/{unit}/{name}"] = store.counters_near(unit, at)
        for name, (since, until) in spans.items():
            found[f"car_states/{unit}/{name}"] = store.car_states(unit, "A1", since, until)
            found[f"record_times/{unit}/{name}"] = store.record_times(unit, "A1", since, until)
    for name, (since, until) in link_spans.items():
        found[f"link_states/{name}"] = store.link_states("U1", since, until)
    return found


def _check_answers(found: dict[str, object]) -> None:
    """The answers hold what the feed put in them (so that "the same after" means
    something): each span's records, the link's state, the newest car state."""

    def down(name: str) -> bool:
        rows = found[f"link_states/{name}"]
        assert isinstance(rows, list) and rows
        return not M.Record.FromString(rows[0][1]).link_status.up

    assert down("down_batched") and down("down_hot") and not down("from_edge")
    for unit in ("U1", "U2"):
        for name in _SPANS:
            assert found[f"car_states/{unit}/{name}"] or (unit, name) in {
                ("U2", "hot"),
                ("U2", "across"),
            }
    latest = found["latest_car/U2"]
    assert isinstance(latest, tuple) and latest[0] == DAY + dt.timedelta(minutes=39, seconds=50)
    near = found["counters_near/U1/before_any"]
    assert isinstance(near, tuple) and near[0] == DAY  # the first after
    assert len(found["health/U1/counters/400"]) == 240  # type: ignore[arg-type]


def _rows(store: SqlStore, where: str = "", params: tuple[object, ...] = ()) -> list[Row]:
    """The hot rows: (agent, seq, unit, time_us, kind, payload), by agent and seq."""
    rows = store._execute(
        f"SELECT agent_id, seq, unit_id, time_us, kind, payload FROM records {where} "
        "ORDER BY agent_id, seq",
        params,
    ).fetchall()
    return [(str(a), int(s), str(u), int(t), str(k), bytes(p)) for a, s, u, t, k, p in rows]


def _expected_batches(rows: list[Row]) -> dict[BatchKey, list[BatchRecord]]:
    """The records of the batches ``rows`` (hot rows by agent and seq) compact into, by
    (unit, hour, kind, agent), in seq order."""
    groups: dict[BatchKey, list[BatchRecord]] = {}
    for agent, seq, unit, time_us, kind, payload in rows:
        key = (unit, time_us // HOUR_US * HOUR_US, kind, agent)
        groups.setdefault(key, []).append(BatchRecord(seq, time_us, kind, payload))
    return groups


def _stored_parts(store: SqlStore) -> dict[BatchKey, list[list[BatchRecord]]]:
    """Every row of record_batches, decoded, as the parts of each (unit, hour, kind,
    agent) by first seq, after checking each row's columns against its body and its size
    against the part bounds (`batches.PART_RECORDS`, `batches.PART_BYTES`: a part of one
    record may be larger)."""
    found: dict[BatchKey, list[list[BatchRecord]]] = {}
    for unit, hour, kind, agent, first, last, start, end, count, size, body in store._execute(
        "SELECT unit_id, hour_us, kind, agent_id, first_seq, last_seq, start_us, end_us, "
        "records, payload_bytes, body FROM record_batches ORDER BY first_seq"
    ).fetchall():
        records = decode(bytes(body))
        assert (first, last, count) == (records[0].seq, records[-1].seq, len(records))
        assert (start, end) == (min(r.time_us for r in records), max(r.time_us for r in records))
        assert size == sum(len(r.payload) for r in records)
        assert {(r.kind, r.time_us // HOUR_US * HOUR_US) for r in records} == {(kind, hour)}
        assert all(a.seq < b.seq for a, b in itertools.pairwise(records))
        assert count <= batches.PART_RECORDS and (size <= batches.PART_BYTES or count == 1)
        found.setdefault((str(unit), int(hour), str(kind), str(agent)), []).append(records)
    for parts in found.values():
        assert all(a[-1].seq < b[0].seq for a, b in itertools.pairwise(parts))
    return found


def _stored_batches(store: SqlStore) -> dict[BatchKey, list[BatchRecord]]:
    """The records of every (unit, hour, kind, agent)'s parts, in seq order (checked as
    `_stored_parts` does)."""
    return {key: [r for part in parts for r in part] for key, parts in _stored_parts(store).items()}


def _compact(store: SqlStore, *, batch: int = 10_000) -> tuple[int, int, int, int]:
    result = run_retention(store, to_us(NOW), WINDOW_US, batch=batch, compact_after_us=HOUR_US)
    assert (result.folded, result.deleted, result.partitions_dropped) == (0, 0, 0)
    assert (result.failed_agents, result.damaged_batches) == (0, 0)
    return result.compacted, result.batches, result.held_back, result.cutoff_us


LongTerm = tuple[dict[str, list[dict[str, Any]]], set[Row]]


def _long_term(store: SqlStore) -> LongTerm:
    """What folding left of U1's and U2's records: their hour rows, the records kept."""
    retention = Retention(store)
    kept = store._execute(
        "SELECT agent_id, seq, unit_id, time_us, kind, payload FROM records_kept"
    ).fetchall()
    return (
        {u: retention.unit_hours(u, *ALL_HOURS) for u in ("U1", "U2")},
        {(str(a), int(s), str(u), int(t), str(k), bytes(p)) for a, s, u, t, k, p in kept},
    )


def _folds_as_at_once(store: SqlStore, reference: LongTerm) -> None:
    """``store``'s folded records left what folding them all at once left (`reference`):
    the same hour rows; the same records kept, and maybe more: the last Counters and
    link-status records of a fold step, kept for their reach into the next
    (`Retention._readings_at_boundaries`, `_keep_newest_link`)."""
    hours, kept = _long_term(store)
    assert hours == reference[0]
    assert kept >= reference[1]
    assert {row[4] for row in kept - reference[1]} <= {"counters", "link_status"}


def _folded_at_once(tmp_path: Path, sent: list[records_pb2.Record]) -> LongTerm:
    """`_long_term` of a store (SQLite) given ``sent`` and folding them in one run, all
    past the window: what folding the same records in any other way must leave."""
    reference = open_two_units(str(tmp_path / "reference.db"))
    try:
        reference.write([BatchOp("A1", tuple(sent))], NOW)
        derive_visits(reference, CONFIG.verdicts, NOW)
        run_retention(reference, to_us(NOW + WINDOW), WINDOW_US, batch=100_000)
        assert raw_count(reference) == 0
        return _long_term(reference)
    finally:
        reference.close()


def _fed(store: SqlStore) -> tuple[Feed, list[records_pb2.Record]]:
    """Both parts of A1's feed (00:00-04:00) stored and read by the visit derivation; the
    feed and the records it sent."""
    feed = Feed("A1")
    _second_part(feed, _first_part(feed))
    sent = list(feed.records)
    feed.send(store)
    derive_visits(store, CONFIG.verdicts, NOW)
    return feed, sent


def test_compaction_moves_old_rows_into_batches_and_every_reader_answers_the_same(
    store: SqlStore,
) -> None:
    feed, sent = _fed(store)
    before = _answers(store)
    _check_answers(before)
    old = _rows(store, "WHERE time_us < ?", (to_us(HOT),))
    hot = _rows(store, "WHERE time_us >= ?", (to_us(HOT),))
    total = raw_count(store)

    compacted, written, held_back, _ = _compact(store)

    expected = _expected_batches(old)
    assert (compacted, held_back) == (len(old), 0)
    # U2's hour 00 and U1's 01 and 02: car states, counters, link; U1's 00 also its
    # entrapment's event and evidence. One part each.
    assert written == len(expected) == 3 * 3 + 5
    assert _rows(store) == hot
    assert _stored_batches(store) == expected
    assert all(len(parts) == 1 for parts in _stored_parts(store).values())
    assert raw_count(store) == total
    assert _answers(store) == before

    # The records sent again (an agent's outbox restored): neither the compacted ones
    # nor the hot ones are stored again; a new one among them is.
    replayed = store.write([BatchOp("A1", tuple(sent))], NOW)[0]
    assert replayed is not None and replayed.inserted == 0
    new = factories.record(feed.seq + 1, "U1", time=_at(4))
    again = store.write([BatchOp("A1", (*sent[:50], new))], NOW)[0]
    assert again is not None and again.inserted == 1
    assert raw_count(store) == total + 1 and _stored_batches(store) == expected


def test_a_later_run_merges_into_the_hours_batch(store: SqlStore) -> None:
    """The visit derivation has read only the first part (to 02:30) when retention runs:
    compaction stops there; the next run, after the derivation, adds 02:30-03:00 to the
    batches of hour 02:00 (one row a kind still), and the readers never see a
    difference."""
    feed = Feed("A1")
    at = _first_part(feed)
    feed.send(store)
    derive_visits(store, CONFIG.verdicts, NOW)
    derived = store._execute("SELECT seq FROM maintenance_derived").fetchone()[0]
    _second_part(feed, at)
    feed.send(store)
    before = _answers(store)
    _check_answers(before)
    old = _rows(store, "WHERE time_us < ?", (to_us(HOT),))
    first = [r for r in old if r[1] <= derived]
    assert len(first) < len(old) and first[-1][3] < to_us(_at(2.5))

    compacted, _, held_back, _ = _compact(store)

    assert (compacted, held_back) == (len(first), 1)
    assert _stored_batches(store) == _expected_batches(first)
    assert _rows(store)[0][1] == derived + 1
    assert _answers(store) == before

    derive_visits(store, CONFIG.verdicts, NOW)
    # Steps of 10 x 3 records (of 240 to compact): hour 02:00's batches merged into
    # again and again.
    compacted, written, held_back, _ = _compact(store, batch=3)

    assert (compacted, held_back) == (len(old) - len(first), 0)
    assert written >= 240 // 30
    merged = _stored_batches(store)
    assert merged == _expected_batches(old)
    hour = merged[("U1", to_us(_at(2)), "car_state", "A1")]
    assert hour[0].time_us == to_us(_at(2)) and hour[-1].time_us < to_us(HOT)
    assert store._execute("SELECT COUNT(*) FROM record_batches").fetchone()[0] == 14
    assert _answers(store) == before


@pytest.mark.parametrize(("bound", "value"), [("PART_RECORDS", 40), ("PART_BYTES", 1_000)])
def test_an_hour_in_parts_reads_and_folds_the_same(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bound: str, value: int
) -> None:
    """With parts of at most 40 records (or 1,000 bytes of payloads), an hour's car
    states take several parts, whether a compaction step brings more than a part holds
    (steps of 370 records) or merges into the last part written: every reader answers as
    before, and folding the parts leaves what folding the records at once leaves."""
    monkeypatch.setattr(batches, bound, value)
    _, sent = _fed(store)
    before = _answers(store)
    old = _rows(store, "WHERE time_us < ?", (to_us(HOT),))

    compacted, written, _, _ = _compact(store, batch=37)

    assert compacted == len(old)
    parts = _stored_parts(store)  # each within the bound
    assert _stored_batches(store) == _expected_batches(old)
    assert len(parts[("U1", to_us(_at(1)), "car_state", "A1")]) >= 8  # 360 car states
    # More parts written than stored: a part merged into is written again.
    assert written > sum(len(p) for p in parts.values())
    assert _answers(store) == before

    folded = run_retention(store, to_us(NOW + WINDOW), WINDOW_US, batch=100)
    assert (folded.deleted, folded.damaged_batches, raw_count(store)) == (len(sent), 0, 0)
    _folds_as_at_once(store, _folded_at_once(tmp_path, sent))


def test_batched_and_hot_records_past_the_cutoff_fold_in_their_order(
    store: SqlStore, tmp_path: Path
) -> None:
    """Hours 00:00-03:00 compacted into batches, 03:00-04:10 still hot, then retention
    does not run until all of it lies beyond the window (a fleet stopped for two weeks):
    one run folds both, the batches first (the older records of the agent), so each
    hour's run time, trips and time in each mode are what folding all at once gives."""
    _, sent = _fed(store)
    compacted, *_ = _compact(store)
    assert 0 < compacted < len(sent)

    result = run_retention(store, to_us(NOW + WINDOW), WINDOW_US, batch=500)

    assert (result.compacted, result.deleted, raw_count(store)) == (0, len(sent), 0)
    _folds_as_at_once(store, _folded_at_once(tmp_path, sent))


def test_compaction_never_passes_the_committed_seq(store: SqlStore) -> None:
    feed = Feed("A1")
    _first_part(feed)
    feed.send(store)
    derive_visits(store, CONFIG.verdicts, NOW)
    rows = _rows(store)
    # Ingest moves committed_seq in the transaction that stores the records, so no row
    # lies above it through the API: lowered by hand, it stands for a write not counted.
    limit = next(r[1] for r in rows if r[3] >= to_us(_at(1.25)))
    with store._transaction():
        store._execute("UPDATE agents SET committed_seq = ? WHERE agent_id = 'A1'", (limit,))

    compacted, _, held_back, _ = _compact(store)

    assert (compacted, held_back) == (limit, 0)
    assert _rows(store) == [r for r in rows if r[1] > limit]
    assert _stored_batches(store) == _expected_batches([r for r in rows if r[1] <= limit])


def test_a_clock_set_back_across_the_cutoff_reads_the_same(store: SqlStore) -> None:
    """U1 from 02:00 to 03:01, then its clock set back 150 s (to 02:58:30) for half an
    hour: compaction stops at the agent's first record at 03:00, so the records sent
    after it from 02:58:30 stay hot, older than batched ones (02:59). Each reader still
    answers by time, as before (failed before: car_states and record_times put the
    batched records first; health_records and counters_near missed the batched reading
    of 02:59:00)."""
    feed = Feed("A1")
    at = feed.play("U1", _at(2), 61, M.SERVICE_MODE_NORMAL)
    feed.play("U1", at - dt.timedelta(seconds=150), 30, M.SERVICE_MODE_NORMAL)
    feed.send(store)
    derive_visits(store, CONFIG.verdicts, NOW)
    spans = {
        "around": (_at(2.95), _at(3.05)),
        "from_set_back": (HOT - dt.timedelta(seconds=85), HOT + dt.timedelta(minutes=2)),
        "all": _SPANS["all"],
    }
    counters_at = {
        "between": HOT - dt.timedelta(seconds=45),  # 02:59:00 batched, 02:58:30 hot
        "edge": HOT,
        "set_back": HOT + dt.timedelta(seconds=5),
    }
    before = _answers(store, spans, spans, counters_at)

    compacted, *_ = _compact(store)

    assert compacted == 60 * 8  # 02:00-03:00: six car states, counters, link a minute
    oldest_hot = store._execute("SELECT MIN(time_us) FROM records").fetchone()[0]
    newest_batched = store._execute("SELECT MAX(end_us) FROM record_batches").fetchone()[0]
    assert oldest_hot == to_us(HOT - dt.timedelta(seconds=90)) < newest_batched
    assert _answers(store, spans, spans, counters_at) == before


# -- what one agent or one batch cannot stop --------------------------------------------


def _damage(store: SqlStore, unit_id: str, hour: dt.datetime, kind: str) -> int:
    """Cut the last bytes off the body of ``unit_id``'s one batch of ``kind`` in
    ``hour`` (damaged on disk); how many records it held."""
    key = (unit_id, to_us(hour), kind)
    where = "unit_id = ? AND hour_us = ? AND kind = ?"
    body, records = store._execute(
        f"SELECT body, records FROM record_batches WHERE {where}", key
    ).fetchone()
    with store._transaction():
        store._execute(f"UPDATE record_batches SET body = ? WHERE {where}", (body[:-3], *key))
    return int(records)


def _car_states(store: SqlStore, unit_id: str) -> int:
    """Car states folded into ``unit_id``'s hour rows."""
    return sum(int(h["car_states"]) for h in Retention(store).unit_hours(unit_id, *ALL_HOURS))


def test_a_batch_that_does_not_decode_is_skipped_and_stays(store: SqlStore) -> None:
    """U1's counters of hour 00:00 damaged on disk: folding counts the batch as damaged,
    leaves it where it is (run after run), and folds every other batch; on PostgreSQL,
    the day's partition, still holding it, is not dropped."""
    feed = Feed("A1")
    _first_part(feed)
    cars = {
        u: sum(r.unit_id == u and r.HasField("car_state") for r in feed.records)
        for u in ("U1", "U2")
    }
    feed.send(store)
    derive_visits(store, CONFIG.verdicts, NOW)
    compacted, *_ = _compact(store)
    damaged = _damage(store, "U1", DAY, "counters")
    assert damaged == 60

    result = run_retention(store, to_us(NOW + WINDOW), WINDOW_US, batch=100)

    assert (result.damaged_batches, result.failed_agents) == (1, 0)
    assert result.deleted == compacted - damaged
    left = store._execute("SELECT unit_id, hour_us, kind, records FROM record_batches").fetchall()
    assert [tuple(r) for r in left] == [("U1", to_us(DAY), "counters", damaged)]
    assert {u: _car_states(store, u) for u in cars} == cars
    hours = {h["hour_us"]: h for h in Retention(store).unit_hours("U1", *ALL_HOURS)}
    # (00:00, 01:00] holds 01:00's reading, from hour 01:00's batch; 00:00's reading (of
    # the hour before) was in the damaged one.
    assert hours[to_us(DAY)]["counters_us"] == to_us(_at(1))
    assert to_us(DAY) - HOUR_US not in hours
    if isinstance(store, PostgresStore):
        assert _partitions(store) == [partition_name(to_us(DAY))]

    again = run_retention(store, to_us(NOW + WINDOW), WINDOW_US, batch=100)
    assert (again.damaged_batches, again.deleted, again.partitions_dropped) == (1, 0, 0)
    assert raw_count(store) == damaged


def _second_agent(store: SqlStore) -> None:
    """U3, claimed by agent A2 (A1 claims U1 and U2)."""
    store.upsert_register([RegisterEntry("U3", contractor="C1")])
    mode = M.EVENT_TYPE_MODE_CHANGE
    claim = UnitClaim("U3", ControllerIdentity(), detectable=(mode,))
    store.write([HelloOp("A2", "1.0", (claim,))], DAY)


def test_an_agent_that_cannot_be_compacted_holds_no_other_back(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A1's batches cannot be written (a store limit, say): its step rolls back whole,
    the records it had folded at once included, and it is counted; A2's records are
    compacted and folded as if A1 had none. The next run does A1's, folded once."""
    _second_agent(store)
    feeds = {"A1": Feed("A1"), "A2": Feed("A2")}
    for feed, unit in zip(feeds.values(), ("U1", "U3"), strict=True):
        feed.play(unit, DAY, 240, M.SERVICE_MODE_NORMAL)
        feed.send(store)
    # The fold's cutoff at 02:00: what lies before is folded at once, the rest batched.
    now = _at(2) + WINDOW
    derive_visits(store, CONFIG.verdicts, now)
    edge = to_us(_at(2))
    rows = {a: _rows(store, "WHERE agent_id = ?", (a,)) for a in feeds}
    old = {a: [r for r in rows[a] if r[3] < edge] for a in feeds}
    cars = {a: sum(r[4] == "car_state" for r in old[a]) for a in feeds}
    merge = Retention._merge_batch

    def failing(self: Retention, agent_id: str, *args: Any) -> int:
        if agent_id == "A1":
            raise RuntimeError("A1's batch cannot be written")
        return merge(self, agent_id, *args)

    monkeypatch.setattr(Retention, "_merge_batch", failing)
    # Steps of 5,000 records: each agent's records in one.
    result = run_retention(store, to_us(now), WINDOW_US, batch=500)

    assert (result.failed_agents, result.damaged_batches) == (1, 0)
    assert (result.deleted, result.compacted) == (len(old["A2"]), len(rows["A2"]) - len(old["A2"]))
    assert _rows(store, "WHERE agent_id = 'A1'") == rows["A1"]
    assert (_car_states(store, "U1"), _car_states(store, "U3")) == (0, cars["A2"])
    assert {key[3] for key in _stored_batches(store)} == {"A2"}
    assert _stored_batches(store) == _expected_batches([r for r in rows["A2"] if r[3] >= edge])

    monkeypatch.undo()
    again = run_retention(store, to_us(now), WINDOW_US, batch=500)

    assert (again.failed_agents, again.deleted) == (0, len(old["A1"]))
    assert again.compacted == len(rows["A1"]) - len(old["A1"])
    assert (_car_states(store, "U1"), _car_states(store, "U3")) == (cars["A1"], cars["A2"])
    assert _rows(store) == []


def test_a_damaged_part_to_merge_into_fails_only_its_agent(store: SqlStore) -> None:
    """The batch a later compaction would merge into does not decode: that agent's
    records stay hot (counted as failed, tried again next run), nothing is lost."""
    feed = Feed("A1")
    at = _first_part(feed)
    feed.send(store)
    derive_visits(store, CONFIG.verdicts, NOW)
    _compact(store)
    _damage(store, "U1", _at(2), "car_state")
    _second_part(feed, at)
    feed.send(store)
    derive_visits(store, CONFIG.verdicts, NOW)
    hot = _rows(store)

    result = run_retention(store, to_us(NOW), WINDOW_US, batch=10_000)

    assert (result.failed_agents, result.compacted, result.deleted) == (1, 0, 0)
    assert _rows(store) == hot


# -- PostgreSQL's day partitions -------------------------------------------------------


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[SqlStore]:
    opened = open_store(pg_url)
    opened.upsert_register([RegisterEntry("U1", contractor="C1")])
    opened.write([HelloOp("A1", "1.0", ())], DAY)
    yield opened
    opened.close()


def _partitions(store: SqlStore) -> list[str]:
    rows = store._execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'record_batches'::regclass ORDER BY c.relname"
    ).fetchall()
    return [str(r[0]) for r in rows]


# U1 from 22:00 on DAY to 02:00 the next day, compacted: a batch in each of two days.
_DAYS = [partition_name(to_us(_at(22))), partition_name(to_us(_at(24)))]


def _two_days(store: SqlStore) -> Feed:
    feed = Feed("A1")
    feed.play("U1", _at(22), 240, M.SERVICE_MODE_NORMAL)
    feed.send(store)
    derive_visits(store, CONFIG.verdicts, _at(30))
    assert _DAYS == ["record_batches_20260302", "record_batches_20260303"]
    assert _partitions(store) == []
    compaction = run_retention(store, to_us(_at(27)), WINDOW_US, batch=500)
    assert compaction.compacted == raw_count(store) and compaction.partitions_dropped == 0
    assert _partitions(store) == _DAYS
    return feed


def test_a_day_partition_comes_with_compaction_and_goes_once_folded(pg_store: SqlStore) -> None:
    """Two day partitions; folded to 01:00 the next day, DAY's goes and the next day's
    stays (an hour of it is not folded); folded past it, it goes too; a late record of a
    folded day is folded at once, its day's partition not made again."""
    store = pg_store
    feed = _two_days(store)

    raw = raw_count(store)
    first = run_retention(store, to_us(_at(25) + WINDOW), WINDOW_US, batch=500)
    assert first.cutoff_us == to_us(_at(25))
    assert first.partitions_dropped == 1 and _partitions(store) == _DAYS[1:]
    assert first.deleted == raw - raw_count(store) > 0
    assert store._execute("SELECT MIN(hour_us) FROM record_batches").fetchone()[0] == to_us(_at(25))

    second = run_retention(store, to_us(_at(49) + WINDOW), WINDOW_US, batch=500)
    assert second.partitions_dropped == 1 and _partitions(store) == []
    assert raw_count(store) == 0
    before = {h["hour_us"]: h["car_states"] for h in Retention(store).unit_hours("U1", *ALL_HOURS)}

    late = factories.record(feed.seq + 1, "U1", time=_at(23))
    store.write([BatchOp("A1", (late,))], _at(49) + WINDOW)
    derive_visits(store, CONFIG.verdicts, _at(49) + WINDOW)
    again = run_retention(store, to_us(_at(49) + WINDOW), WINDOW_US, batch=500)
    assert (again.compacted, again.folded, again.deleted, again.partitions_dropped) == (0, 1, 1, 0)
    assert _partitions(store) == [] and raw_count(store) == 0
    after = {h["hour_us"]: h["car_states"] for h in Retention(store).unit_hours("U1", *ALL_HOURS)}
    assert after == {**before, to_us(_at(23)): before[to_us(_at(23))] + 1}


def test_a_detached_day_holding_batches_is_attached_again(pg_store: SqlStore, pg_url: str) -> None:
    """DAY's partition found detached with its batches in it (as after a late batch
    slipped in between retention's detach and its drop): it is attached again, not
    dropped with them, and folded and dropped by the next run."""
    import psycopg

    store = pg_store
    _two_days(store)
    raw = raw_count(store)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE record_batches DETACH PARTITION {_DAYS[0]}")
    assert _partitions(store) == _DAYS[1:]
    in_day = store._execute(f"SELECT COALESCE(SUM(records), 0) FROM {_DAYS[0]}").fetchone()[0]
    assert 0 < in_day < raw

    first = run_retention(store, to_us(_at(49) + WINDOW), WINDOW_US, batch=500)

    assert (first.deleted, first.partitions_dropped) == (raw - in_day, 1)
    assert _partitions(store) == _DAYS[:1] and raw_count(store) == in_day
    second = run_retention(store, to_us(_at(49) + WINDOW), WINDOW_US, batch=500)
    assert (second.deleted, second.partitions_dropped) == (in_day, 1)
    assert _partitions(store) == [] and raw_count(store) == 0
    assert _car_states(store, "U1") == raw * 6 // 8  # six car states of eight records a minute


def test_an_interrupted_detach_is_finalized(pg_store: SqlStore, pg_url: str) -> None:
    """A detach of DAY's partition cancelled while it waited for a reader (a crash or a
    cancel part-way through DETACH CONCURRENTLY) leaves it pending: the next run
    finishes it, and drops the partition once folded, or attaches it again while it
    still holds batches."""
    import psycopg

    store = pg_store
    _two_days(store)
    raw = raw_count(store)
    # The reader's open transaction holds its lock on record_batches, which the detach's
    # second half (after it marked the partition pending and committed) waits for: the
    # lock timeout cancels it there. A lock wait, not the machine's speed, decides where
    # it stops.
    with (
        psycopg.connect(pg_url, autocommit=True) as reader,
        psycopg.connect(pg_url, autocommit=True) as detacher,
        reader.transaction(),
    ):
        reader.execute("SELECT 1 FROM record_batches LIMIT 1").fetchall()
        detacher.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            detacher.execute(f"ALTER TABLE record_batches DETACH PARTITION {_DAYS[0]} CONCURRENTLY")
    pending = store._execute(
        "SELECT c.relname, i.inhdetachpending FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'record_batches'::regclass "
        "ORDER BY c.relname"
    ).fetchall()
    assert [tuple(r) for r in pending] == [(_DAYS[0], True), (_DAYS[1], False)]
    in_day = store._execute(f"SELECT COALESCE(SUM(records), 0) FROM {_DAYS[0]}").fetchone()[0]

    first = run_retention(store, to_us(_at(49) + WINDOW), WINDOW_US, batch=500)

    # A pending partition is no longer read through record_batches: its batches wait
    # for the next run, the partition attached again (pending no more).
    assert (first.deleted, first.partitions_dropped) == (raw - in_day, 1)
    assert _partitions(store) == _DAYS[:1]
    assert store._execute(
        "SELECT inhdetachpending FROM pg_inherits WHERE inhparent = 'record_batches'::regclass"
    ).fetchall() == [(False,)]
    second = run_retention(store, to_us(_at(49) + WINDOW), WINDOW_US, batch=500)
    assert (second.deleted, second.partitions_dropped) == (in_day, 1)
    assert _partitions(store) == [] and raw_count(store) == 0
