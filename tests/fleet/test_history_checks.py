"""The history covers what the reports read, and a signed checkpoint anchors it outside the
database: each tampering is done directly in the database (both backends), the way someone
with the database's password would, and `verify-history` must name it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from fleet.cli.main import main
from fleet.history.checkpoint import (
    CheckpointError,
    SignatureError,
    generate_key,
    load_private_key,
    load_public_key,
    read_checkpoint,
    write_checkpoint,
)
from fleet.history.verify import checkpoint_round, verify_store
from fleet.store import postgres as postgres_store
from fleet.store import sqlite as sqlite_store
from fleet.store.base import (
    AlarmActionError,
    ControllerIdentity,
    DispatchPlan,
    RegisterEntry,
    UnitClaim,
)
from fleet.store.chain import ALARM_STEP_COLUMNS, canonical, detail_entry_hash
from fleet.store.crew import CREW_MIGRATION
from fleet.store.lifecycle import _ACTIONS, _DISPATCH
from fleet.store.open import open_store
from fleet.store.sql import SqlStore
from fleet.store.sqlite import SqliteStore
from fleet.store.worker import StoreWorker
from protos.liftwatch.v1 import records_pb2
from tests.fleet.factories import T0, record

ENTRAPMENT = records_pb2.EVENT_TYPE_ENTRAPMENT
DOOR = records_pb2.EVENT_TYPE_DOOR_CLOSE_FAILURE
PLAN = DispatchPlan(("hook",), (), escalate_after_s=600, lease_s=10)


@pytest.fixture
def store(store_target: str) -> Iterator[SqlStore]:
    """U1 and U2 registered and watched by a1; U1 had an entrapment (alarm acknowledged,
    event cleared, alarm resolved), U2 a door fault; U3 only a firmware change."""
    opened = open_store(store_target)
    opened.upsert_register(
        [RegisterEntry(u, building="B1", street="S1", contractor="C1") for u in ("U1", "U2")],
        T0,
    )
    claims = [UnitClaim(u, ControllerIdentity(model="RC-3000")) for u in ("U1", "U2", "U3")]
    opened.register_hello("a1", "0.1.0", claims, T0)
    later = T0 + dt.timedelta(seconds=40)
    opened.commit_batch(
        "a1",
        [
            record(1, "U1", firmware="3.1.4"),
            record(2, "U1", time=later, event=ENTRAPMENT, event_id="trap"),
            record(3, "U2", time=later, event=DOOR, event_id="door"),
            record(4, "U3", firmware="3.1.5"),
        ],
        later,
    )
    (alarm,) = opened.alarms()
    (send,) = opened.claim_deliveries(PLAN, later)
    opened.delivery_done(send, "", later, None)
    opened.alarm_action(alarm.alarm_id, "ack", "dispatcher Li", later + dt.timedelta(seconds=30))
    cleared = later + dt.timedelta(minutes=4)
    opened.commit_batch(
        "a1",
        [
            record(
                5,
                "U1",
                time=cleared,
                event=ENTRAPMENT,
                phase=records_pb2.PHASE_CLEARED,
                event_id="trap",
            )
        ],
        cleared,
    )
    opened.alarm_action(alarm.alarm_id, "resolve", "rescuer Wang", cleared)
    yield opened
    opened.close()


@pytest.fixture
def key(tmp_path: Path) -> Path:
    """A fresh checkpoint key pair: the private key's path (its public key beside it)."""
    path = tmp_path / "checkpoint.key"
    generate_key(path)
    return path


def _found(
    store: SqlStore, checkpoint_file: Path | None = None, key: Path | None = None
) -> list[tuple[str, str, str]]:
    checkpoint = None
    if checkpoint_file is not None:
        assert key is not None
        checkpoint = read_checkpoint(checkpoint_file, load_public_key(key))
    return [(p.unit_id, p.table, p.what) for p in verify_store(store, "", checkpoint).problems]


def _checkpoint(store: SqlStore, path: Path, key: Path) -> None:
    write_checkpoint(path, store.history_heads(), T0 + dt.timedelta(hours=1), load_private_key(key))


def _rewind(store: SqlStore, unit_id: str, keep: int) -> None:
    """Delete the unit's entries past ``keep`` and point its head at entry ``keep``."""
    rows, _ = store.history(unit_id)
    store._execute("DELETE FROM unit_history WHERE unit_id = ? AND seq > ?", (unit_id, keep))
    store._execute(
        "UPDATE unit_history_head SET seq = ?, hash = ? WHERE unit_id = ?",
        (keep, rows[keep - 1].hash, unit_id),
    )


# -- the events and alarms tables against the chains -----------------------------------------


def test_a_valid_history_with_a_fresh_checkpoint_verifies_clean(
    store: SqlStore, tmp_path: Path, key: Path
) -> None:
    _checkpoint(store, tmp_path / "cp.json", key)
    assert _found(store, tmp_path / "cp.json", key) == []
    events, alarms = store.chained_rows()
    assert len(events) == 3 and len(alarms) == 1  # the cross-check had something to check


def test_a_deleted_event_row_is_named(store: SqlStore) -> None:
    store._execute("DELETE FROM events WHERE unit_id = 'U2'")
    (problem,) = verify_store(store).problems
    assert (problem.unit_id, problem.table, problem.what) == ("U2", "events", "deleted")
    assert "a1#3" in problem.reason and "DOOR_CLOSE_FAILURE" in problem.reason


def test_an_inserted_or_edited_event_row_is_named(store: SqlStore) -> None:
    store._execute(
        "INSERT INTO events (agent_id, seq, unit_id, time_us, event_id, type, phase, onset_us, "
        "floor, reason, committed_us) VALUES ('a1', 99, 'U2', 1, 'forged', ?, 1, NULL, 1, '', 1)",
        (DOOR,),
    )
    # A fault moved to another floor and its onset a minute later (the rescue looks faster).
    store._execute(
        "UPDATE events SET floor = 7, onset_us = onset_us + 60000000 WHERE unit_id = 'U1' "
        "AND phase = ?",
        (records_pb2.PHASE_RAISED,),
    )
    problems = verify_store(store).problems
    assert [(p.unit_id, p.table, p.what) for p in problems] == [
        ("U1", "events", "edited"),
        ("U2", "events", "inserted"),
    ]
    assert problems[0].reason.endswith("in floor, onset")


def test_an_edited_or_deleted_alarm_row_is_named(store: SqlStore) -> None:
    # Acknowledged a minute earlier than the dispatcher did: a better scorecard.
    store._execute("UPDATE alarms SET acknowledged_us = acknowledged_us - 60000000")
    (problem,) = verify_store(store).problems
    assert (problem.unit_id, problem.table, problem.what) == ("U1", "alarms", "edited")
    assert "acknowledged_us" in problem.reason
    store._execute("DELETE FROM alarms")
    assert _found(store) == [("U1", "alarms", "deleted")]


def test_an_alarm_state_or_close_reason_edit_is_named(store: SqlStore) -> None:
    store._execute("UPDATE alarms SET state = 'false_alarm', close_reason = 'nobody inside'")
    (problem,) = verify_store(store).problems
    assert problem.table == "alarms" and "state false_alarm" in problem.reason
    assert "close_reason" in problem.reason


def test_the_alarm_step_columns_match_the_actions_that_stamp_them() -> None:
    # The cross-check knows which column each chained step stamps; the store's actions
    # must stamp the same ones.
    for _allowed, state, at_column, by_column in (*_ACTIONS.values(), _DISPATCH):
        assert ALARM_STEP_COLUMNS[state] == (at_column, by_column)


def _dispatched(store: SqlStore) -> int:
    """A second entrapment on U1, acknowledged, then a crew sent to it: its alarm id."""
    at = T0 + dt.timedelta(hours=1)
    store.commit_batch("a1", [record(6, "U1", time=at, event=ENTRAPMENT, event_id="trap2")], at)
    alarm = next(a for a in store.alarms() if a.event_id == "trap2")
    store.alarm_action(alarm.alarm_id, "ack", "dispatcher Li", at)
    sent = store.alarm_action(
        alarm.alarm_id,
        "dispatch",
        "dispatcher Li",
        at,
        reason="via the north gate",
        crew="张三 (rescue team 2)",
        eta=at + dt.timedelta(minutes=12),
    )
    assert (sent.state, sent.crew, sent.crew_dispatched_by) == (
        "acknowledged",
        "张三 (rescue team 2)",
        "dispatcher Li",
    )
    assert sent.crew_eta == at + dt.timedelta(minutes=12) and sent.crew_dispatched == at
    return alarm.alarm_id


def test_a_crew_dispatched_step_is_chained_and_its_edits_are_named(store: SqlStore) -> None:
    alarm_id = _dispatched(store)
    rows, _ = store.history("U1")
    step = json.loads(rows[-1].detail)
    assert step == {
        "alarm_id": alarm_id,
        "step": "crew_dispatched",
        "by": "dispatcher Li",
        "crew": "张三 (rescue team 2)",
        "eta": "2026-03-01T09:12:00Z",  # T0 + 1 h + 12 min, as the history writes times
        "reason": "via the north gate",
    }
    assert _found(store) == []
    store._execute("UPDATE alarms SET crew = 'someone else' WHERE alarm_id = ?", (alarm_id,))
    (problem,) = verify_store(store).problems
    assert problem.table == "alarms" and "crew (history: 张三 (rescue team 2))" in problem.reason
    store._execute(
        "UPDATE alarms SET crew = ?, crew_eta_us = crew_eta_us + 60000000 WHERE alarm_id = ?",
        ("张三 (rescue team 2)", alarm_id),
    )
    (problem,) = verify_store(store).problems
    assert "crew_eta_us (history: " in problem.reason


def test_dispatch_needs_an_acknowledged_alarm_a_crew_and_an_eta(store: SqlStore) -> None:
    at = T0 + dt.timedelta(hours=1)
    store.commit_batch("a1", [record(6, "U1", time=at, event=ENTRAPMENT, event_id="trap2")], at)
    alarm = next(a for a in store.alarms() if a.event_id == "trap2")
    eta = at + dt.timedelta(minutes=5)
    with pytest.raises(AlarmActionError, match="is raised; dispatch needs it acknowledged"):
        store.alarm_action(alarm.alarm_id, "dispatch", "Li", at, crew="Zhang", eta=eta)
    store.alarm_action(alarm.alarm_id, "ack", "Li", at)
    with pytest.raises(AlarmActionError, match="needs who was sent"):
        store.alarm_action(alarm.alarm_id, "dispatch", "Li", at, crew="  ", eta=eta)
    with pytest.raises(AlarmActionError, match="longer than 80"):
        store.alarm_action(alarm.alarm_id, "dispatch", "Li", at, crew="x" * 81, eta=eta)
    with pytest.raises(AlarmActionError, match="needs an ETA"):
        store.alarm_action(alarm.alarm_id, "dispatch", "Li", at, crew="Zhang")
    with pytest.raises(AlarmActionError, match="only dispatch says who"):
        store.alarm_action(alarm.alarm_id, "on_site", "Li", at, crew="Zhang")
    assert store.history("U1")[0][-1].kind == "alarm"  # nothing chained by the refusals
    assert json.loads(store.history("U1")[0][-1].detail)["step"] == "acknowledged"


def test_a_chain_written_before_migration_crew_still_verifies(
    store_target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fixture's history was written as a fleet before this change writes it (no crew
    # step). Take the database back to the schema before migration "crew", reopen (which
    # migrates it), and verify: then a crew step on top verifies too.
    opened = open_store(store_target)
    try:
        migrations = _before_crew(opened)
    finally:
        opened.close()
    with monkeypatch.context() as patch:
        _later_migrations_applied(patch, migrations)
        store = open_store(store_target)
    try:
        assert "crew" in _alarm_columns(store)
        assert _found(store) == []
        alarm_id = _dispatched(store)
        assert _found(store) == []
        assert next(a for a in store.alarms() if a.alarm_id == alarm_id).crew
    finally:
        store.close()


def _alarm_columns(store: SqlStore) -> set[str]:
    return {str(c[0]) for c in store._execute("SELECT * FROM alarms LIMIT 0").description}


def _before_crew(store: SqlStore) -> ModuleType:
    """``store`` as a fleet before migration "crew" left it: the fixture's history, no crew
    columns, the schema version the one before "crew" (wherever "crew" stands among the
    migrations); the store's module of migrations."""
    later = T0 + dt.timedelta(seconds=40)
    store.upsert_register([RegisterEntry("U1", building="B1", street="S1", contractor="C1")], T0)
    store.register_hello("a1", "0.1.0", [UnitClaim("U1", ControllerIdentity(model="RC-3000"))], T0)
    store.commit_batch(
        "a1", [record(2, "U1", time=later, event=ENTRAPMENT, event_id="trap")], later
    )
    (alarm,) = store.alarms()
    store.alarm_action(alarm.alarm_id, "ack", "dispatcher Li", later)
    for column in ("crew_dispatched_us", "crew_dispatched_by", "crew", "crew_eta_us"):
        store._execute(f"ALTER TABLE alarms DROP COLUMN {column}")
    assert "crew" not in _alarm_columns(store)
    module = sqlite_store if isinstance(store, SqliteStore) else postgres_store
    crew = module.MIGRATIONS.index(CREW_MIGRATION)
    if isinstance(store, SqliteStore):
        store._execute(f"PRAGMA user_version = {crew}")
    else:
        store._execute("UPDATE schema_version SET version = ?", (crew,))
    return module


def _later_migrations_applied(patch: pytest.MonkeyPatch, module: ModuleType) -> None:
    """Reopening migrates from "crew" on; the migrations appended after it were applied
    to this database already (it was made by this fleet, then only "crew" undone), so
    for this reopen they run as nothing, and the schema version ends where it was."""
    crew = module.MIGRATIONS.index(CREW_MIGRATION)
    later = len(module.MIGRATIONS) - crew - 1
    patch.setattr(module, "MIGRATIONS", (*module.MIGRATIONS[: crew + 1], *["SELECT 1"] * later))


# -- a truncated, rewound, deleted or rewritten chain -----------------------------------------


def test_last_rows_deleted_and_head_rewound_are_found(
    store: SqlStore, tmp_path: Path, key: Path
) -> None:
    _checkpoint(store, tmp_path / "cp.json", key)
    rows, _ = store.history("U1")
    _rewind(store, "U1", len(rows) - 3)
    found = _found(store, tmp_path / "cp.json", key)
    assert ("U1", "checkpoint", "deleted") in found
    # The chain alone is consistent; what the deleted entries recorded still stands in the
    # tables (the CLEARED event, the resolution), and those rows now lack their entries.
    assert ("U1", "unit_history", "deleted") not in found
    assert ("U1", "events", "inserted") in found


def test_a_whole_chain_deleted_is_found_by_the_checkpoint(
    store: SqlStore, tmp_path: Path, key: Path
) -> None:
    _checkpoint(store, tmp_path / "cp.json", key)
    # U3 has only firmware and coverage entries: nothing in the tables points at it.
    store._execute("DELETE FROM unit_history WHERE unit_id = 'U3'")
    store._execute("DELETE FROM unit_history_head WHERE unit_id = 'U3'")
    assert _found(store) == []  # invisible without the anchor outside the database
    (problem,) = verify_store(
        store, "", read_checkpoint(tmp_path / "cp.json", load_public_key(key))
    ).problems
    assert (problem.unit_id, problem.table, problem.what) == ("U3", "checkpoint", "deleted")
    assert "whole chain is gone" in problem.reason


def test_a_tail_rewritten_with_recomputed_hashes_is_found_by_the_checkpoint(
    store: SqlStore, tmp_path: Path, key: Path
) -> None:
    _checkpoint(store, tmp_path / "cp.json", key)
    rows, _ = store.history("U3")
    prev = rows[0].prev_hash
    for row in rows:  # every entry rewritten (a firmware version changed), hashes recomputed
        detail = json.loads(row.detail)
        if "new_firmware" in detail:
            detail["new_firmware"] = "3.1.4"
        text = canonical(detail)
        digest = detail_entry_hash("U3", row.seq, row.at_us, row.kind, text, prev)
        store._execute(
            "UPDATE unit_history SET detail = ?, prev_hash = ?, hash = ? WHERE id = ?",
            (text, prev, digest, row.row_id),
        )
        prev = digest
    store._execute("UPDATE unit_history_head SET hash = ? WHERE unit_id = 'U3'", (prev,))
    assert _found(store) == []  # a consistent forgery inside the database
    found = verify_store(store, "", read_checkpoint(tmp_path / "cp.json", load_public_key(key)))
    (problem,) = found.problems
    assert (problem.unit_id, problem.table, problem.what) == ("U3", "checkpoint", "edited")
    assert "diverges" in problem.reason


def test_entries_after_the_checkpoint_are_fine(store: SqlStore, tmp_path: Path, key: Path) -> None:
    _checkpoint(store, tmp_path / "cp.json", key)
    store.commit_batch("a1", [record(6, "U2", event=DOOR, event_id="door2")], T0)
    assert _found(store, tmp_path / "cp.json", key) == []


# -- the checkpoint file and its key ----------------------------------------------------------


def test_a_tampered_checkpoint_fails_its_signature(
    store: SqlStore, tmp_path: Path, key: Path
) -> None:
    path = tmp_path / "cp.json"
    _checkpoint(store, path, key)
    body = json.loads(path.read_text())
    seq, digest = body["heads"]["U1"].split(":")
    body["heads"]["U1"] = f"{int(seq) - 2}:{digest}"  # a rewound head, "blessed"
    path.write_text(json.dumps(body))
    with pytest.raises(SignatureError, match="does not verify"):
        read_checkpoint(path, load_public_key(key))
    other = tmp_path / "other.key"
    generate_key(other)
    _checkpoint(store, path, key)
    with pytest.raises(SignatureError, match="not by the key given"):
        read_checkpoint(path, load_public_key(other.with_name("other.key.pub")))
    path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not a JSON checkpoint"):
        read_checkpoint(path, load_public_key(key))


def test_keys_are_not_overwritten_and_the_private_key_is_private(key: Path) -> None:
    assert key.stat().st_mode & 0o077 == 0
    with pytest.raises(CheckpointError, match="refusing to overwrite"):
        generate_key(key)
    assert load_public_key(key) is not None  # a private key file verifies too
    key.with_name("bad.pem").write_text("nonsense")
    with pytest.raises(CheckpointError, match=r"bad\.pem"):
        load_private_key(key.with_name("bad.pem"))


# -- the commands and serve's schedule --------------------------------------------------------


def test_cli_checkpoint_and_verify(
    tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "fleet.db")
    store = open_store(db)
    store.commit_batch("a1", [record(1, "U1", event=DOOR, event_id="d")], T0)
    store.close()
    cp = tmp_path / "cp.json"
    assert main(["history", "checkpoint", str(cp), "--key", str(key), "--db", db]) == 0
    public = str(key) + ".pub"
    assert main(["verify-history", "--db", db, "--checkpoint", str(cp), "--key", public]) == 0
    assert "every head of the checkpoint" in capsys.readouterr().out
    store = open_store(db)
    last = store.last_history_check()
    assert last is not None and last.intact and (last.source, last.units) == ("cli", 1)
    _rewind(store, "U1", 1)
    store.close()
    assert (
        main(["verify-history", "--json", "--db", db, "--checkpoint", str(cp), "--key", public])
        == 1
    )
    shown = json.loads(capsys.readouterr().out)
    assert not shown["intact"] and shown["checkpoint"]["units"] == 1
    assert {(p["unit_id"], p["table"]) for p in shown["problems"]} >= {("U1", "checkpoint")}
    store = open_store(db, readonly=True)
    last = store.last_history_check()
    store.close()
    assert last is not None and not last.intact and "shorter than the checkpoint" in last.summary
    cp.write_text(cp.read_text().replace('"U1"', '"U9"'))
    assert main(["verify-history", "--db", db, "--checkpoint", str(cp), "--key", public]) == 1
    assert "signature does not verify" in capsys.readouterr().out
    assert main(["verify-history", "--db", db, "--checkpoint", str(cp)]) == 2
    assert "needs --key" in capsys.readouterr().err


def test_serve_schedule_checks_then_rewrites_and_keeps_a_failed_file(
    tmp_path: Path, key: Path
) -> None:
    import asyncio

    db = str(tmp_path / "fleet.db")
    path = tmp_path / "cp.json"
    signing = load_private_key(key)
    moments = iter(T0 + dt.timedelta(hours=h) for h in range(10))

    async def scenario() -> None:
        worker = await StoreWorker.open(lambda: open_store(db))
        try:
            await worker.call(lambda s: s.commit_batch("a1", [record(1, "U1", event=DOOR)], T0))
            assert await checkpoint_round(worker, lambda: next(moments), path, signing) is None
            first = path.read_bytes()
            await worker.call(lambda s: s.commit_batch("a1", [record(2, "U1")], T0))
            check = await checkpoint_round(worker, lambda: next(moments), path, signing)
            assert check is not None and check.intact and check.units == 1
            assert path.read_bytes() != first  # the newer heads
            kept = path.read_bytes()
            await worker.call(lambda s: _rewind(s, "U1", 1))  # type: ignore[arg-type]
            check = await checkpoint_round(worker, lambda: next(moments), path, signing)
            assert check is not None and not check.intact
            assert path.read_bytes() == kept  # the evidence stays
            last = await worker.call(lambda s: s.last_history_check())
            assert last is not None and dataclasses.replace(last, checked=check.checked) == check
        finally:
            await worker.close()

    asyncio.run(scenario())


# -- PostgreSQL: the application role cannot rewrite what the chains and reports rest on -----


def test_app_role_cannot_update_or_delete_the_chained_tables(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import psycopg

    owner = open_store(pg_url)  # the owner migrates
    owner.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        role = f"lw_app_{conn.info.dbname}"  # roles are the cluster's: one per database
        conn.execute(f"CREATE ROLE {role} LOGIN")
    assert main(["db", "grant", role, "--db", pg_url]) == 0
    assert "unit_history" in capsys.readouterr().out
    user = pg_url.split("://", 1)[1].split("@", 1)[0]
    app_url = pg_url.replace(f"://{user}@", f"://{role}@", 1)

    # The fleet works as the role: register, Hello, ingest with an alarm, dispatch, every
    # disposal step, a checkpoint check kept, and the history verifies.
    store = open_store(app_url)
    try:
        store.upsert_register([RegisterEntry("U1", building="B1", contractor="C1")], T0)
        store.register_hello("a1", "0.1.0", [UnitClaim("U1", ControllerIdentity())], T0)
        store.commit_batch("a1", [record(1, "U1", event=ENTRAPMENT, event_id="t")], T0)
        (send,) = store.claim_deliveries(PLAN, T0)
        store.delivery_done(send, "", T0, None)
        (alarm,) = store.alarms()
        store.alarm_action(alarm.alarm_id, "ack", "Li", T0)
        store.alarm_action(alarm.alarm_id, "on_site", "Wang", T0)
        store.commit_batch(
            "a1",
            [record(2, "U1", event=ENTRAPMENT, phase=records_pb2.PHASE_CLEARED, event_id="t")],
            T0,
        )
        store.alarm_action(alarm.alarm_id, "resolve", "Wang", T0)
        path = tmp_path / "cp.json"
        generate_key(tmp_path / "k")
        write_checkpoint(path, store.history_heads(), T0, load_private_key(tmp_path / "k"))
        checkpoint = read_checkpoint(path, load_public_key(tmp_path / "k"))
        assert verify_store(store, "", checkpoint).problems == ()
    finally:
        store.close()

    refused = [
        "UPDATE unit_history SET detail = '{}'",
        "DELETE FROM unit_history",
        "TRUNCATE unit_history",
        "DELETE FROM unit_history_head",
        "UPDATE events SET floor = 9",
        "DELETE FROM events",
        "DELETE FROM records",
        "DELETE FROM alarms",
        "DELETE FROM history_checks",
        "UPDATE schema_version SET version = 1",
    ]
    with psycopg.connect(app_url, autocommit=True) as conn:
        for statement in refused:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        # What the lifecycle needs stays allowed (an alarm's state moves on).
        conn.execute("UPDATE alarms SET state = state")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        count = conn.execute("SELECT count(*) FROM unit_history").fetchone()
    assert count is not None and count[0] > 0  # nothing was removed


def test_db_grant_is_for_postgresql(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "grant", "app", "--db", str(tmp_path / "fleet.db")]) == 2
    assert "for PostgreSQL" in capsys.readouterr().err


def test_history_config_keys(tmp_path: Path) -> None:
    from fleet.config import ConfigError, parse_config

    config = parse_config(
        {"history": {"checkpoint_file": "cp.json", "checkpoint_key": "k.pem"}},
        tmp_path,
        source="t",
    )
    assert config.history.checkpoint_file == tmp_path / "cp.json"
    assert config.history.checkpoint_key == tmp_path / "k.pem"
    assert config.history.checkpoint_interval_s == 3600
    with pytest.raises(ConfigError) as failed:
        parse_config(
            {"history": {"checkpoint_file": "cp.json", "checkpoint_interval_s": 5}},
            tmp_path,
            source="t",
        )
    assert failed.value.problems == [
        "history.checkpoint_key: must be set with history.checkpoint_file",
        "history.checkpoint_interval_s: must be between 60 and 86400, got 5",
    ]


def test_serve_checkpoints_and_the_api_shows_the_last_verification(
    tmp_path: Path, key: Path
) -> None:
    import asyncio

    from fleet.config import FleetConfig, HistoryConfig, StoreConfig
    from fleet.web.openapi import openapi_spec
    from tests.fleet.harness import running_fleet
    from tests.fleet.test_api import validate
    from tests.fleet.test_web_auth import Client, _prepare
    from tests.support import eventually

    db = tmp_path / "fleet.db"
    token = _prepare(db)
    path = tmp_path / "cp.json"
    config = FleetConfig(
        store=StoreConfig(path=str(db)),
        history=HistoryConfig(checkpoint_file=path, checkpoint_key=key),
    )

    async def scenario() -> None:
        async with running_fleet(config, http=True, auth=True) as fleet:
            regulator = Client(fleet.http, token=token)
            status, shown = await regulator.get("/api/history/checkpoint")
            assert status == 200 and shown["scheduled"] and shown["interval_s"] == 3600
            # serve's first round writes the file (nothing to check against yet) ...
            await eventually(lambda: asyncio.to_thread(path.exists), bool)
            assert shown["last_check"] is None
            # ... and a verification against it is kept and shown.
            public = str(key) + ".pub"
            argv = ["verify-history", "--db", str(db), "--checkpoint", str(path), "--key", public]
            assert await asyncio.to_thread(main, argv) == 0
            status, shown = await regulator.get("/api/history/checkpoint")
            validate(shown, {"$ref": "#/components/schemas/HistoryCheckpoint"}, openapi_spec())
            check = shown["last_check"]
            assert (check["source"], check["intact"], check["problems"]) == ("cli", True, 0)
            assert check["units"] == 2 and check["checkpoint_file"] == str(path)
            contractor = Client(fleet.http)
            assert await contractor.login("ours") == 200
            assert (await contractor.get("/api/history/checkpoint"))[0] == 403

    asyncio.run(scenario())


def test_an_entry_chained_before_event_codes_is_checked_without_them() -> None:
    from fleet.store.chain import EventFact, HistoryRow, cross_check_events, event_detail

    fact = EventFact("a1", 7, "U1", 1_000_000, "e", DOOR, 1, None, 2, "r", gb_code=10, codes=True)
    old = {k: v for k, v in event_detail(fact).items() if k not in ("gb_code", "at_landing")}
    row = HistoryRow(1, "U1", 1, 5, "event", canonical(old), "0" * 64, "f" * 64)
    assert cross_check_events({"U1": [row]}, [fact]) == []
    moved = dataclasses.replace(fact, floor=3)
    (problem,) = cross_check_events({"U1": [row]}, [moved])
    assert problem.what == "edited" and problem.reason.endswith("in floor")


def test_serve_refuses_an_unusable_checkpoint_key(tmp_path: Path) -> None:
    import asyncio

    from fleet.config import FleetConfig, HistoryConfig, HttpConfig, ServerConfig, StoreConfig
    from fleet.serve.server import ServeError, serve

    (tmp_path / "not-a-key").write_text("hello")
    config = FleetConfig(
        server=ServerConfig(listen="127.0.0.1:0"),
        http=HttpConfig(listen=""),
        store=StoreConfig(path=str(tmp_path / "fleet.db")),
        history=HistoryConfig(tmp_path / "cp.json", tmp_path / "not-a-key"),
    )
    with pytest.raises(ServeError, match=r"history\.checkpoint_key: .*not-a-key"):
        asyncio.run(serve(config))
