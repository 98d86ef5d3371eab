"""Staged rollouts (issue 20, item 3): waves gated on health, halting on a failed gate.

A rollout offers one signed release to a set of agents in waves: a canary (N agents or a
percentage), then larger stages. Each wave is judged on what the fleet sees of its agents:

- the agent reconnects with the release's version (its Hello's ``agent_version``);
- its link errors (the timeouts, CRC errors and exception responses of its units'
  ``LinkStatus`` records) and its detector exceptions (counted by the agent, sent in its
  ``UpdateReport`` detail) do not rise faster than before the update, beyond an allowance;
- it stays so for ``gate_s`` (the "T minutes": on the box the updater keeps a version
  only once its watchdog has not fired for ``healthy_for_s``, so both sides judge).

An agent that reports ``refused``, ``failed`` or ``rolled_back`` (the updater switched back
by itself), that does not come back with the new version within ``offer_timeout_s``, or
whose errors rise, has failed. When a wave's failures exceed its error threshold (hawkBit's
``errorCondition``; 0 by default: any failure) the rollout halts, the wave's agents that
run the new version are rolled back (offered their previous release), nothing more is
offered, and the halt is shown and alerted. Otherwise, once every agent of the wave is
healthy or failed within the threshold, the next wave starts.

This module is pure: `advance` takes the rollout, its members, what the fleet sees of
each agent and the time (an explicit clock), and returns the new rollout and members with
the actions to take (offers, roll-backs). The caller (``fleet.releases.service``) stores
them and sends the frames; tests drive it without sleeping.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum


class RolloutState(StrEnum):
    """Where a rollout stands."""

    RUNNING = "running"
    PAUSED = "paused"  # an operator paused it: nothing new offered, judging goes on
    HALTED = "halted"  # a gate failed: stopped, failed agents rolled back, alerted
    ABORTED = "aborted"  # an operator stopped it for good
    DONE = "done"  # every wave passed


class MemberState(StrEnum):
    """Where one agent of a rollout stands."""

    PENDING = "pending"  # its wave has not started
    OFFERED = "offered"  # the release was offered; waiting for it to come back updated
    TRIAL = "trial"  # runs the new version; judged for gate_s
    HEALTHY = "healthy"  # passed the gate
    FAILED = "failed"  # refused, failed, switched back, timed out or errors rose
    ROLLED_BACK = "rolled_back"  # failed and offered its previous release


FINAL_MEMBER_STATES = frozenset({MemberState.HEALTHY, MemberState.FAILED, MemberState.ROLLED_BACK})
# What an agent's UpdateReport says when the update did not take.
FAILED_REPORTS = frozenset({"refused", "failed", "rolled_back"})


@dataclass(frozen=True, slots=True)
class Plan:
    """How a rollout proceeds: ``waves`` are cumulative targets ("1", "10%", "100%"),
    each a count of agents or a percentage of all of them."""

    waves: tuple[str, ...] = ("1", "10%", "50%", "100%")
    gate_s: float = 600.0
    offer_timeout_s: float = 1800.0
    # Failed agents a wave may have (as a fraction of its agents) and still pass.
    error_threshold: float = 0.0
    # Link errors per hour an agent may add over its rate before the update.
    link_error_allowance_per_h: float = 60.0


@dataclass(frozen=True, slots=True)
class Rollout:
    """One rollout of ``release_id`` (version ``version``)."""

    rollout_id: int
    release_id: str
    version: str
    plan: Plan
    state: RolloutState = RolloutState.RUNNING
    wave: int = 0  # the wave under way (0-based)
    reason: str = ""  # why it halted or was aborted


@dataclass(frozen=True, slots=True)
class Member:
    """One agent of a rollout. ``link_errors``/``detector_errors`` and ``at`` are the
    counts seen and the time when its trial began; ``rate_before`` its link errors per
    hour before the update (from the fleet's records)."""

    agent_id: str
    wave: int
    previous_version: str
    state: MemberState = MemberState.PENDING
    since: float = 0.0  # when it entered its state
    link_errors: int = 0
    detector_errors: int = 0
    rate_before: float = 0.0
    detail: str = ""


@dataclass(frozen=True, slots=True)
class AgentView:
    """What the fleet sees of an agent now."""

    version: str  # from its latest Hello
    connected: bool
    link_errors: int  # cumulative over its units' latest LinkStatus records
    detector_errors: int  # cumulative, from its latest UpdateReport detail
    report: str = ""  # the state of its latest UpdateReport for this release
    report_detail: str = ""


@dataclass(frozen=True, slots=True)
class Offer:
    """Offer ``release_id`` to ``agent_id`` (a rollout's release, or a roll-back's)."""

    agent_id: str
    release_id: str = ""  # "": the rollout's release
    rollback_to: str = ""  # set for a roll-back: the version to go back to


def wave_targets(plan: Plan, total: int) -> list[int]:
    """The cumulative number of agents each wave brings the rollout to (each at least one
    more than the last, the last all of them)."""
    targets: list[int] = []
    for text in plan.waves:
        n = math.ceil(total * float(text[:-1]) / 100) if text.endswith("%") else int(text)
        n = max(min(n, total), (targets[-1] + 1) if targets else 1)
        if targets and targets[-1] >= total:
            break
        targets.append(min(n, total))
    if not targets or targets[-1] < total:
        targets.append(total)
    return targets


def parse_waves(text: str) -> tuple[str, ...]:
    """``"1,10%,100%"`` as waves; ValueError naming the bad item otherwise."""
    waves = tuple(item.strip() for item in text.split(",") if item.strip())
    if not waves:
        raise ValueError("waves: give at least one, e.g. 1,10%,100%")
    for item in waves:
        number = item[:-1] if item.endswith("%") else item
        try:
            value = float(number) if item.endswith("%") else int(number)
        except ValueError:
            raise ValueError(f"waves: {item!r} is neither a count nor a percentage") from None
        if value <= 0 or (item.endswith("%") and value > 100):
            raise ValueError(f"waves: {item!r} must be a count >= 1 or a percentage 0-100")
    return waves


def plan_members(agents: Sequence[tuple[str, str]], plan: Plan) -> list[Member]:
    """The members of a new rollout over ``agents`` ((agent id, version it runs), in the
    order they should be offered), each in its wave."""
    targets = wave_targets(plan, len(agents))
    members: list[Member] = []
    for i, (agent_id, version) in enumerate(agents):
        wave = next(w for w, target in enumerate(targets) if i < target)
        members.append(Member(agent_id, wave, version))
    return members


def _judge(rollout: Rollout, m: Member, view: AgentView | None, now: float) -> Member:
    """The member after looking at its agent now."""
    plan = rollout.plan
    if m.state in FINAL_MEMBER_STATES or m.state == MemberState.PENDING:
        return m
    if view is not None and view.report in FAILED_REPORTS:
        detail = f"{view.report}: {view.report_detail}".strip(": ")
        return replace(m, state=MemberState.FAILED, since=now, detail=detail)
    if m.state == MemberState.OFFERED:
        if view is not None and view.connected and view.version == rollout.version:
            return replace(
                m,
                state=MemberState.TRIAL,
                since=now,
                link_errors=view.link_errors,
                detector_errors=view.detector_errors,
            )
        if now - m.since >= plan.offer_timeout_s:
            detail = f"not back with {rollout.version} within {plan.offer_timeout_s:g} s"
            return replace(m, state=MemberState.FAILED, since=now, detail=detail)
        return m
    # TRIAL
    if view is None or view.version != rollout.version:
        seen = view.version if view is not None else "nothing"
        detail = f"runs {seen} again during its trial"
        return replace(m, state=MemberState.FAILED, since=now, detail=detail)
    if view.detector_errors > m.detector_errors:
        detail = f"detector exceptions rose by {view.detector_errors - m.detector_errors}"
        return replace(m, state=MemberState.FAILED, since=now, detail=detail)
    hours = max(now - m.since, 1.0) / 3600
    allowed = (m.rate_before + plan.link_error_allowance_per_h) * hours
    if view.link_errors - m.link_errors > allowed:
        detail = f"link errors rose by {view.link_errors - m.link_errors} in {now - m.since:.0f} s"
        return replace(m, state=MemberState.FAILED, since=now, detail=detail)
    if not view.connected:
        return m  # a reconnect does not end the trial; the timeout of the gate does not run
    if now - m.since >= plan.gate_s:
        return replace(m, state=MemberState.HEALTHY, since=now)
    return m


def advance(
    rollout: Rollout,
    members: Sequence[Member],
    views: Mapping[str, AgentView],
    now: float,
) -> tuple[Rollout, list[Member], list[Offer]]:
    """One step of the rollout at time ``now``: judge its offered and trial agents, halt
    on a failed gate (rolling back the wave's failed agents that run the new version),
    start the next wave when the current one passed; return the rollout, its members and
    the offers to send. A paused rollout judges but offers nothing; a halted, aborted or
    finished one does nothing."""
    if rollout.state not in (RolloutState.RUNNING, RolloutState.PAUSED):
        return rollout, list(members), []
    judged = [_judge(rollout, m, views.get(m.agent_id), now) for m in members]
    wave = [m for m in judged if m.wave == rollout.wave]
    failed = [m for m in wave if m.state in (MemberState.FAILED, MemberState.ROLLED_BACK)]
    allowed = math.floor(rollout.plan.error_threshold * len(wave))
    if len(failed) > allowed:
        names = ", ".join(f"{m.agent_id} ({m.detail})" for m in failed[:5])
        reason = f"wave {rollout.wave + 1}: {len(failed)} of {len(wave)} failed: {names}"
        return (
            replace(rollout, state=RolloutState.HALTED, reason=reason),
            *_roll_back(rollout, judged, views, now),
        )
    if rollout.state == RolloutState.PAUSED or any(
        m.state not in FINAL_MEMBER_STATES for m in wave
    ):
        return rollout, judged, []
    # The wave passed its gate: offer the next one, or the rollout is done.
    next_wave = rollout.wave + 1
    if not any(m.wave == next_wave for m in judged):
        return replace(rollout, state=RolloutState.DONE), judged, []
    started, offers = _offer_wave(judged, next_wave, now)
    return replace(rollout, wave=next_wave), started, offers


def _roll_back(
    rollout: Rollout, members: Sequence[Member], views: Mapping[str, AgentView], now: float
) -> tuple[list[Member], list[Offer]]:
    """The wave's agents that run (or may be installing) the new version are offered
    their previous release; an agent whose updater already switched back, or that never
    installed it, keeps its state."""
    offers: list[Offer] = []
    out: list[Member] = []
    for m in members:
        view = views.get(m.agent_id)
        on_new = view is not None and view.version == rollout.version
        pending = m.state in (MemberState.OFFERED, MemberState.TRIAL)
        if m.wave == rollout.wave and (pending or (m.state == MemberState.FAILED and on_new)):
            offers.append(Offer(m.agent_id, rollback_to=m.previous_version))
            m = replace(m, state=MemberState.ROLLED_BACK, since=now)
        out.append(m)
    return out, offers


def _offer_wave(
    members: Sequence[Member], wave: int, now: float
) -> tuple[list[Member], list[Offer]]:
    offers: list[Offer] = []
    out: list[Member] = []
    for m in members:
        if m.wave == wave and m.state == MemberState.PENDING:
            offers.append(Offer(m.agent_id))
            m = replace(m, state=MemberState.OFFERED, since=now)
        out.append(m)
    return out, offers


def start(
    rollout: Rollout, members: Sequence[Member], now: float
) -> tuple[Rollout, list[Member], list[Offer]]:
    """Offer the first wave of a new rollout."""
    started, offers = _offer_wave(members, 0, now)
    return replace(rollout, wave=0, state=RolloutState.RUNNING), started, offers
