"""The history checkpoint over the JSON API: when the chains were last verified against a
signed checkpoint (`fleet.history.verify`), and what was found.

``GET /api/history/checkpoint`` answers a regulator, a dispatcher or an administrator (a
contractor gets a 403: the check covers every unit). The dashboard's overview shows it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fleet.auth.roles import Role
from fleet.config import HistoryConfig
from fleet.read.shape import out, response, to_json, view_from
from fleet.store.chain import HistoryCheck
from fleet.store.worker import StoreWorker
from fleet.web.auth import AccessDeniedError, principal_of

Handler = Callable[[Request], Awaitable[Response]]


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


@response("HistoryCheck")
@dataclass(frozen=True)
class CheckView:
    """One kept verification of the chains against a signed checkpoint."""

    checked: str = out()
    source: Literal["serve", "cli"] = out("serve on its schedule, or the CLI")
    checkpoint_file: str = out()
    checkpoint_written: str | None = out("null when the checkpoint could not be read")
    units: int = out("units the checkpoint named", minimum=0)
    problems: int = out("problems found (0: intact)", minimum=0)
    intact: bool = out()
    summary: str = out("the first few problems, one a line")

    @classmethod
    def of(cls, check: HistoryCheck) -> CheckView:
        """One kept verification as the API shows it."""
        return view_from(cls, check)  # its source: serve or cli write it


@response("HistoryCheckpoint")
@dataclass(frozen=True)
class CheckpointView:
    """/api/history/checkpoint: the schedule and the last check."""

    scheduled: bool = out("serve checkpoints on a schedule")
    interval_s: float | None = out("null unless scheduled")
    last_check: CheckView | None = out()


def history_routes(
    store: StoreWorker | None, guarded: Callable[[Handler], Handler], history: HistoryConfig
) -> list[Route]:
    """The checkpoint route; ``history`` says whether serve checkpoints on a schedule."""

    async def checkpoint(request: Request) -> Response:
        principal = principal_of(request)
        if principal.role is Role.CONTRACTOR:
            raise AccessDeniedError(403, "a contractor may not read the fleet-wide history check")
        last = None if store is None else await store.call(lambda s: s.last_history_check())
        scheduled = history.checkpoint_file is not None
        return _JSON(
            to_json(
                CheckpointView(
                    scheduled=scheduled,
                    interval_s=history.checkpoint_interval_s if scheduled else None,
                    last_check=None if last is None else CheckView.of(last),
                )
            )
        )

    return [Route("/api/history/checkpoint", guarded(checkpoint))]
