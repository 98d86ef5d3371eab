"""The outbox keeps records across restarts, numbers them once, and deletes only on ack."""

from __future__ import annotations

from pathlib import Path

from agent.outbox import Outbox
from protos.liftwatch.v1 import records_pb2


def event(unit: str) -> records_pb2.Record:
    record = records_pb2.Record(unit_id=unit)
    record.event.reason = "test"
    return record


def test_append_numbers_records_and_they_survive_reopening(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db")
    assert box.append([event("a"), event("b")]) == [1, 2]
    box.close()
    box = Outbox(tmp_path / "outbox.db")
    pending = box.pending(0, 10)
    assert [p.seq for p in pending] == [1, 2]
    assert [records_pb2.Record.FromString(p.payload).unit_id for p in pending] == ["a", "b"]
    assert box.append([event("c")]) == [3]


def test_ack_deletes_up_to_seq_and_seqs_are_never_reused(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db")
    box.append([event("a") for _ in range(5)])
    assert box.ack(3) == 3
    assert [p.seq for p in box.pending(0, 10)] == [4, 5]
    box.ack(5)
    assert box.depth() == 0
    box.close()
    box = Outbox(tmp_path / "outbox.db")
    assert box.append([event("a")]) == [6]


def test_pending_pages_after_a_seq(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db")
    box.append([event("a") for _ in range(10)])
    assert [p.seq for p in box.pending(4, 3)] == [5, 6, 7]


def test_a_new_outbox_numbers_past_what_the_fleet_already_committed(tmp_path: Path) -> None:
    # A replaced SD card starts empty; the fleet's Welcome says it holds seq 41 already.
    box = Outbox(tmp_path / "fresh.db")
    box.ensure_seq_above(41)
    assert box.append([event("a")]) == [42]
    box.ensure_seq_above(10)  # never moves backwards
    assert box.append([event("a")]) == [43]
