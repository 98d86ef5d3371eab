"""Compacted raw-record batches (issue 18, `fleet.store.batches`): the codec gives back
every record byte for byte and refuses a damaged body by name; on both stores, compaction
moves the old hot rows into one batch per (unit, hour, agent), merging what a later run
adds to an hour, and every raw-record reader answers as before; compaction waits for the
agent's committed seq and the visit derivation; PostgreSQL's day partitions come and go."""

from __future__ import annotations

import datetime as dt
import itertools
import zlib
from collections.abc import Iterator

import pytest

from fleet.reports.visits import derive_visits
from fleet.store.base import BatchOp, HelloOp, RegisterEntry
from fleet.store.batches import BatchError, BatchRecord, decode, encode, kinds_of, partition_name
from fleet.store.open import open_store
from fleet.store.retention import HOUR_US
from fleet.store.sql import SqlStore, to_us
from protos.liftwatch.v1 import records_pb2
from tests.fleet import factories
from tests.fleet.test_maintenance import CONFIG, DAY, Feed
from tests.fleet.test_retention import add_entrapment, open_two_units, raw_count, run_retention

M = records_pb2
WINDOW_US = to_us(DAY + dt.timedelta(days=14)) - to_us(DAY)
# An hour after 03:00 and a bit: compaction (after an hour) takes what is older than
# 03:00; the window (14 days) folds nothing.
NOW = DAY + dt.timedelta(hours=4, minutes=10)
HOT = DAY + dt.timedelta(hours=3)
# A hot row: (agent_id, seq, unit_id, time_us, kind, payload); a batch's key: (unit_id,
# hour_us, agent_id).
Row = tuple[str, int, str, int, str, bytes]
BatchKey = tuple[str, int, str]


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
    blob = encode(records)
    assert decode(blob) == records
    # The payloads parse as the Records sent (the XOR with the previous one undone).
    assert [M.Record.FromString(r.payload).seq for r in decode(blob)] == [r.seq for r in records]
    assert kinds_of(records) == "car_state,controller_info,counters,event,evidence,link_status"
    # Smaller than the payloads alone: what the compaction is for.
    assert len(blob) < sum(len(r.payload) for r in records) / 2


def test_an_empty_batch_and_one_of_a_record() -> None:
    assert decode(encode([])) == []
    one = [BatchRecord(7, -5, "counters", b"")]  # a time before the epoch, no payload
    assert decode(encode(one)) == one


def _body(inner: bytes) -> bytes:
    """A batch body around hand-made columns (the version byte, then zlib)."""
    return b"\x01" + zlib.compress(inner)


def _columns(code: int) -> bytes:
    """One record (seq 5, time 7, kind ``code`` of ["car_state"], payload "abc") as the
    codec's columns: count, kinds, base seq and time, deltas, codes, lengths, payloads."""
    return bytes([1, 1, 9]) + b"car_state" + bytes([5, 14, 0, 0, code, 3]) + b"abc"


def test_hand_made_columns_decode() -> None:
    # The columns the refusals below damage are well formed as they stand.
    assert decode(_body(_columns(0))) == [BatchRecord(5, 7, "car_state", b"abc")]


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
        (_body(_columns(1)), "names a kind it does not list"),
        (_body(_columns(0)[:-1]), "ends inside a payload"),
        (_body(_columns(0) + b"\x00"), "bytes after its last payload"),
        (_body(bytes([0x81])), "ends inside a number"),
        (_body(bytes([1, 1, 20]) + b"car_state"), "ends inside a payload"),
    ],
    ids=[
        "empty",
        "wrong-version",
        "garbage",
        "truncated",
        "trailing-byte",
        "two-bodies",
        "kind-code-out-of-range",
        "short-payload",
        "trailing-column-byte",
        "short-number",
        "short-kind-name",
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
    """The batches ``rows`` (hot rows by agent and seq) compact into."""
    groups: dict[BatchKey, list[BatchRecord]] = {}
    for agent, seq, unit, time_us, kind, payload in rows:
        key = (unit, time_us // HOUR_US * HOUR_US, agent)
        groups.setdefault(key, []).append(BatchRecord(seq, time_us, kind, payload))
    return groups


def _stored_batches(store: SqlStore) -> dict[BatchKey, list[BatchRecord]]:
    """Every row of record_batches, decoded, after checking its columns against its body."""
    found: dict[BatchKey, list[BatchRecord]] = {}
    for unit, hour, agent, first, last, start, end, count, kinds, body in store._execute(
        "SELECT unit_id, hour_us, agent_id, first_seq, last_seq, start_us, end_us, records, "
        "kinds, body FROM record_batches"
    ).fetchall():
        records = decode(bytes(body))
        assert (first, last, count) == (records[0].seq, records[-1].seq, len(records))
        assert (start, end) == (min(r.time_us for r in records), max(r.time_us for r in records))
        assert kinds == kinds_of(records)
        found[(str(unit), int(hour), str(agent))] = records
    return found


def _compact(store: SqlStore, *, batch: int = 10_000) -> tuple[int, int, int, int]:
    result = run_retention(store, to_us(NOW), WINDOW_US, batch=batch, compact_after_us=HOUR_US)
    assert (result.folded, result.deleted, result.partitions_dropped) == (0, 0, 0)
    return result.compacted, result.batches, result.held_back, result.cutoff_us


def test_compaction_moves_old_rows_into_batches_and_every_reader_answers_the_same(
    store: SqlStore,
) -> None:
    feed = Feed("A1")
    _second_part(feed, _first_part(feed))
    sent = list(feed.records)
    feed.send(store)
    derive_visits(store, CONFIG.verdicts, NOW)
    before = _answers(store)
    _check_answers(before)
    old = _rows(store, "WHERE time_us < ?", (to_us(HOT),))
    hot = _rows(store, "WHERE time_us >= ?", (to_us(HOT),))
    total = raw_count(store)

    compacted, written, held_back, _ = _compact(store)

    expected = _expected_batches(old)
    assert (compacted, held_back) == (len(old), 0)
    assert written == len(expected) == 4  # U2's hour 00; U1's hours 00, 01, 02
    assert _rows(store) == hot
    assert _stored_batches(store) == expected
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
    batch of hour 02:00 (one row still), and the readers never see a difference."""
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
    compacted, written, held_back, _ = _compact(store, batch=37)

    assert (compacted, held_back) == (len(old) - len(first), 0)
    assert written > 1  # batches of 37 records: hour 02:00 merged into more than once
    merged = _stored_batches(store)
    assert merged == _expected_batches(old)
    hour = merged[("U1", to_us(_at(2)), "A1")]
    assert hour[0].time_us == to_us(_at(2)) and hour[-1].time_us < to_us(HOT)
    assert store._execute("SELECT COUNT(*) FROM record_batches").fetchone()[0] == 4
    assert _answers(store) == before


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


def test_a_day_partition_comes_with_compaction_and_goes_once_folded(pg_store: SqlStore) -> None:
    """U1 from 22:00 on DAY to 02:00 the next day: two day partitions; folded to 01:00
    the next day, DAY's goes and the next day's stays (an hour of it is not folded);
    folded past it, it goes too; a late record of a folded day makes its day again."""
    store = pg_store
    feed = Feed("A1")
    feed.play("U1", _at(22), 240, M.SERVICE_MODE_NORMAL)
    feed.send(store)
    derive_visits(store, CONFIG.verdicts, _at(30))
    days = [partition_name(to_us(_at(22))), partition_name(to_us(_at(24)))]
    assert days == ["record_batches_20260302", "record_batches_20260303"]
    assert _partitions(store) == []

    compaction = run_retention(store, to_us(_at(27)), WINDOW_US, batch=500)
    assert compaction.compacted == raw_count(store) and compaction.partitions_dropped == 0
    assert _partitions(store) == days

    window = dt.timedelta(days=14)
    raw = raw_count(store)
    first = run_retention(store, to_us(_at(25) + window), WINDOW_US, batch=500)
    assert first.cutoff_us == to_us(_at(25))
    assert first.partitions_dropped == 1 and _partitions(store) == days[1:]
    assert first.deleted == raw - raw_count(store) > 0
    assert store._execute("SELECT MIN(hour_us) FROM record_batches").fetchone()[0] == to_us(_at(25))

    second = run_retention(store, to_us(_at(49) + window), WINDOW_US, batch=500)
    assert second.partitions_dropped == 1 and _partitions(store) == []
    assert raw_count(store) == 0

    # A record of DAY arriving late: compaction makes DAY's partition again, folding
    # empties it and it goes again.
    late = factories.record(feed.seq + 1, "U1", time=_at(23))
    store.write([BatchOp("A1", (late,))], _at(49) + window)
    derive_visits(store, CONFIG.verdicts, _at(49) + window)
    again = run_retention(store, to_us(_at(49) + window), WINDOW_US, batch=500)
    assert (again.compacted, again.deleted, again.partitions_dropped) == (1, 1, 1)
    assert _partitions(store) == []
