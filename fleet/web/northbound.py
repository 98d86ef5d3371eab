"""``GET /api/northbound`` (issue 21): every regional platform's forwarding status and the
newest dead letters, for the administrators' dashboard page (static/northbound.js).
Administrators only: dead letters hold whole messages of every unit of the district."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fleet.clock import Clock
from fleet.northbound.views import DeadLetterView, NorthboundView, PlatformView
from fleet.read.shape import to_json
from fleet.store.base import Store
from fleet.store.northbound import NorthboundOutbox
from fleet.store.sql import SqlStore
from fleet.store.worker import StoreWorker
from fleet.web.auth import AccessDeniedError, principal_of

Handler = Callable[[Request], Awaitable[Response]]
# The dead letters the page lists (newest first); the CLI lists any number.
SHOWN_DEAD_LETTERS = 50


def northbound_view(store: Store, clock: Clock) -> NorthboundView:
    """Every platform the store knows, and its newest dead letters (on the store thread)."""
    assert isinstance(store, SqlStore)
    outbox = NorthboundOutbox(store)
    now = clock()
    platforms = tuple(PlatformView.of(outbox.status(p), now) for p in outbox.platforms())
    letters = outbox.dead_letters(None, None, SHOWN_DEAD_LETTERS)
    return NorthboundView(platforms, tuple(DeadLetterView.of(d) for d in letters))


def northbound_routes(
    store: StoreWorker, guarded: Callable[[Handler], Handler], clock: Clock
) -> list[Route]:
    """``GET /api/northbound``, administrators only (403 for anyone else)."""

    async def status(request: Request) -> Response:
        principal = principal_of(request)
        if not principal.can_admin():
            raise AccessDeniedError(
                403, f"a {principal.role.value} may not read the northbound forwarding"
            )
        view = await store.call(lambda s: northbound_view(s, clock))
        return JSONResponse(to_json(view))

    return [Route("/api/northbound", guarded(status))]
