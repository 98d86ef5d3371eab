"""Releases and rollouts against the store (issue 20), on SQLite and PostgreSQL: a signed
bundle is kept (a wrongly signed one refused), a rollout offers its canary, judges it from
what agents say (their Hello's version, their UpdateReports, their units' LinkStatus), goes
on wave by wave or halts and rolls back; pause, resume and abort."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleet.releases.bundle import build, public_text
from fleet.releases.rollout import MemberState, Plan, RolloutState
from fleet.releases.service import (
    ReleaseRefusedError,
    add_release,
    control,
    start_rollout,
    tick,
)
from fleet.store.base import ControllerIdentity, HelloOp, UnitClaim
from fleet.store.open import open_store
from fleet.store.releases import ReleaseStore
from fleet.store.sql import SqlStore
from tests.agent.wheels import make_wheel

KEY = Ed25519PrivateKey.generate()
AGENTS = [f"edge-{i}" for i in range(4)]
PLAN = Plan(waves=("1", "100%"), gate_s=300.0, offer_timeout_s=900.0)
T0 = 1_780_000_000.0


@pytest.fixture
def store(store_target: str) -> Iterator[SqlStore]:
    opened = open_store(store_target)
    hello(opened, AGENTS, "1.0", T0)
    yield opened
    opened.close()


def hello(store: SqlStore, agents: list[str], version: str, at: float) -> None:
    when = dt.datetime.fromtimestamp(at, dt.UTC)
    store.write(
        [HelloOp(a, version, (UnitClaim(f"U-{a}", ControllerIdentity()),)) for a in agents], when
    )


def bundle(tmp: Path, release_id: str, version: str, key: Ed25519PrivateKey = KEY) -> Path:
    wheel = make_wheel(tmp / "wheels" / release_id, version)
    build(tmp / "out" / release_id, release_id, version, [wheel], key)
    return tmp / "out" / release_id


def test_a_rollout_goes_wave_by_wave_and_a_broken_one_halts(
    store: SqlStore, tmp_path: Path
) -> None:
    releases = ReleaseStore(store)
    keep = tmp_path / "kept"
    keep.mkdir()
    us = int(T0 * 1e6)
    add_release(releases, bundle(tmp_path, "r1", "1.0"), keep, public_text(KEY), us)
    add_release(releases, bundle(tmp_path, "r2", "2.0"), keep, public_text(KEY), us)
    add_release(releases, bundle(tmp_path, "r3", "3.0"), keep, public_text(KEY), us)
    with pytest.raises(ReleaseRefusedError, match="does not verify"):
        stranger = Ed25519PrivateKey.generate()
        add_release(releases, bundle(tmp_path, "x", "9", stranger), keep, public_text(KEY), us)
    with pytest.raises(ReleaseRefusedError, match="exists already"):
        add_release(releases, bundle(tmp_path / "again", "r2", "2.0"), keep, public_text(KEY), us)
    assert [r.release_id for r in releases.releases()] == ["r1", "r2", "r3"]
    assert (keep / "r2" / "manifest.json").exists()

    rid = start_rollout(releases, "r2", [(a, "1.0") for a in AGENTS], PLAN, T0)
    assert releases.offered("edge-0") is not None and releases.offered("edge-1") is None
    with pytest.raises(ReleaseRefusedError, match="another active rollout"):
        start_rollout(releases, "r3", [("edge-0", "1.0")], PLAN, T0)
    # The canary comes back with 2.0 and stays healthy for the gate.
    hello(store, ["edge-0"], "2.0", T0 + 60)
    tick(releases, T0 + 60)
    assert releases.members(rid)[0].state == MemberState.TRIAL
    hello(store, AGENTS, "1.0", T0 + 360)
    hello(store, ["edge-0"], "2.0", T0 + 360)
    result = tick(releases, T0 + 360)
    assert sorted(o.agent_id for _, o in result.offers) == AGENTS[1:]
    offered = releases.offered("edge-3")
    assert offered is not None and offered.release_id == "r2"
    hello(store, AGENTS, "2.0", T0 + 400)
    tick(releases, T0 + 400)
    hello(store, AGENTS, "2.0", T0 + 700)
    tick(releases, T0 + 700)
    done = releases.rollout(rid)
    assert done is not None and done.state == RolloutState.DONE

    # A broken release: the canary's updater switches back and reports it.
    rid3 = start_rollout(releases, "r3", [(a, "2.0") for a in AGENTS], PLAN, T0 + 800)
    releases.record_report("edge-0", "r3", "rolled_back", "not healthy within 600 s", 0, us)
    result = tick(releases, T0 + 900)
    halted = releases.rollout(rid3)
    assert halted is not None and halted.state == RolloutState.HALTED
    assert "rolled_back: not healthy within 600 s" in halted.reason
    assert [r.rollout_id for r in result.halted] == [rid3]
    assert releases.offered("edge-1") is not None
    assert releases.offered("edge-1").release_id == "r2"  # type: ignore[union-attr]
    with pytest.raises(ReleaseRefusedError, match="halted: cannot resume"):
        control(releases, rid3, "resume", T0 + 950)
    assert control(releases, rid3, "abort", T0 + 950).state == RolloutState.ABORTED


def test_pause_resume_and_abort(store: SqlStore, tmp_path: Path) -> None:
    releases = ReleaseStore(store)
    keep = tmp_path / "kept"
    keep.mkdir()
    add_release(releases, bundle(tmp_path, "r2", "2.0"), keep, public_text(KEY), 0)
    rid = start_rollout(releases, "r2", [(a, "1.0") for a in AGENTS], PLAN, T0)
    assert control(releases, rid, "pause", T0 + 1).state == RolloutState.PAUSED
    hello(store, ["edge-0"], "2.0", T0 + 400)
    tick(releases, T0 + 400)
    hello(store, ["edge-0"], "2.0", T0 + 800)
    assert tick(releases, T0 + 800).offers == ()  # judged healthy, nothing offered
    assert control(releases, rid, "resume", T0 + 801).state == RolloutState.RUNNING
    assert len(tick(releases, T0 + 802).offers) == 3
    aborted = control(releases, rid, "abort", T0 + 803)
    assert aborted.state == RolloutState.ABORTED and "aborted by an operator" in aborted.reason
    assert releases.offered("edge-2") is None  # withdrawn: not yet taken
    assert releases.offered("edge-0") is not None  # already runs it


def test_a_final_report_is_not_overwritten_by_progress(store: SqlStore) -> None:
    releases = ReleaseStore(store)
    releases.record_report("edge-0", "r3", "rolled_back", "not healthy", 0, 1)
    releases.record_report("edge-0", "r3", "downloading", "", 0, 2)
    assert releases.views("r3", ["edge-0"], 3, 60.0)["edge-0"].report == "rolled_back"
    releases.record_report("edge-0", "r3", "refused", "unsigned", 0, 4)
    assert releases.views("r3", ["edge-0"], 5, 60.0)["edge-0"].report == "refused"
