"""Configuration documents in the store (issue 20), on SQLite and PostgreSQL: every
version kept, an agent's own document over its group's, rollback as a new version with
the earlier text, reports kept with ``config`` entries in the touched units' hash-chained
histories, and the CLI's set|diff|history|rollback on a real store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.cli.main import main
from fleet.configs import service
from fleet.configs.delivery import touched_units
from fleet.configs.document import DocumentError, affected_units
from fleet.history.verify import verify_store
from fleet.store.configs import ConfigStore, agent_document, group_document
from fleet.store.open import open_store
from fleet.store.sql import SqlStore
from protos.liftwatch.v1 import gateway_pb2

DOC = '[[bus]]\nname = "line"\nurl = "tcp://10.0.0.5:502"\n'
UNITS = "".join(f'[[unit]]\nid = "car-{n}"\nbus = "line"\nslave = {n}\n' for n in (1, 2))


@pytest.fixture
def store(store_target: str) -> Iterator[SqlStore]:
    opened = open_store(store_target)
    try:
        yield opened
    finally:
        opened.close()


def test_versions_groups_rollback_and_reports(store: SqlStore) -> None:
    configs = ConfigStore(store)
    group = group_document("tower-a")
    v1 = service.set_document(store, group, DOC + UNITS, 10, group_agents=["e1", "e2"])
    assert configs.desired("e1") == configs.version(v1)
    own = DOC + "[detect]\ndoor_close_failure_s = 30\n" + UNITS
    v2 = service.set_document(store, agent_document("e1"), own, 20)
    # e1's own document wins; e2 keeps the group's.
    assert configs.desired("e1") == configs.version(v2)
    assert configs.desired("e2") == configs.version(v1)
    assert configs.desired("e3") is None
    with pytest.raises(DocumentError, match="update"):
        service.set_document(store, agent_document("e1"), "[update]\nrelease_keys = []\n", 30)
    with pytest.raises(DocumentError, match="not TOML"):
        service.set_document(store, agent_document("e1"), "[[unit]\n", 30)

    # e1 applies v2: its two units touched (the agent says so), both chained.
    report = gateway_pb2.ConfigReport(
        document_id=agent_document("e1"),
        version=v2,
        applied=True,
        units_changed=["car-1=changed", "car-2=changed"],
    )
    configs.record_report("e1", v2, True, [], 40, touched_units(report))
    # e2 rejects v1 with problems: nothing in any history.
    configs.record_report(
        "e2",
        v1,
        False,
        ["unit[0].slave: must be 1..247"],
        41,
        touched_units(gateway_pb2.ConfigReport(version=v1)),
    )
    e1, e2 = configs.states(["e1", "e2"])
    assert e1.in_sync and e1.applied_version == v2 and e1.report_applied
    assert not e2.in_sync and e2.problems == ("unit[0].slave: must be 1..247",)
    rows, _ = store.history("")
    entries = [(r.unit_id, r.kind, json.loads(r.detail)) for r in rows if r.kind == "config"]
    assert [(u, d["version"], d["change"]) for u, _, d in entries] == [
        ("car-1", v2, "changed"),
        ("car-2", v2, "changed"),
    ]
    checked = verify_store(store)
    assert checked.entries == 2 and checked.problems == ()

    # Rollback: a new version with v1's text; the history keeps all three.
    v3 = service.rollback(store, agent_document("e1"), v2, 50)
    assert [v.version for v in service.history(store, agent_document("e1"))] == [v2, v3]
    back = configs.version(v3)
    assert back is not None and back.toml == own and back.rollback_of == v2
    with pytest.raises(DocumentError, match="no version"):
        service.rollback(store, agent_document("e1"), v1, 60)  # the group's, not e1's
    state, text = service.agent_diff(store, "e1")
    assert state.desired_version == v3 and text == ""  # same text as applied v2


def test_affected_units_reads_what_a_change_touches() -> None:
    before = DOC + UNITS
    assert affected_units(None, before) == {"car-1": "changed", "car-2": "changed"}
    after = (
        before.replace("slave = 2", "slave = 3")
        + '[[unit]]\nid = "car-9"\nbus = "line"\nslave = 9\n'
    )
    assert affected_units(before, after) == {"car-2": "changed", "car-9": "added"}
    assert affected_units(before, DOC + "[detect]\nx = 1\n" + UNITS) == {
        "car-1": "changed",
        "car-2": "changed",
    }


def test_the_cli_sets_diffs_lists_and_rolls_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "fleet.db")
    doc = tmp_path / "doc.toml"
    doc.write_text(DOC + UNITS, encoding="utf-8")
    assert main(["config", "set", "--db", db, "--agent", "e1", str(doc), "--by", "ann"]) == 0
    doc.write_text(DOC + "[detect]\ndoor_close_failure_s = 30\n" + UNITS, encoding="utf-8")
    assert main(["config", "set", "--db", db, "--agent", "e1", str(doc), "--json"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "agent:e1 version 1"
    assert json.loads(out[1]) == {"document_id": "agent:e1", "version": 2}
    bad = tmp_path / "bad.toml"
    bad.write_text('[fleet]\nendpoints = ["10.0.0.1:1"]\n', encoding="utf-8")
    assert main(["config", "set", "--db", db, "--agent", "e1", str(bad)]) == 2
    assert "fleet: a fleet document holds only" in capsys.readouterr().err
    assert main(["config", "rollback", "--db", db, "--agent", "e1", "1"]) == 0
    assert main(["config", "history", "--db", db, "--agent", "e1", "--json"]) == 0
    capsys.readouterr()
    assert main(["config", "history", "--db", db, "--agent", "e1", "--json"]) == 0
    versions = json.loads(capsys.readouterr().out)["versions"]
    assert [(v["version"], v["rollback_of"]) for v in versions] == [(1, None), (2, None), (3, 1)]
    assert versions[0]["author"] == "ann"
    assert main(["config", "diff", "--db", db, "e1", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["state"]["desired_version"] == 3 and not shown["in_sync"]
    assert '+id = "car-1"' in shown["diff"]
    assert main(["config", "diff", "--db", db]) == 0
    assert capsys.readouterr().out.split("\t")[-1].strip() == "pending"


def test_the_bench_step_pushes_each_agent_its_own_tables(tmp_path: Path) -> None:
    from bench.rollout_config import CHANGE, _reports, push_config, remote_tables

    box = tmp_path / "agent.toml"
    box.write_text(
        '[agent]\nid = "edge-00"\n[fleet]\nendpoints = ["127.0.0.1:1"]\n[update]\n'
        'release_keys = ["k"]\n' + DOC + "poll_hz = 2.0\n" + UNITS + "[unit.detect]\nx = 1\n",
        encoding="utf-8",
    )
    tables = remote_tables(box.read_text(encoding="utf-8"))
    assert tables == DOC + "poll_hz = 2.0\n" + UNITS + "[unit.detect]\nx = 1\n"
    db = str(tmp_path / "fleet.db")
    versions = push_config(db, {"edge-00": box})
    store = open_store(db)
    try:
        kept = ConfigStore(store).desired("edge-00")
        assert kept is not None and kept.toml == CHANGE + tables
        assert _reports(db, versions) == {}  # nothing reported yet
        ConfigStore(store).record_report(
            "edge-00", versions["edge-00"], True, [], 1, lambda _old, _new: {}
        )
    finally:
        store.close()
    assert _reports(db, versions) == {"edge-00": (True, ())}


def test_the_gateway_sends_a_document_only_to_an_agent_that_takes_them(tmp_path: Path) -> None:
    """An older agent (no Hello.accepts_config) would end its stream on a frame it does not
    know: it gets none. One that takes them gets its document right after the Welcome,
    and not again once its Hello says it runs that version."""
    import asyncio

    from fleet.config import FleetConfig, StoreConfig
    from tests.fleet.factories import hello
    from tests.fleet.harness import running_fleet

    db = tmp_path / "fleet.db"
    store = open_store(str(db))
    try:
        version = service.set_document(store, agent_document("e1"), DOC + UNITS, 1)
    finally:
        store.close()

    async def frames_after_hello(accepts: bool, running: int) -> list[str]:
        async with running_fleet(FleetConfig(store=StoreConfig(path=str(db)))) as fleet:
            frame = hello("e1", "car-1", "car-2")
            frame.hello.accepts_config = accepts
            frame.hello.config_version = running
            call = await fleet.connect(frame)
            # A heartbeat after the Hello: the gateway answers nothing to it, so whatever
            # it sends before the stream ends comes from the Hello.
            beat = gateway_pb2.AgentFrame(heartbeat=gateway_pb2.Heartbeat())
            await call.write(beat)
            await call.done_writing()
            kinds = []
            async for reply in call:
                kinds.append(reply.WhichOneof("frame"))
                if reply.WhichOneof("frame") == "desired_config":
                    assert reply.desired_config.version == version
                    assert reply.desired_config.toml == DOC + UNITS
            return kinds

    assert asyncio.run(frames_after_hello(False, 0)) == ["welcome"]
    assert asyncio.run(frames_after_hello(True, 0)) == ["welcome", "desired_config"]
    assert asyncio.run(frames_after_hello(True, version)) == ["welcome"]


def test_unset_withdraws_an_agents_document_and_takes_agents_out_of_a_group(
    store: SqlStore,
) -> None:
    """`config unset`: e1's own document withdrawn, its group's applies again and, once
    e1 applies it, its units' history records the change; e2 taken out of the group runs
    its own document; an agent that would be left with nothing is refused, unchanged."""
    configs = ConfigStore(store)
    group, mine = group_document("tower-a"), agent_document("e1")
    v1 = service.set_document(store, group, DOC + UNITS, 10, group_agents=["e1", "e2", "e3"])
    own = DOC + "[detect]\ndoor_close_failure_s = 30\n" + UNITS
    v2 = service.set_document(store, mine, own, 20)
    v3 = service.set_document(store, agent_document("e2"), own, 21)
    applied = gateway_pb2.ConfigReport(version=v2, applied=True, units_changed=["car-1=added"])
    configs.record_report("e1", v2, True, [], 30, touched_units(applied))

    after = service.unset(store, "e1", None, [], 40, author="ann", note="back to the tower's")
    assert after == {"e1": configs.version(v1)}
    assert configs.desired("e1") == configs.version(v1)
    (e1,) = configs.states(["e1"])
    assert (e1.desired_version, e1.applied_version, e1.in_sync) == (v1, v2, False)
    withdrawn = service.history(store, mine)[-1]
    assert (withdrawn.toml, withdrawn.author, withdrawn.note) == ("", "ann", "back to the tower's")
    with pytest.raises(DocumentError, match="no version in force"):
        service.unset(store, "e1", None, [], 41)  # already withdrawn
    # e1 applies the group's document: its units' history has the change, as for a set.
    back = gateway_pb2.ConfigReport(version=v1, applied=True, units_changed=["car-1=changed"])
    configs.record_report("e1", v1, True, [], 50, touched_units(back))
    rows, _ = store.history("")
    last = json.loads([r for r in rows if r.kind == "config"][-1].detail)
    assert (last["document_id"], last["version"], last["previous_version"]) == (group, v1, v2)
    assert verify_store(store).problems == ()

    # Out of the group: e2 runs its own document; e3 has none, so nothing changes.
    with pytest.raises(DocumentError, match="agent e3 would be left with no document"):
        service.unset(store, None, "tower-a", ["e2", "e3"], 60)
    assert configs.group_of("e2") == "tower-a"
    with pytest.raises(DocumentError, match="not in group:tower-a: e9"):
        service.unset(store, None, "tower-a", ["e9"], 60)
    assert service.unset(store, None, "tower-a", ["e2"], 60) == {"e2": configs.version(v3)}
    assert (configs.group_of("e2"), configs.group_of("e3")) == ("", "tower-a")
    # e1 has nothing but its group now: its document cannot leave it too.
    with pytest.raises(DocumentError, match="agent e1 would be left"):
        service.unset(store, None, "tower-a", ["e1"], 70)
    # A rollback to e1's own version undoes the withdrawal.
    service.rollback(store, mine, v2, 80)
    restored = configs.desired("e1")
    assert restored is not None and (restored.document_id, restored.toml) == (mine, own)


def test_the_cli_unsets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`config unset` with --help, --json and a refusal on stderr (exit status 2)."""
    db = str(tmp_path / "fleet.db")
    doc = tmp_path / "doc.toml"
    doc.write_text(DOC + UNITS, encoding="utf-8")
    on = ["--db", db]
    assert main(["config", "set", *on, "--group", "t", "--agents", "e1", str(doc)]) == 0
    assert main(["config", "set", *on, "--agent", "e1", str(doc)]) == 0
    capsys.readouterr()
    assert main(["config", "unset", "--help"]) == 0
    assert "withdraw" in capsys.readouterr().out
    assert main(["config", "unset", *on, "--agent", "e1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "document_id": "agent:e1",
        "agents": {"e1": {"document_id": "group:t", "version": 1}},
    }
    assert main(["config", "history", *on, "--agent", "e1"]) == 0
    assert "withdrawn" in capsys.readouterr().out.splitlines()[-1]
    assert main(["config", "unset", *on, "--group", "t", "--agents", "e1"]) == 2
    assert "would be left with no document" in capsys.readouterr().err
