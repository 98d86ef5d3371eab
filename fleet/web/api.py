"""The JSON API under /api/: the same data as FleetQuery, with the filters as query
parameters. Errors are ``{"error": "..."}`` with status 400 (bad parameter, named) or 404.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fleet.alarms.service import Lifecycle
from fleet.coverage import UnitStatus
from fleet.metrics import GatewayMetrics
from fleet.reads import BadRequestError, Reads, UnitFilter
from fleet.views import (
    coverage_change_json,
    coverage_groups_json,
    coverage_json,
    event_json,
    event_type_number,
    inventory_json,
    unit_json,
)
from fleet.web.lifecycle import lifecycle_routes
from fleet.web.openapi import openapi_spec

Handler = Callable[[Request], Awaitable[Response]]


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        # Street and building names are Chinese: keep them readable, not escaped.
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


def _flag(request: Request, name: str) -> bool:
    text = request.query_params.get(name, "").lower()
    if text in {"", "0", "false", "no"}:
        return False
    if text in {"1", "true", "yes"}:
        return True
    raise BadRequestError(f"{name}: expected true or false, got {text!r}")


def _int(request: Request, name: str, default: int) -> int:
    text = request.query_params.get(name, "")
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise BadRequestError(f"{name}: expected an integer, got {text!r}") from None


def _unit_filter(request: Request) -> UnitFilter:
    params = request.query_params
    status_text = params.get("status", "")
    try:
        status = UnitStatus(status_text) if status_text else None
    except ValueError:
        known = ", ".join(s.value for s in UnitStatus)
        raise BadRequestError(f"status: {status_text!r} is none of {known}") from None
    return UnitFilter(
        street=params.get("street", ""),
        building=params.get("building", ""),
        contractor=params.get("contractor", ""),
        firmware=params.get("firmware", ""),
        model=params.get("model", ""),
        status=status,
        monitored=_flag(request, "monitored"),
    )


def build_app(
    reads: Reads, metrics: GatewayMetrics, lifecycle: Lifecycle | None = None
) -> Starlette:
    """The ASGI app of the JSON API (and /metrics) over ``reads``; alarms, reports and
    histories over ``lifecycle`` (see `fleet.web.lifecycle`)."""

    def guarded(handler: Handler) -> Handler:
        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except BadRequestError as exc:
                metrics.bad_input.labels(kind="api_request").inc()
                return _JSON({"error": str(exc)}, status_code=400)

        return run

    async def units(request: Request) -> Response:
        page = await reads.units(
            _unit_filter(request),
            _int(request, "page_size", 0),
            request.query_params.get("page_token", ""),
        )
        return _JSON(
            {
                "units": [unit_json(u, s) for u, s in page.units],
                "next_page_token": page.next_token,
                "total": page.total,
            }
        )

    async def unit(request: Request) -> Response:
        unit_id = str(request.path_params["unit_id"])
        found = await reads.unit(unit_id)
        if found is None:
            return _JSON({"error": f"unit {unit_id!r} unknown"}, status_code=404)
        return _JSON(unit_json(*found))

    async def coverage(request: Request) -> Response:
        counts, groups = await reads.coverage(request.query_params.get("by", ""))
        body: dict[str, object] = dict(coverage_json(counts))
        if groups:
            body["groups"] = coverage_groups_json(groups)
        return _JSON(body)

    async def coverage_history(request: Request) -> Response:
        changes = await reads.coverage_history(
            request.query_params.get("unit", ""), _int(request, "limit", 0)
        )
        return _JSON({"history": [coverage_change_json(c) for c in changes]})

    async def firmware(request: Request) -> Response:
        inv, history = await reads.firmware(
            request.query_params.get("model", ""), request.query_params.get("history", "")
        )
        return _JSON(inventory_json(inv, history, violations_only=_flag(request, "violations")))

    async def events(request: Request) -> Response:
        type_text = request.query_params.get("type", "")
        try:
            type_number = event_type_number(type_text) if type_text else 0
        except ValueError as exc:
            raise BadRequestError(f"type: {exc}") from None
        found = await reads.events(
            request.query_params.get("unit", ""), type_number, _int(request, "limit", 0)
        )
        return _JSON({"events": [event_json(e) for e in found]})

    async def openapi(request: Request) -> Response:
        return _JSON(openapi_spec())

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/api/units", guarded(units)),
            Route("/api/units/{unit_id:str}", guarded(unit)),
            Route("/api/coverage", guarded(coverage)),
            Route("/api/coverage/history", guarded(coverage_history)),
            Route("/api/firmware", guarded(firmware)),
            Route("/api/events", guarded(events)),
            *lifecycle_routes(lifecycle, guarded),
            Route("/api/openapi.json", openapi),
            Route("/metrics", prometheus),
        ]
    )
