from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from fleet.store.base import (
    ControllerIdentity,
    EventQuery,
    RegisterEntry,
    StoreError,
    UnitClaim,
    UnitQuery,
)
from fleet.store.sqlite import SCHEMA_VERSION, SqliteStore
from protos.liftwatch.v1 import records_pb2
from tests.fleet.factories import T0, record

LATER = T0 + dt.timedelta(minutes=5)


def _record_count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM records").fetchone()[0])


def test_same_batch_twice_is_stored_once(tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"
    store = SqliteStore.open(str(db))
    batch = [
        record(1, firmware="3.1.4"),
        record(2, event=records_pb2.EVENT_TYPE_ENTRAPMENT),
        record(5, "U2"),
    ]
    first = store.commit_batch("a1", batch, T0)
    again = store.commit_batch("a1", batch, LATER)
    assert (first.committed_seq, first.inserted) == (5, 3)
    assert (again.committed_seq, again.inserted) == (5, 0)
    assert store.committed_seq("a1") == 5
    assert store.committed_seq("other") == 0
    (event,) = store.list_events(EventQuery())
    assert event.committed == T0  # the first commit's time; the replay did not move it
    # The replay changed nothing: the units keep the receive time of the first commit.
    unit = store.get_unit("U1")
    assert unit is not None
    assert unit.last_seen == T0
    store.close()
    assert _record_count(db) == 3


def test_replayed_older_link_status_does_not_override_a_newer_one() -> None:
    store = SqliteStore.open(":memory:")
    down = record(1, link_up=False, time=T0)
    up = record(2, link_up=True, time=T0 + dt.timedelta(seconds=10))
    store.commit_batch("a1", [up], T0)
    store.commit_batch("a1", [down, up], LATER)  # seq 1 arrives late, seq 2 is a replay
    unit = store.get_unit("U1")
    assert unit is not None
    assert unit.link_up is True
    assert unit.last_seen == LATER  # seq 1 was new, so U1 was heard of at LATER


def test_a_failing_batch_leaves_nothing_behind() -> None:
    store = SqliteStore.open(":memory:")
    with pytest.raises(OverflowError):  # SQLite integers are signed 64-bit
        store.commit_batch("a1", [record(1), record(2**64 - 1)], T0)
    assert store.committed_seq("a1") == 0
    assert store.get_unit("U1") is None


def test_hello_controller_info_and_heartbeats_update_units() -> None:
    store = SqliteStore.open(":memory:")
    claims = [UnitClaim("U1", ControllerIdentity("Acme", "RC-3000", "3.1.2", "S1", "reference"))]
    store.register_hello("a1", "0.1.0", claims, T0)
    store.register_hello("a1", "0.2.0", [UnitClaim("U1", ControllerIdentity())], T0)
    unit = store.get_unit("U1")
    assert unit is not None
    # An empty identity (agent has not read the controller yet) keeps what is known.
    assert unit.controller == ControllerIdentity("Acme", "RC-3000", "3.1.2", "S1", "reference")
    assert (unit.agent_id, unit.agent_version, unit.registered) == ("a1", "0.2.0", False)

    store.commit_batch("a1", [record(1, firmware="3.2.0")], T0)
    store.touch_agent("a1", LATER)
    unit = store.get_unit("U1")
    assert unit is not None
    assert unit.controller.firmware == "3.2.0"
    assert unit.last_seen == LATER
    # Records read from the controller outrank a later Hello's configured identity.
    store.register_hello("a1", "0.2.0", claims, LATER)
    unit = store.get_unit("U1")
    assert unit is not None
    assert unit.controller.firmware == "3.2.0"
    # A late ControllerInfo from before the update must not roll the firmware back.
    store.commit_batch("a1", [record(2, firmware="3.0.0", time=T0 - dt.timedelta(hours=1))], T0)
    unit = store.get_unit("U1")
    assert unit is not None
    assert unit.controller.firmware == "3.2.0"
    assert [u.unit_id for u in store.list_units(UnitQuery(firmware="3.2.0"))] == ["U1"]
    assert store.list_units(UnitQuery(firmware="3.1.2")) == []


def test_controller_info_older_than_the_hello_still_fills_in_the_firmware() -> None:
    store = SqliteStore.open(":memory:")
    configured = ControllerIdentity(model="RC-3000", profile="reference")
    store.register_hello("a1", "0.1.0", [UnitClaim("U1", configured)], LATER)
    # Read before the (re)connect, sent after it: the agent's outbox drains on Welcome.
    store.commit_batch("a1", [record(1, firmware="3.2.0", time=T0)], LATER)
    unit = store.get_unit("U1")
    assert unit is not None
    assert (unit.controller.firmware, unit.controller.profile) == ("3.2.0", "reference")


def test_register_upsert_and_unit_filters() -> None:
    store = SqliteStore.open(":memory:")
    entries = [
        RegisterEntry("R1", building="B1", street="S1", contractor="C1", controller_model="VX-220"),
        RegisterEntry("R2", building="B2", street="S2", contractor="C1"),
    ]
    assert store.upsert_register(entries) == 2
    store.upsert_register([RegisterEntry("R2", building="B2-new", street="S1")])
    store.commit_batch("a1", [record(1, "R1")], T0)
    assert [u.unit_id for u in store.list_units(UnitQuery(street="S1"))] == ["R1", "R2"]
    assert [u.unit_id for u in store.list_units(UnitQuery(contractor="C1"))] == ["R1"]
    assert [u.unit_id for u in store.list_units(UnitQuery(reported_only=True))] == ["R1"]
    assert [u.unit_id for u in store.list_units(UnitQuery(model="VX-220"))] == ["R1"]
    r2 = store.get_unit("R2")
    assert r2 is not None
    assert (r2.registered, r2.register.building, r2.last_seen) == (True, "B2-new", None)


def test_events_are_filtered_and_the_newest_returned_oldest_first() -> None:
    store = SqliteStore.open(":memory:")
    entrapment = records_pb2.EVENT_TYPE_ENTRAPMENT
    door = records_pb2.EVENT_TYPE_DOOR_HELD_OPEN
    store.commit_batch(
        "a1",
        [
            record(1, time=T0 + dt.timedelta(seconds=3), event=entrapment),
            record(2, time=T0 + dt.timedelta(seconds=1), event=door),
            record(3, "U2", time=T0 + dt.timedelta(seconds=2), event=entrapment),
            record(
                4,
                time=T0 + dt.timedelta(seconds=4),
                event=entrapment,
                phase=records_pb2.PHASE_CLEARED,
            ),
        ],
        T0,
    )
    assert [e.seq for e in store.list_events(EventQuery())] == [2, 3, 1, 4]
    assert [e.seq for e in store.list_events(EventQuery(limit=2))] == [1, 4]
    assert [e.seq for e in store.list_events(EventQuery(unit_id="U1", type=entrapment))] == [1, 4]
    event = store.list_events(EventQuery(unit_id="U2"))[0]
    assert (event.floor, event.reason, event.onset) == (3, "test", T0 - dt.timedelta(seconds=28))


def test_schema_is_versioned_and_reopened_without_loss(tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"
    store = SqliteStore.open(str(db))
    store.commit_batch("a1", [record(7)], T0)
    store.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reader = SqliteStore.open(str(db), readonly=True)
    assert reader.committed_seq("a1") == 7
    reader.close()


def test_unusable_databases_raise_store_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such file"):
        SqliteStore.open(str(tmp_path / "absent.db"), readonly=True)
    with pytest.raises(StoreError, match="does not exist"):
        SqliteStore.open(str(tmp_path / "no" / "dir.db"))
    junk = tmp_path / "junk.db"
    junk.write_text("not a database, just text " * 100)
    with pytest.raises(StoreError, match="not a database"):
        SqliteStore.open(str(junk), readonly=True)
    future = tmp_path / "future.db"
    with sqlite3.connect(future) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer software"):
        SqliteStore.open(str(future))
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with pytest.raises(StoreError, match="is it a fleet database"):
        SqliteStore.open(str(empty), readonly=True)
