"""The outbox keeps records across restarts, numbers them once, deletes only on ack,
stays within its size by thinning samples (never events), and survives a corrupt file."""

from __future__ import annotations

from pathlib import Path

from agent.outbox import DEFAULT_MAX_BYTES, Outbox
from protos.liftwatch.v1 import records_pb2


def event(unit: str) -> records_pb2.Record:
    record = records_pb2.Record(unit_id=unit)
    record.event.reason = "test"
    return record


def sample(unit: str, floor: int = 1) -> records_pb2.Record:
    record = records_pb2.Record(unit_id=unit)
    record.car_state.floor = floor
    record.car_state.position_mm = floor * 3000
    return record


def outbox(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> Outbox:
    # A wall clock at the epoch makes a fresh outbox number from 1.
    return Outbox(path, max_bytes=max_bytes, wall=lambda: 0.0)


def test_append_numbers_records_and_they_survive_reopening(tmp_path: Path) -> None:
    box = outbox(tmp_path / "outbox.db")
    assert box.append([event("a"), event("b")]) == [1, 2]
    box.close()
    box = Outbox(tmp_path / "outbox.db", wall=lambda: 1e9)  # reopening keeps the numbering
    pending = box.pending(0, 10)
    assert [p.seq for p in pending] == [1, 2]
    assert [records_pb2.Record.FromString(p.payload).unit_id for p in pending] == ["a", "b"]
    assert box.append([event("c")]) == [3]


def test_a_fresh_file_numbers_from_the_clock_in_microseconds(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", wall=lambda: 1_700_000_000.0)
    assert box.append([event("a")]) == [1_700_000_000_000_001]


def test_ack_deletes_up_to_seq_and_seqs_are_never_reused(tmp_path: Path) -> None:
    box = outbox(tmp_path / "outbox.db")
    box.append([event("a") for _ in range(5)])
    assert box.ack(3) == 3
    assert [p.seq for p in box.pending(0, 10)] == [4, 5]
    box.ack(5)
    assert box.depth() == 0
    box.close()
    box = outbox(tmp_path / "outbox.db")
    assert box.append([event("a")]) == [6]


def test_pending_pages_by_count_and_by_bytes(tmp_path: Path) -> None:
    box = outbox(tmp_path / "outbox.db")
    box.append([event("a") for _ in range(10)])
    assert [p.seq for p in box.pending(4, 3)] == [5, 6, 7]
    one = len(box.pending(0, 1)[0].payload)
    assert [p.seq for p in box.pending(0, 10, max_bytes=3 * one)] == [1, 2, 3]
    assert len(box.pending(0, 10, max_bytes=1)) == 1  # never an empty batch


def test_a_new_outbox_numbers_past_what_the_fleet_already_committed(tmp_path: Path) -> None:
    box = outbox(tmp_path / "fresh.db")
    box.ensure_seq_above(41)
    assert box.append([event("a")]) == [42]
    box.ensure_seq_above(10)  # never moves backwards
    assert box.append([event("a")]) == [43]


def test_when_full_samples_are_thinned_oldest_first_and_events_kept(tmp_path: Path) -> None:
    box = outbox(tmp_path / "outbox.db", max_bytes=10**9)
    events = box.append([event("a") for _ in range(50)])
    for chunk in range(50):
        box.append([sample("a", floor) for floor in range(chunk * 100, chunk * 100 + 100)])
    full = box.used_bytes()
    box.max_bytes = full * 3 // 4
    box.append([sample("a", 99_999)])
    assert box.used_bytes() <= box.max_bytes
    assert box.thinned > 0
    kept = [records_pb2.Record.FromString(p.payload) for p in box.pending(0, 10_000)]
    kept_events = [r.seq for r in kept if r.WhichOneof("payload") == "event"]
    assert kept_events == events  # every event survives
    floors = [r.car_state.floor for r in kept if r.WhichOneof("payload") == "car_state"]
    assert floors[-1] == 99_999  # the newest sample is kept
    assert floors == sorted(floors)
    # Oldest first: the newest block of samples is untouched, the oldest is thinned.
    assert set(range(4000, 5000)) <= set(floors)
    assert not set(range(0, 100)) <= set(floors)


def test_a_corrupt_file_is_moved_aside_never_deleted(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    path.write_bytes(b"this is not a database, it is what a torn SD card write left" * 100)
    box = Outbox(path, wall=lambda: 1_700_000_000.0)
    assert box.moved_aside is not None
    assert box.moved_aside.read_bytes().startswith(b"this is not a database")
    assert box.append([event("a")]) == [1_700_000_000_000_001]
    assert box.depth() == 1
