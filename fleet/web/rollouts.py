"""``GET /api/rollouts`` (issue 20): the newest rollouts of agent releases with their
progress per wave, for the administrators' dashboard page (static/rollouts.js), and the
releases kept. Administrators only: rollouts change what runs on every box."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fleet.read.shape import out, response, to_json
from fleet.releases.rollout import MemberState, Rollout
from fleet.store.base import Store
from fleet.store.releases import ReleaseStore
from fleet.store.sql import SqlStore
from fleet.store.worker import StoreWorker
from fleet.web.auth import AccessDeniedError, principal_of

Handler = Callable[[Request], Awaitable[Response]]
# Rollouts the page shows (newest first); `liftwatch-fleet rollout status ID` reads any.
SHOWN_ROLLOUTS = 20


@response("RolloutWave")
@dataclass(frozen=True)
class WaveView:
    """One wave of a rollout: its agents by their state in the gate."""

    wave: int = out("1 is the canary", minimum=1)
    agents: int = out(minimum=0)
    pending: int = out("not offered yet", minimum=0)
    offered: int = out("offered, not back with the new version yet", minimum=0)
    trial: int = out("back with it, judged for the gate's time", minimum=0)
    healthy: int = out("passed the gate", minimum=0)
    failed: int = out(minimum=0)
    rolled_back: int = out("offered their previous version after a halt", minimum=0)
    failures: tuple[str, ...] = out("'agent: why' of each failed agent")


@response("Rollout")
@dataclass(frozen=True)
class RolloutView:
    """A rollout and its waves."""

    rollout_id: int = out()
    release_id: str = out()
    version: str = out()
    state: str = out("running, paused, halted, aborted or done")
    wave: int = out("the wave under way (1: the canary)", minimum=1)
    reason: str = out("why it halted or was aborted")
    gate_s: float = out("how long each agent must stay healthy")
    waves: tuple[WaveView, ...] = out()


@response("ReleaseKept")
@dataclass(frozen=True)
class ReleaseView:
    """A release the fleet keeps."""

    release_id: str = out()
    version: str = out()
    wheels: int = out(minimum=0)


@response("Rollouts")
@dataclass(frozen=True)
class RolloutsView:
    """The newest rollouts and every release."""

    rollouts: tuple[RolloutView, ...] = out("newest first")
    releases: tuple[ReleaseView, ...] = out("newest first")


def _rollout(releases: ReleaseStore, rollout: Rollout) -> RolloutView:
    members = releases.members(rollout.rollout_id)
    waves: list[WaveView] = []
    for wave in sorted({m.wave for m in members}):
        of = [m for m in members if m.wave == wave]
        count = {s: sum(1 for m in of if m.state == s) for s in MemberState}
        waves.append(
            WaveView(
                wave=wave + 1,
                agents=len(of),
                pending=count[MemberState.PENDING],
                offered=count[MemberState.OFFERED],
                trial=count[MemberState.TRIAL],
                healthy=count[MemberState.HEALTHY],
                failed=count[MemberState.FAILED],
                rolled_back=count[MemberState.ROLLED_BACK],
                failures=tuple(f"{m.agent_id}: {m.detail}" for m in of if m.detail),
            )
        )
    return RolloutView(
        rollout_id=rollout.rollout_id,
        release_id=rollout.release_id,
        version=rollout.version,
        state=rollout.state.value,
        wave=rollout.wave + 1,
        reason=rollout.reason,
        gate_s=rollout.plan.gate_s,
        waves=tuple(waves),
    )


def rollouts_view(store: Store) -> RolloutsView:
    """The newest rollouts with their waves, and the releases (on the store thread)."""
    assert isinstance(store, SqlStore)
    releases = ReleaseStore(store)
    return RolloutsView(
        rollouts=tuple(_rollout(releases, r) for r in releases.rollouts()[:SHOWN_ROLLOUTS]),
        releases=tuple(
            ReleaseView(r.release_id, r.version, len(json.loads(r.manifest)["wheels"]))
            for r in releases.releases()
        ),
    )


def rollout_routes(store: StoreWorker, guarded: Callable[[Handler], Handler]) -> list[Route]:
    """``GET /api/rollouts``, administrators only (403 for anyone else)."""

    async def status(request: Request) -> Response:
        principal = principal_of(request)
        if not principal.can_admin():
            raise AccessDeniedError(403, f"a {principal.role.value} may not read the rollouts")
        view = await store.call(rollouts_view)
        return JSONResponse(to_json(view))

    return [Route("/api/rollouts", guarded(status))]
