"""The history checkpoint over the JSON API: when the chains were last verified against a
signed checkpoint (`fleet.history.verify`), and what was found.

``GET /api/history/checkpoint`` answers a regulator, a dispatcher or an administrator (a
contractor gets a 403: the check covers every unit). The dashboard's overview shows it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fleet.auth.roles import Role
from fleet.config import HistoryConfig
from fleet.read.views import iso
from fleet.store.chain import HistoryCheck
from fleet.store.worker import StoreWorker
from fleet.web.auth import AccessDeniedError, principal_of

Handler = Callable[[Request], Awaitable[Response]]


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


def check_json(check: HistoryCheck | None) -> dict[str, object] | None:
    """One kept verification as the API shows it (None stays None)."""
    if check is None:
        return None
    return {
        "checked": iso(check.checked),
        "source": check.source,
        "checkpoint_file": check.checkpoint_file,
        "checkpoint_written": iso(check.checkpoint_written),
        "units": check.units,
        "problems": check.problems,
        "intact": check.intact,
        "summary": check.summary,
    }


def history_routes(
    store: StoreWorker | None, guarded: Callable[[Handler], Handler], history: HistoryConfig
) -> list[Route]:
    """The checkpoint route; ``history`` says whether serve checkpoints on a schedule."""

    async def checkpoint(request: Request) -> Response:
        principal = principal_of(request)
        if principal.role is Role.CONTRACTOR:
            raise AccessDeniedError(403, "a contractor may not read the fleet-wide history check")
        last = None if store is None else await store.call(lambda s: s.last_history_check())
        return _JSON(
            {
                "scheduled": history.checkpoint_file is not None,
                "interval_s": history.checkpoint_interval_s
                if history.checkpoint_file is not None
                else None,
                "last_check": check_json(last),
            }
        )

    return [Route("/api/history/checkpoint", guarded(checkpoint))]


_CHECK = {
    "type": "object",
    "properties": {
        "checked": {"type": "string"},
        "source": {"type": "string", "enum": ["serve", "cli"]},
        "checkpoint_file": {"type": "string"},
        "checkpoint_written": {"type": ["string", "null"]},
        "units": {"type": "integer", "minimum": 0},
        "problems": {"type": "integer", "minimum": 0},
        "intact": {"type": "boolean"},
        "summary": {"type": "string"},
    },
    "required": [
        "checked",
        "checkpoint_file",
        "checkpoint_written",
        "intact",
        "problems",
        "source",
        "summary",
        "units",
    ],
    "additionalProperties": False,
}
SCHEMAS: dict[str, Any] = {
    "HistoryCheckpoint": {
        "type": "object",
        "properties": {
            "scheduled": {"type": "boolean"},
            "interval_s": {"type": ["number", "null"]},
            "last_check": {**_CHECK, "type": ["object", "null"]},
        },
        "required": ["interval_s", "last_check", "scheduled"],
        "additionalProperties": False,
    }
}
PATHS: dict[str, Any] = {
    "/api/history/checkpoint": {
        "get": {
            "summary": "When the history chains were last verified against a signed checkpoint "
            "(by serve's schedule or `verify-history --checkpoint`), and what was found; "
            "regulator, dispatcher and administrator only",
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/HistoryCheckpoint"}
                        }
                    },
                },
                "403": {
                    "description": "a contractor",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
            },
        }
    }
}
