"""``GET /api/configs`` (issue 20): desired against applied configuration per agent, for
the administrators' dashboard page (static/configs.js). Administrators only: a document
changes what every unit of an agent watches (`liftwatch-fleet config` changes them)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fleet.configs import service
from fleet.read.shape import out, response, to_json
from fleet.store.base import Store
from fleet.store.chain import iso_us
from fleet.store.worker import StoreWorker
from fleet.web.auth import AccessDeniedError, principal_of

Handler = Callable[[Request], Awaitable[Response]]


@response("AgentConfig")
@dataclass(frozen=True)
class AgentConfigView:
    """One agent's configuration: what it should run against what it runs."""

    agent_id: str = out()
    desired_document: str = out("agent:ID or group:NAME; empty: the agent's own file only")
    desired_version: int = out("0: no fleet document", minimum=0)
    applied_version: int = out("by the agent's Hello or last report; 0: its own file", minimum=0)
    state: str = out("own_file, in_sync, pending or rejected")
    report_version: int = out("the version of its last report", minimum=0)
    problems: tuple[str, ...] = out("what its check-config found in the last version sent")
    reported: str | None = out("when it last reported (ISO 8601, UTC)")


@response("AgentConfigs")
@dataclass(frozen=True)
class AgentConfigsView:
    """Desired against applied for every agent."""

    agents: tuple[AgentConfigView, ...] = out("by agent id")


def state_of(state: service.AgentConfigState) -> str:
    """own_file, in_sync, pending (sent or to send) or rejected (its last report refused
    the version it should run)."""
    if state.desired_version == 0:
        return "own_file"
    if state.in_sync:
        return "in_sync"
    if state.report_version == state.desired_version and not state.report_applied:
        return "rejected"
    return "pending"


def configs_view(store: Store) -> AgentConfigsView:
    """Desired against applied for every agent (on the store thread)."""
    return AgentConfigsView(
        agents=tuple(
            AgentConfigView(
                agent_id=s.agent_id,
                desired_document=s.desired_document,
                desired_version=s.desired_version,
                applied_version=s.applied_version,
                state=state_of(s),
                report_version=s.report_version,
                problems=s.problems,
                reported=iso_us(s.report_us),
            )
            for s in service.states(store)
        )
    )


def config_routes(store: StoreWorker, guarded: Callable[[Handler], Handler]) -> list[Route]:
    """``GET /api/configs``, administrators only (403 for anyone else)."""

    async def configs(request: Request) -> Response:
        principal = principal_of(request)
        if not principal.can_admin():
            raise AccessDeniedError(
                403, f"a {principal.role.value} may not read the agents' configuration"
            )
        return JSONResponse(to_json(await store.call(configs_view)))

    return [Route("/api/configs", guarded(configs))]
