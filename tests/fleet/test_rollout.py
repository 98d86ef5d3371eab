"""Staged rollouts (issue 20, item 3): the wave engine on an explicit clock. A good
release goes through canary and stages as agents come back with it and stay healthy for
the gate; a release whose canary fails (switched back on the box, timed out, errors
rising) halts the rollout, rolls back that wave's agents on the new version and offers
nothing more; pause holds offers back, abort stops."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fleet.releases.rollout import (
    AgentView,
    Member,
    MemberState,
    Plan,
    Rollout,
    RolloutState,
    advance,
    parse_waves,
    plan_members,
    start,
    wave_targets,
)

PLAN = Plan(waves=("1", "25%", "100%"), gate_s=300.0, offer_timeout_s=900.0)
AGENTS = [(f"edge-{i:02d}", "1.0") for i in range(8)]


def new() -> tuple[Rollout, list[Member]]:
    rollout = Rollout(1, "r2", "2.0", PLAN)
    rollout, members, offers = start(rollout, plan_members(AGENTS, PLAN), 0.0)
    assert [o.agent_id for o in offers] == ["edge-00"]
    return rollout, members


def views(version: dict[str, str], **over: AgentView) -> dict[str, AgentView]:
    out = {a: AgentView(version.get(a, "1.0"), True, 0, 0) for a, _ in AGENTS}
    out.update(over)
    return out


def test_wave_targets() -> None:
    assert wave_targets(PLAN, 8) == [1, 2, 8]
    assert wave_targets(Plan(waves=("1", "10%", "50%", "100%")), 20) == [1, 2, 10, 20]
    assert wave_targets(Plan(waves=("5",)), 3) == [3]
    assert wave_targets(Plan(waves=("1", "2")), 10) == [1, 2, 10]  # the rest at the end
    assert parse_waves("1, 10%,100%") == ("1", "10%", "100%")
    for bad in ("", "0", "150%", "x"):
        with pytest.raises(ValueError, match="waves"):
            parse_waves(bad)


def test_a_good_release_goes_wave_by_wave_after_each_gate() -> None:
    rollout, members = new()
    on = {"edge-00": "2.0"}
    rollout, members, offers = advance(rollout, members, views(on), 60.0)
    assert offers == [] and members[0].state == MemberState.TRIAL
    rollout, members, offers = advance(rollout, members, views(on), 60.0 + PLAN.gate_s - 1)
    assert offers == []  # the gate's T is not over
    rollout, members, offers = advance(rollout, members, views(on), 60.0 + PLAN.gate_s)
    assert members[0].state == MemberState.HEALTHY
    assert [o.agent_id for o in offers] == ["edge-01"] and rollout.wave == 1
    on["edge-01"] = "2.0"
    now = 1000.0
    rollout, members, _ = advance(rollout, members, views(on), now)
    rollout, members, offers = advance(rollout, members, views(on), now + PLAN.gate_s)
    assert [o.agent_id for o in offers] == [f"edge-{i:02d}" for i in range(2, 8)]
    on.update({a: "2.0" for a, _ in AGENTS})
    rollout, members, _ = advance(rollout, members, views(on), 2000.0)
    rollout, members, offers = advance(rollout, members, views(on), 2000.0 + PLAN.gate_s)
    assert rollout.state == RolloutState.DONE and offers == []
    assert all(m.state == MemberState.HEALTHY for m in members)


def test_a_release_that_fails_to_start_halts_after_its_canary() -> None:
    rollout, members = new()
    # The updater on the box switched back by itself and said so.
    failed = AgentView("1.0", True, 0, 0, report="rolled_back", report_detail="not healthy")
    rollout, members, offers = advance(rollout, members, views({}, **{"edge-00": failed}), 700.0)
    assert rollout.state == RolloutState.HALTED
    assert "wave 1: 1 of 1 failed: edge-00 (rolled_back: not healthy)" in rollout.reason
    assert offers == []  # already back on 1.0: nothing to roll back, nothing more offered
    assert [m.state for m in members[1:]] == [MemberState.PENDING] * 7
    later, _, offers = advance(rollout, members, views({}), 5000.0)
    assert later == rollout and offers == []


def test_an_agent_not_back_in_time_fails_the_gate() -> None:
    rollout, members = new()
    rollout, members, _ = advance(rollout, members, views({}), PLAN.offer_timeout_s - 1)
    assert rollout.state == RolloutState.RUNNING
    rollout, members, _ = advance(rollout, members, views({}), PLAN.offer_timeout_s)
    assert rollout.state == RolloutState.HALTED and "not back with 2.0" in rollout.reason


def test_rising_errors_on_the_new_version_halt_and_roll_back() -> None:
    rollout, members = new()
    on = {"edge-00": "2.0"}
    rollout, members, _ = advance(rollout, members, views(on), 10.0)
    worse = AgentView("2.0", True, 0, 3)  # detector exceptions since the trial began
    rollout, members, offers = advance(rollout, members, views(on, **{"edge-00": worse}), 20.0)
    assert rollout.state == RolloutState.HALTED and "detector exceptions rose" in rollout.reason
    assert [(o.agent_id, o.rollback_to) for o in offers] == [("edge-00", "1.0")]
    assert members[0].state == MemberState.ROLLED_BACK
    # Link errors: more than the allowance (60 per hour over the old rate) in the gate.
    rollout, members = new()
    rollout, members, _ = advance(rollout, members, views(on), 10.0)
    flaky = AgentView("2.0", True, 500, 0)
    rollout, members, offers = advance(rollout, members, views(on, **{"edge-00": flaky}), 100.0)
    assert rollout.state == RolloutState.HALTED and "link errors rose by 500" in rollout.reason
    assert [o.rollback_to for o in offers] == ["1.0"]


def test_an_error_threshold_lets_a_wave_pass_with_few_failures() -> None:
    plan = replace(PLAN, waves=("4", "100%"), error_threshold=0.25)
    rollout = Rollout(1, "r2", "2.0", plan)
    rollout, members, offers = start(rollout, plan_members(AGENTS, plan), 0.0)
    assert len(offers) == 4
    on = {f"edge-0{i}": "2.0" for i in range(1, 4)}
    bad = AgentView("1.0", True, 0, 0, report="failed", report_detail="not enough disk")
    rollout, members, _ = advance(rollout, members, views(on, **{"edge-00": bad}), 10.0)
    assert rollout.state == RolloutState.RUNNING  # 1 of 4 failed: within 25 %
    rollout, members, offers = advance(rollout, members, views(on), 10.0 + plan.gate_s)
    assert len(offers) == 4 and rollout.wave == 1


def test_pause_holds_offers_back_and_resume_goes_on() -> None:
    rollout, members = new()
    on = {"edge-00": "2.0"}
    rollout, members, _ = advance(rollout, members, views(on), 10.0)
    paused = replace(rollout, state=RolloutState.PAUSED)
    paused, members, offers = advance(paused, members, views(on), 10.0 + PLAN.gate_s)
    assert offers == [] and members[0].state == MemberState.HEALTHY  # judged, not offered
    resumed = replace(paused, state=RolloutState.RUNNING)
    resumed, members, offers = advance(resumed, members, views(on), 11.0 + PLAN.gate_s)
    assert [o.agent_id for o in offers] == ["edge-01"]
    aborted = replace(resumed, state=RolloutState.ABORTED)
    assert advance(aborted, members, views(on), 1e6)[2] == []
