from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.store.base import (
    BatchOp,
    ControllerIdentity,
    CoverageChange,
    EventQuery,
    HeartbeatOp,
    HelloOp,
    RegisterEntry,
    StoreError,
    UnitClaim,
    UnitQuery,
)
from fleet.store.chain import group_rows, verify_chain
from fleet.store.open import open_store
from fleet.store.postgres import SCHEMA_VERSION as PG_SCHEMA_VERSION
from fleet.store.postgres import PostgresStore
from fleet.store.sql import SqlStore, rounds
from fleet.store.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteStore
from fleet.units.coverage import Coverage, CoverageConfig, coverage, coverage_of_counts
from protos.liftwatch.v1 import records_pb2
from tests.fleet.factories import T0, record

LATER = T0 + dt.timedelta(minutes=5)


@pytest.fixture
def store(store_target: str) -> Iterator[SqlStore]:
    """A fresh store of each backend."""
    opened = open_store(store_target)
    yield opened
    opened.close()


def _record_count(store: SqlStore) -> int:
    return int(store._execute("SELECT count(*) FROM records").fetchone()[0])


def test_same_batch_twice_is_stored_once(store: SqlStore) -> None:
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
    assert _record_count(store) == 3


def test_replayed_older_link_status_does_not_override_a_newer_one(store: SqlStore) -> None:
    down = record(1, link_up=False, time=T0)
    up = record(2, link_up=True, time=T0 + dt.timedelta(seconds=10))
    store.commit_batch("a1", [up], T0)
    store.commit_batch("a1", [down, up], LATER)  # seq 1 arrives late, seq 2 is a replay
    unit = store.get_unit("U1")
    assert unit is not None
    assert unit.link_up is True
    assert unit.last_seen == LATER  # seq 1 was new, so U1 was heard of at LATER


def test_a_failing_batch_leaves_nothing_behind(store: SqlStore) -> None:
    with pytest.raises(Exception, match=r"(?i)too large|out of range"):  # signed 64-bit
        store.commit_batch("a1", [record(1), record(2**64 - 1)], T0)
    assert store.committed_seq("a1") == 0
    assert store.get_unit("U1") is None


def test_hello_controller_info_and_heartbeats_update_units(store: SqlStore) -> None:
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


def test_controller_info_older_than_the_hello_still_fills_in_the_firmware(store: SqlStore) -> None:
    configured = ControllerIdentity(model="RC-3000", profile="reference")
    store.register_hello("a1", "0.1.0", [UnitClaim("U1", configured)], LATER)
    # Read before the (re)connect, sent after it: the agent's outbox drains on Welcome.
    store.commit_batch("a1", [record(1, firmware="3.2.0", time=T0)], LATER)
    unit = store.get_unit("U1")
    assert unit is not None
    assert (unit.controller.firmware, unit.controller.profile) == ("3.2.0", "reference")


def test_register_upsert_and_unit_filters(store: SqlStore) -> None:
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


def test_events_are_filtered_and_the_newest_returned_oldest_first(store: SqlStore) -> None:
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


def test_one_write_applies_many_agents_ops_in_one_transaction(store: SqlStore) -> None:
    results = store.write(
        [
            HelloOp("a1", "0.1.0", (UnitClaim("U1", ControllerIdentity(model="RC-3000")),)),
            BatchOp("a2", (record(1, "U2"), record(2, "U2"))),
            BatchOp("a1", (record(7, "U1"),)),
            BatchOp("a2", (record(2, "U2"), record(3, "U2"))),  # a reconnect's overlap
            HeartbeatOp("a1"),
        ],
        T0,
    )
    assert [(r.committed_seq, r.inserted) if r else None for r in results] == [
        (7, 0),
        (3, 2),
        (7, 1),
        (3, 1),
        None,
    ]
    assert _record_count(store) == 4
    # A failing op takes its whole group with it: nothing of the others is stored either.
    with pytest.raises(Exception, match=r"(?i)too large|out of range"):
        store.write([BatchOp("a3", (record(1, "U3"),)), BatchOp("a1", (record(2**64 - 1),))], T0)
    assert (store.committed_seq("a3"), store.get_unit("U3")) == (0, None)


def test_coverage_transitions_are_kept_as_history(store: SqlStore) -> None:
    store.upsert_register([RegisterEntry("R1"), RegisterEntry("R2")])
    claims = (UnitClaim("R1", ControllerIdentity()), UnitClaim("R2", ControllerIdentity()))
    store.write([HelloOp("a1", "0.1.0", claims)], T0)
    store.write([BatchOp("a1", (record(1, "R2", link_up=False),))], T0 + dt.timedelta(seconds=1))
    store.write([HeartbeatOp("a1")], T0 + dt.timedelta(seconds=5))  # no change: no history
    assert store.sweep(T0 + dt.timedelta(seconds=20), 30, 300) == []
    at_40 = T0 + dt.timedelta(seconds=40)
    assert store.sweep(at_40, 30, 300) == [
        CoverageChange("R1", at_40, "online", "stale", "sweep"),
        CoverageChange("R2", at_40, "blind", "stale", "sweep"),
    ]
    assert store.sweep(at_40, 30, 300) == []  # swept once
    at_400 = T0 + dt.timedelta(seconds=400)
    store.write([BatchOp("a1", (record(2, "R1"),))], at_400 - dt.timedelta(seconds=1))
    assert [(c.unit_id, c.new_status) for c in store.sweep(at_400, 30, 300)] == [("R2", "offline")]
    assert [(c.old_status, c.new_status, c.cause) for c in store.coverage_history("R2", 10)] == [
        ("never_seen", "online", "hello"),
        ("online", "blind", "record"),
        ("blind", "stale", "sweep"),
        ("stale", "offline", "sweep"),
    ]
    assert [(c.old_status, c.new_status) for c in store.coverage_history("R1", 2)] == [
        ("online", "stale"),
        ("stale", "online"),
    ]
    assert len(store.coverage_history("", 100)) == 7


def test_firmware_and_agent_version_changes_are_kept_as_history(store: SqlStore) -> None:
    store.write(
        [HelloOp("a1", "0.1.0", (UnitClaim("U1", ControllerIdentity(model="RC-3000")),))], T0
    )
    store.write([BatchOp("a1", (record(1, firmware="3.1.2"),))], T0)
    store.write([BatchOp("a1", (record(2, firmware="3.1.2"),))], T0)  # unchanged
    later = T0 + dt.timedelta(days=1)
    store.write([BatchOp("a1", (record(3, firmware="3.2.0", time=later),))], later)
    store.write([HelloOp("a1", "0.2.0", (UnitClaim("U1", ControllerIdentity()),))], later)
    history = store.firmware_history("U1", 10)
    assert [
        (h.old_firmware, h.new_firmware, h.old_agent_version, h.new_agent_version) for h in history
    ] == [
        ("", "", "", "0.1.0"),
        ("", "3.1.2", "0.1.0", "0.1.0"),
        ("3.1.2", "3.2.0", "0.1.0", "0.1.0"),
        ("3.2.0", "3.2.0", "0.1.0", "0.2.0"),
    ]
    assert {(h.agent_id, h.model) for h in history} == {("a1", "RC-3000")}
    assert history[2].at == later
    assert store.firmware_history("nope", 10) == []


def test_reopening_keeps_data_and_readers_see_it(store_target: str) -> None:
    store = open_store(store_target)
    store.commit_batch("a1", [record(7)], T0)
    store.close()
    again = open_store(store_target)  # migrations are not re-run
    again.close()
    reader = open_store(store_target, readonly=True)
    assert reader.committed_seq("a1") == 7
    reader.close()


def test_postgres_schema_is_versioned_and_migrated_once(pg_url: str) -> None:
    stores = [PostgresStore.open(pg_url) for _ in range(2)]
    version = stores[0]._execute("SELECT version FROM schema_version").fetchall()
    assert version == [(PG_SCHEMA_VERSION,)]
    stores[0]._execute("UPDATE schema_version SET version = ?", (PG_SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer software"):
        PostgresStore.open(pg_url)
    for store in stores:
        store.close()


def test_postgres_readonly_sessions_refuse_writes_and_foreign_databases(
    pg_url: str, pg_cluster: object
) -> None:
    with pytest.raises(StoreError, match="is it a fleet database"):
        PostgresStore.open(pg_url, readonly=True)
    PostgresStore.open(pg_url).close()
    reader = PostgresStore.open(pg_url, readonly=True)
    with pytest.raises(Exception, match="read-only"):
        reader.commit_batch("a1", [record(1)], T0)
    reader.close()
    with pytest.raises(StoreError, match="cannot connect") as caught:
        PostgresStore.open(pg_url.replace("/test_", "/absent_").replace("@", ":secret@"))
    assert "secret" not in str(caught.value)


def test_a_version_2_sqlite_database_is_migrated_with_its_units_online(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        for index, migration in enumerate(MIGRATIONS[:2]):
            conn.executescript(f"{migration}; PRAGMA user_version = {index + 1};")
        conn.execute("INSERT INTO units (unit_id, last_seen_us) VALUES ('U1', 1)")
    store = SqliteStore.open(str(db))
    assert [(c.unit_id, c.new_status) for c in store.sweep(T0, 30, 300)] == [("U1", "offline")]
    store.close()


def test_status_counts_match_the_coverage_of_the_listed_units(store: SqlStore) -> None:
    thresholds = CoverageConfig(stale_after_s=30, offline_after_s=300)
    store.upsert_register([RegisterEntry(u) for u in ("R1", "R2", "R3", "R4", "R5")])
    claims = tuple(UnitClaim(u, ControllerIdentity()) for u in ("R1", "R2", "X1"))
    store.write([HelloOp("a1", "0.1.0", claims)], T0)
    store.write([HelloOp("a2", "0.1.0", (UnitClaim("R3", ControllerIdentity()),))], LATER)
    store.write([BatchOp("a1", (record(1, "R2", link_up=False),))], T0)
    # At and around both thresholds of a1's units (seen at T0) and a2's (seen at LATER).
    for offset_s in (0, 29.999999, 30, 31, 299.999999, 300, 301, 600):
        now = T0 + dt.timedelta(seconds=offset_s)
        expected = coverage(store.list_units(UnitQuery()), now, thresholds)
        counted = coverage_of_counts(store.status_counts(now, 30, 300))
        assert counted == expected, offset_s
    assert coverage_of_counts(store.status_counts(T0, 30, 300)) == Coverage(
        registered=5,
        monitored=4,
        online=3,  # R1, X1 (unregistered) and R3 (seen later than T0)
        blind=1,
        never_seen=2,
        unregistered_reporting=1,
    )


def test_a_big_group_is_applied_set_based_like_one_op_after_the_other(store: SqlStore) -> None:
    # More units than one set-based statement binds on SQLite (500), and a unit claimed
    # twice in one group: the second claim wins and both changes are history.
    agents = [f"a{i:03d}" for i in range(150)]
    hellos = [
        HelloOp(a, "0.1.0", tuple(UnitClaim(f"{a}-{c}", ControllerIdentity()) for c in range(4)))
        for a in agents
    ]
    moved = UnitClaim("a000-0", ControllerIdentity(model="RC-3000", firmware="3.2.0"))
    store.write([*hellos, HelloOp("b1", "0.2.0", (moved,))], T0)
    batches = [
        BatchOp(a, tuple(record(1 + c, f"{a}-{c}", link_up=c != 3) for c in range(4)))
        for a in agents
    ]
    results = store.write([*batches, HeartbeatOp("b1")], LATER)
    assert [r.committed_seq if r else None for r in results] == [4] * 150 + [None]
    units = {u.unit_id: u for u in store.list_units(UnitQuery())}
    assert len(units) == 600
    assert {u.last_seen for u in units.values()} == {LATER}
    assert sum(u.link_up is False for u in units.values()) == 150
    first = units["a000-0"]
    assert (first.agent_id, first.controller.firmware) == ("a000", "3.2.0")  # seen via a000
    assert [(h.old_firmware, h.new_firmware) for h in store.firmware_history("a000-0", 10)] == [
        ("", ""),
        ("", "3.2.0"),
    ]
    blind = [c for c in store.coverage_history("", 1000) if c.new_status == "blind"]
    assert sorted(c.unit_id for c in blind) == sorted(f"{a}-3" for a in agents)
    rows, heads = store.history()
    assert len(heads) == 600
    by_unit = group_rows(rows)
    assert all(not verify_chain(h.unit_id, by_unit[h.unit_id], h) for h in heads)
    assert [r.kind for r in by_unit["a000-0"]] == ["coverage", "firmware", "firmware"]


def test_rounds_keep_each_key_once_per_round_in_order() -> None:
    rows = [("u1", 1), ("u2", 2), ("u1", 3), ("u3", 4), ("u1", 5), ("u2", 6)]
    assert rounds(rows, 0) == [
        [("u1", 1), ("u2", 2), ("u3", 4)],
        [("u1", 3), ("u2", 6)],
        [("u1", 5)],
    ]
