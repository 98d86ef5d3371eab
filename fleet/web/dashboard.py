"""The engineers' dashboard: the page and its assets (all shipped in the package, so it
runs with no internet), the login endpoints, the live-update stream and the per-unit
live data the unit page starts from.

The page is one HTML shell and a script (``static/app.js``) that renders every view
from the JSON API under /api/, in Chinese or English (``static/i18n.js``). Everything
it shows goes through the same access checks as the API, including the live stream.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from fleet.clock import Clock, utc_now
from fleet.metrics import GatewayMetrics
from fleet.read.scope import Scope
from fleet.read.shape import out, response, to_json
from fleet.read.unit_reads import UnitReads
from fleet.read.views import iso
from fleet.store.worker import StoreWorker
from fleet.web.auth import SESSION_COOKIE, Authenticator, principal_of, scope_of
from fleet.web.live import (
    LiveHub,
    LiveStreamResponse,
    TooManyStreamsError,
    UnitLiveView,
    car_state_view,
    counters_view,
    link_status_view,
    session_key,
)
from fleet.web.users import user_routes
from protos.liftwatch.v1 import records_pb2

Handler = Callable[[Request], Awaitable[Response]]

STATIC_DIR = Path(__file__).resolve().parent / "static"
# An SSE comment this often keeps proxies and the browser from timing the stream out.
KEEPALIVE_S = 15.0
# How long the browser waits before reconnecting a dropped stream (SSE "retry").
RECONNECT_MS = 1000
COUNTERS_POINTS = 500
# Content-Security-Policy: the page loads nothing but its own assets; no inline script.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


@response("Site")
@dataclass(frozen=True, slots=True)
class SiteSettings:
    """What the page needs to know about the site: its time zone (IANA name) and the
    language a new visitor sees first ("zh" or "en"); GET /api/site answers it."""

    time_zone: str = out("IANA time zone name", default="Asia/Shanghai")
    language: str = out("zh or en: the language a new visitor sees first", default="zh")


def _shell_headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-cache",
    }


def _session_of(request: Request) -> str:
    """The session a live stream counts against: the API token, else the login cookie."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return session_key("token", token.strip())
    cookie = request.cookies.get(SESSION_COOKIE, "")
    return session_key("cookie", cookie) if cookie else ""


def _address(request: Request) -> str:
    return request.client.host if request.client is not None else "?"


def dashboard_routes(
    *,
    store: StoreWorker,
    hub: LiveHub,
    auth: Authenticator | None,
    site: SiteSettings,
    metrics: GatewayMetrics,
    guarded: Callable[[Handler], Handler],
    clock: Clock = utc_now,
) -> list[BaseRoute]:
    """The dashboard's routes (with the administrators' users API); ``guarded`` admits
    the caller as the API does. Unit data is read through `UnitReads` with the caller's
    scope, and the live stream is scoped by the hub, message by message."""
    unit_reads = UnitReads(store)

    async def page(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers=_shell_headers())

    async def site_json(request: Request) -> Response:
        return JSONResponse(to_json(site))

    async def open_login(request: Request) -> Response:
        # auth off: every visitor is the administrator, say so to the page
        return JSONResponse(
            {
                "user": {
                    "username": "",
                    "role": "admin",
                    "contractor": "",
                    "display_name": "(auth disabled)",
                    "can_act": True,
                    "can_admin": True,
                },
                "csrf": "",
            }
        )

    async def live(request: Request) -> Response:
        principal = principal_of(request)
        try:
            subscription = hub.subscribe(
                # The hub passes a stream only the messages of units in this scope.
                Scope.of(principal).contractor,
                request.query_params.getlist("unit"),
                # With auth off every visitor is the same nameless administrator: each
                # client address then counts as one user.
                user=principal.username or f"address {_address(request)}",
                session=_session_of(request),
            )
        except TooManyStreamsError as exc:
            metrics.live_refused.inc()
            # The page's EventSource retries by itself; say when it is worth it.
            return JSONResponse(
                {"error": str(exc)},
                status_code=429,
                headers={"Retry-After": str(int(hub.limits.send_timeout_s) or 10)},
            )
        metrics.live_subscribers.set(hub.open_streams)

        def ended() -> None:
            metrics.live_subscribers.set(hub.open_streams)

        return LiveStreamResponse(  # type: ignore[return-value]
            hub,
            subscription,
            keepalive_s=KEEPALIVE_S,
            reconnect_ms=RECONNECT_MS,
            on_end=ended,
        )

    async def unit_live(request: Request) -> Response:
        unit_id = str(request.path_params["unit_id"])
        found = await unit_reads.live(scope_of(request), unit_id, COUNTERS_POINTS)
        car, links, counters = found.car, found.links, found.counters
        car_view = link_view = None
        if car is not None:
            car_view = car_state_view(
                unit_id, iso(car[0]), records_pb2.Record.FromString(car[1]).car_state
            )
        if links:
            at, payload = links[-1]
            link_view = link_status_view(
                unit_id, iso(at), records_pb2.Record.FromString(payload).link_status
            )
        body = to_json(
            UnitLiveView(
                unit_id,
                car_view,
                link_view,
                tuple(
                    counters_view(unit_id, iso(at), records_pb2.Record.FromString(payload).counters)
                    for at, payload in counters
                ),
            )
        )
        return Response(
            json.dumps(body, ensure_ascii=False, separators=(",", ":")),
            media_type="application/json",
        )

    login: Handler = auth.login if auth is not None else open_login
    logout: Handler = auth.logout if auth is not None else open_login
    me: Handler = auth.me if auth is not None else open_login
    return [
        Route("/", page),
        Route("/auth/login", login, methods=["POST"]),
        Route("/auth/logout", logout, methods=["POST"]),
        Route("/auth/me", me),
        Route("/api/site", site_json),
        Route("/api/live", guarded(live)),
        Route("/api/units/{unit_id:str}/live", guarded(unit_live)),
        *user_routes(store, clock, guarded),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
