"""GET /api/rollouts (issue 20, item 5): an administrator sees each rollout's waves with
their agents by state and why agents failed, and the releases kept; the answer matches
its OpenAPI schema; anyone else gets 403 (tests/security/test_scope_routes.py)."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleet.releases.bundle import build, public_text
from fleet.releases.rollout import Plan
from fleet.releases.service import add_release, start_rollout, tick
from fleet.store.releases import ReleaseStore
from fleet.store.sqlite import SqliteStore
from fleet.web.rollouts import rollouts_view
from tests.agent.wheels import make_wheel

KEY = Ed25519PrivateKey.generate()


def test_the_view_shows_waves_and_failures(tmp_path: Path) -> None:
    store = SqliteStore.open(str(tmp_path / "fleet.db"))
    releases = ReleaseStore(store)
    (tmp_path / "kept").mkdir()
    build(tmp_path / "b", "r2", "2.0", [make_wheel(tmp_path / "w", "2.0")], KEY)
    add_release(releases, tmp_path / "b", tmp_path / "kept", public_text(KEY), 0)
    agents = [(f"edge-{i}", "1.0") for i in range(5)]
    rollout_id = start_rollout(releases, "r2", agents, Plan(waves=("1", "100%")), 0.0)
    releases.record_report("edge-0", "r2", "rolled_back", "not healthy within 600 s", 0, 1)
    tick(releases, 10.0)
    view = rollouts_view(store)
    store.close()
    (rollout,) = view.rollouts
    assert (rollout.rollout_id, rollout.state, rollout.wave) == (rollout_id, "halted", 1)
    first, rest = rollout.waves
    assert (first.agents, first.failed, first.failures) == (
        1,
        1,
        ("edge-0: rolled_back: not healthy within 600 s",),
    )
    assert (rest.agents, rest.pending) == (4, 4)
    assert [(r.release_id, r.version, r.wheels) for r in view.releases] == [("r2", "2.0", 1)]
