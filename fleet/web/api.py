"""The JSON API under /api/: the same data as FleetQuery, with the filters as query
parameters. Errors are ``{"error": "..."}`` with status 400 (bad parameter, named) or 404.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from fleet.alarms.service import Lifecycle
from fleet.clock import Clock, utc_now
from fleet.config import HistoryConfig, ReportsConfig
from fleet.csv_cells import csv_text
from fleet.metrics import GatewayMetrics
from fleet.read.scope import HiddenUnitError, OutOfScopeError
from fleet.read.selection import BadRequestError, Reads, UnitFilter
from fleet.read.shape import to_json
from fleet.read.views import (
    EVENT_TABLE_COLUMNS,
    CoverageChangeView,
    CoverageHistoryView,
    EventsView,
    EventView,
    UnitPageView,
    UnitView,
    coverage_view,
    event_cells,
    event_type_number,
    inventory_json,
    unit_json,
)
from fleet.reports.maintenance_config import MaintenanceConfig
from fleet.reports.plan_config import PlanConfig, PublicationConfig
from fleet.store.base import EventRow, UnitRow
from fleet.store.worker import StoreWorker
from fleet.units.coverage import UnitStatus
from fleet.web.auth import OPEN_PRINCIPAL, AccessDeniedError, Authenticator, scope_of
from fleet.web.configs import config_routes
from fleet.web.dashboard import SiteSettings, dashboard_routes
from fleet.web.evidence import evidence_routes
from fleet.web.headers import SecurityHeaders
from fleet.web.history import history_routes
from fleet.web.lifecycle import lifecycle_routes
from fleet.web.live import LiveHub
from fleet.web.maintenance import maintenance_routes
from fleet.web.northbound import northbound_routes
from fleet.web.openapi import openapi_spec
from fleet.web.params import integer_param
from fleet.web.publication import publication_routes
from fleet.web.rollouts import rollout_routes

Handler = Callable[[Request], Awaitable[Response]]


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        # Street and building names are Chinese: keep them readable, not escaped.
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


log = logging.getLogger(__name__)

# What a store raises when it cannot read or write now, whatever the request: SQLite's
# OperationalError (database or disk is full, disk I/O error, locked past busy_timeout),
# psycopg's (the connection is gone, the server's disk is full).
STORE_FAULTS: tuple[type[Exception], ...] = (sqlite3.OperationalError,)
with contextlib.suppress(ImportError):  # PostgreSQL is an extra
    import psycopg

    STORE_FAULTS += (psycopg.OperationalError,)


def _flag(request: Request, name: str) -> bool:
    text = request.query_params.get(name, "").lower()
    if text in {"", "0", "false", "no"}:
        return False
    if text in {"1", "true", "yes"}:
        return True
    raise BadRequestError(f"{name}: expected true or false, got {text!r}")


def _int(request: Request, name: str, default: int) -> int:
    # Up to a 32-bit count: the reads clamp or refuse what they cannot serve.
    return integer_param(name, request.query_params.get(name, ""), default, maximum=2**31 - 1)


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
        text=params.get("q", "").strip(),
    )


UNIT_CSV_COLUMNS = (
    "unit_id",
    "status",
    "building",
    "address",
    "street",
    "contractor",
    "model",
    "firmware",
    "agent_id",
    "last_seen",
)


def _csv(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """``rows`` under a ``columns`` header as CSV, None as an empty cell (a UTF-8
    byte-order mark first, so that spreadsheet programs on Chinese Windows read the
    addresses right); a cell a spreadsheet would take for a formula is made text
    (`fleet.csv_cells`)."""
    return "\ufeff" + csv_text(columns, rows)


def units_csv(units: Sequence[tuple[UnitRow, UnitStatus]]) -> str:
    """The unit list as CSV."""
    rendered = (unit_json(unit, status) for unit, status in units)
    return _csv(UNIT_CSV_COLUMNS, ([row[c] for c in UNIT_CSV_COLUMNS] for row in rendered))


def events_csv(events: Sequence[EventRow]) -> str:
    """Events as CSV, `EVENT_TABLE_COLUMNS` (the CLI table's), with class and codes."""
    return _csv(EVENT_TABLE_COLUMNS, (event_cells(e) for e in events))


def build_app(
    reads: Reads,
    metrics: GatewayMetrics,
    lifecycle: Lifecycle | None = None,
    *,
    auth: Authenticator | None = None,
    hub: LiveHub | None = None,
    refresh_scope: Callable[[], Awaitable[None]] | None = None,
    site: SiteSettings | None = None,
    store: StoreWorker | None = None,
    reports: ReportsConfig | None = None,
    history: HistoryConfig | None = None,
    clock: Clock = utc_now,
    hsts_max_age_s: int = 0,
    metrics_token: str = "",
    serve_metrics: bool = True,
    plan: PlanConfig | None = None,
    publication: PublicationConfig | None = None,
    maintenance: MaintenanceConfig | None = None,
) -> Starlette:
    """The ASGI app of the JSON API (and /metrics, unless ``serve_metrics`` is False: it
    has a listener of its own, see `metrics_app`) over ``reads``; alarms, reports and
    histories over ``lifecycle`` (see `fleet.web.lifecycle`); the dashboard (see
    `fleet.web.dashboard`) when ``site``, ``store`` and ``hub`` are given.

    Every /api/ route but the OpenAPI spec admits the caller through ``auth`` (None:
    auth is off, everyone acts as an administrator). The routes read through ``reads``
    and `fleet.read.unit_reads.UnitReads` with the caller's scope (`scope_of`), which
    keep a contractor to its own units (`fleet.read.scope`); ``refresh_scope`` (when
    given) makes the live hub's unit -> contractor map current before each request of a
    contractor (`fleet.web.scope`), so that open streams follow a reassignment at once."""

    def guarded(handler: Handler) -> Handler:
        async def run(request: Request) -> Response:
            try:
                if auth is None:
                    request.state.principal = OPEN_PRINCIPAL
                else:
                    principal = await auth.admit(request)
                    if refresh_scope is not None and principal.unit_scope():
                        await refresh_scope()
                return await handler(request)
            except BadRequestError as exc:
                metrics.bad_input.labels(kind="api_request").inc()
                return _JSON({"error": str(exc)}, status_code=400)
            except (AccessDeniedError, OutOfScopeError) as exc:
                metrics.access_denied.labels(status=str(exc.status)).inc()
                return _JSON({"error": str(exc)}, status_code=exc.status)
            except HiddenUnitError as exc:
                # The same answer as for a unit nobody knows: a contractor learns nothing.
                return _JSON({"error": str(exc)}, status_code=exc.status)
            except STORE_FAULTS as exc:
                # The store cannot write now (a full disk, an I/O error, a lost database
                # connection), not the request's fault: 503 naming it, counted, logged
                # (tests/security/test_fleet_disk_full.py).
                metrics.store_errors.inc()
                log.error("%s %s: the store failed: %s", request.method, request.url.path, exc)
                return _JSON({"error": f"the fleet's store failed: {exc}"}, status_code=503)

        return run

    async def units(request: Request) -> Response:
        if request.query_params.get("format", "json") == "csv":
            everything = await reads.units(scope_of(request), _unit_filter(request))
            return Response(
                units_csv(everything.units),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": 'attachment; filename="units.csv"'},
            )
        order = request.query_params.get("order", "unit")
        if order not in {"unit", "urgency"}:
            raise BadRequestError(f"order: {order!r} is neither unit nor urgency")
        page = await reads.units(
            scope_of(request),
            _unit_filter(request),
            _int(request, "page_size", 0),
            request.query_params.get("page_token", ""),
            urgent_first=order == "urgency",
        )
        units = tuple(UnitView.of(u, s) for u, s in page.units)
        return _JSON(to_json(UnitPageView(units, page.next_token, page.total)))

    async def unit(request: Request) -> Response:
        unit_id = str(request.path_params["unit_id"])
        found = await reads.unit(scope_of(request), unit_id)
        if found is None:
            # The same answer as for a unit nobody knows: a contractor learns nothing.
            return _JSON({"error": f"unit {unit_id!r} unknown"}, status_code=404)
        return _JSON(unit_json(*found))

    async def coverage(request: Request) -> Response:
        counts, groups = await reads.coverage(scope_of(request), request.query_params.get("by", ""))
        # Groups only when asked for and found, as before.
        return _JSON(to_json(coverage_view(counts, groups or None)))

    async def coverage_history(request: Request) -> Response:
        changes = await reads.coverage_history(
            scope_of(request), request.query_params.get("unit", ""), _int(request, "limit", 0)
        )
        return _JSON(to_json(CoverageHistoryView(tuple(CoverageChangeView.of(c) for c in changes))))

    async def firmware(request: Request) -> Response:
        inv, history = await reads.firmware(
            scope_of(request),
            request.query_params.get("model", ""),
            request.query_params.get("history", ""),
        )
        return _JSON(inventory_json(inv, history, violations_only=_flag(request, "violations")))

    async def events(request: Request) -> Response:
        type_text = request.query_params.get("type", "")
        try:
            type_number = event_type_number(type_text) if type_text else 0
        except ValueError as exc:
            raise BadRequestError(f"type: {exc}") from None
        found = await reads.events(
            scope_of(request),
            request.query_params.get("unit", ""),
            type_number,
            _int(request, "limit", 0),
        )
        if request.query_params.get("format", "json") == "csv":
            return Response(
                events_csv(found),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": 'attachment; filename="events.csv"'},
            )
        return _JSON(to_json(EventsView(tuple(EventView.of(e) for e in found))))

    async def openapi(request: Request) -> Response:
        return _JSON(openapi_spec())

    dashboard: list[BaseRoute] = []
    if site is not None and store is not None and hub is not None:
        dashboard = dashboard_routes(
            store=store,
            hub=hub,
            auth=auth,
            site=site,
            metrics=metrics,
            guarded=guarded,
            clock=clock,
        )
    return Starlette(
        routes=[
            Route("/api/units", guarded(units)),
            Route("/api/units/{unit_id:str}", guarded(unit)),
            Route("/api/coverage", guarded(coverage)),
            Route("/api/coverage/history", guarded(coverage_history)),
            Route("/api/firmware", guarded(firmware)),
            Route("/api/events", guarded(events)),
            *lifecycle_routes(
                lifecycle,
                guarded,
                hub,
                reports=reports,
                time_zone=(site or SiteSettings()).time_zone,
                language=(site or SiteSettings()).language,
            ),
            *history_routes(store, guarded, history or HistoryConfig()),
            *publication_routes(
                store,
                guarded,
                clock,
                plan=plan or PlanConfig(),
                publication=publication or PublicationConfig(),
                reports=reports or ReportsConfig(),
                language=(site or SiteSettings()).language,
            ),
            *evidence_routes(store, guarded, clock),
            *maintenance_routes(
                store,
                guarded,
                clock,
                config=maintenance,
                time_zone=(site or SiteSettings()).time_zone,
                language=(site or SiteSettings()).language,
            ),
            *([] if store is None else northbound_routes(store, guarded, clock)),
            *([] if store is None else rollout_routes(store, guarded)),
            *([] if store is None else config_routes(store, guarded)),
            Route("/api/openapi.json", openapi),
            *([metrics_route(metrics, metrics_token)] if serve_metrics else []),
            *dashboard,
        ],
        middleware=[Middleware(SecurityHeaders, hsts_max_age_s=hsts_max_age_s)],
    )


def metrics_route(metrics: GatewayMetrics, token: str = "") -> Route:
    """``GET /metrics`` (Prometheus text); with ``token``, only for a request carrying
    ``Authorization: Bearer TOKEN`` (401 otherwise)."""
    expected = f"Bearer {token}".encode()

    async def prometheus(request: Request) -> Response:
        if token:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                metrics.access_denied.labels(status="401").inc()
                return _JSON(
                    {"error": "/metrics needs Authorization: Bearer <[http] metrics_token_file>"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", prometheus)


def metrics_app(metrics: GatewayMetrics, token: str = "", hsts_max_age_s: int = 0) -> Starlette:
    """The app of ``[http] metrics_listen``: /metrics alone (see `metrics_route`)."""
    return Starlette(
        routes=[metrics_route(metrics, token)],
        middleware=[Middleware(SecurityHeaders, hsts_max_age_s=hsts_max_age_s)],
    )
