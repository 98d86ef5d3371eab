"""The flight recorder on the JSON API (issue 16): an event's evidence, and a dispatcher's
"what is this car doing?" (its OpenAPI paths are in `fleet.web.openapi`).

- ``GET /api/events/{event_id}/evidence``: the event's Evidence (`EvidenceView`); its
  samples as CSV with ``?format=csv`` (as the other CSV routes: UTF-8 with a byte-order
  mark, formula-like cells made text).
- ``POST /api/units/{unit_id}/evidence-requests`` ``{"seconds": N}``: for the roles that
  may act on the unit's alarms. The request is written to the store ``pending`` (and who
  asked into the unit's history); the gateway holding the unit's agent stream, in this
  process or another (``serve --workers``), takes it within a poll
  (`fleet.ingest.evidence`). This handler waits up to `TAKE_WAIT_S` for that: 202 once it
  is sent, 409 naming why when the agent keeps no recorder or no process holds its
  stream (the request is then marked expired, so no late poll sends it); 429 naming it
  while the unit has a request in flight (pending or sent, unanswered, unexpired): one
  window at a time per car, however many ask.
- ``GET /api/evidence-requests/{request_id}``: the request, its status and, once the
  agent answered, its Evidence.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import math
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fleet.clock import Clock
from fleet.csv_cells import csv_text
from fleet.read.evidence_views import (
    EVIDENCE_CSV_COLUMNS,
    EvidenceReads,
    EvidenceRequestView,
    EvidenceView,
    UnreadableEvidenceError,
    evidence_csv_rows,
)
from fleet.read.scope import require_unit
from fleet.read.selection import BadRequestError
from fleet.read.shape import to_json
from fleet.read.views import ErrorReply
from fleet.store.base import Store
from fleet.store.evidence import EVIDENCE_POLL_S, EvidenceRequestRow, settle
from fleet.store.worker import StoreWorker
from fleet.web.auth import AccessDeniedError, principal_of, scope_of

Handler = Callable[[Request], Awaitable[Response]]

DEFAULT_REQUEST_SECONDS = 60
# The longest window a dispatcher may ask for; the agent answers with what its recorder
# holds (Evidence.truncated when that is less).
MAX_REQUEST_SECONDS = 600
# How long a sent request waits for the agent's answer before it reads as expired.
REQUEST_TTL_S = 120.0
# How long the POST waits for a gateway to take the request: several polls.
TAKE_WAIT_S = 8 * EVIDENCE_POLL_S
# The POSTs one user (with auth off: one client address) may have waiting for a gateway
# at once, in this process: each reads the store every `_RECHECK_S` until its request is
# taken, so a user asking for many cars at once must not multiply those reads.
ASKING_PER_USER = 4
_RECHECK_S = 0.05


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequestError('body: expected JSON {"seconds": N}') from None
    if not isinstance(body, dict):
        raise BadRequestError('body: expected a JSON object {"seconds": N}')
    return body


def _seconds(body: dict[str, Any]) -> int:
    seconds = body.get("seconds", DEFAULT_REQUEST_SECONDS)
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise BadRequestError(f'body: "seconds" must be a whole number, got {seconds!r}')
    if not 1 <= seconds <= MAX_REQUEST_SECONDS:
        raise BadRequestError(
            f'body: "seconds" must be between 1 and {MAX_REQUEST_SECONDS}, got {seconds}'
        )
    return seconds


def unreadable_as_500(handler: Handler) -> Handler:
    """``handler`` answering a stored Evidence that no longer decodes with a 500 naming
    it, instead of an unexplained server error."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except UnreadableEvidenceError as exc:
            return _JSON(to_json(ErrorReply(str(exc))), status_code=500)

    return run


def evidence_routes(
    store: StoreWorker | None, guarded: Callable[[Handler], Handler], clock: Clock
) -> list[Route]:
    """The routes of the flight recorder over ``store`` (a 400 naming the reason when
    built without one); ``guarded`` admits the caller, every read takes its scope."""
    reads = EvidenceReads(store) if store is not None else None
    asking: collections.Counter[str] = collections.Counter()

    def need() -> tuple[StoreWorker, EvidenceReads]:
        if store is None or reads is None:
            raise BadRequestError("the store is not open in this process")
        return store, reads

    async def event_evidence(request: Request) -> Response:
        _, evidence = need()
        event_id = str(request.path_params["event_id"])
        shape = request.query_params.get("format", "json")
        if shape not in ("json", "csv"):
            raise BadRequestError(f"format: {shape!r} is neither json nor csv")
        row = await evidence.event(scope_of(request), event_id)
        if row is None:
            return _JSON(to_json(ErrorReply(f"no evidence of event {event_id!r}")), status_code=404)
        found = row

        def render() -> Response:
            view = EvidenceView.of(found)
            if shape == "csv":
                return Response(
                    "\ufeff" + csv_text(EVIDENCE_CSV_COLUMNS, evidence_csv_rows(view)),
                    media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="evidence.csv"'},
                )
            return _JSON(to_json(view))

        # Off the event loop, which the agents' streams share: a window's samples take
        # long to decode and render (7,200: 0.4 s; 72,000: 5 s on the test machine).
        return await asyncio.to_thread(render)

    async def ask(request: Request) -> Response:
        worker, _ = need()
        unit_id = str(request.path_params["unit_id"])
        principal = principal_of(request)
        if not principal.can_act_on_alarms():
            raise AccessDeniedError(403, f"a {principal.role.value} may not ask a car for evidence")
        # A unit out of the caller's scope is answered as one nobody knows.
        await require_unit(worker, scope_of(request), unit_id)
        if await worker.get_unit(unit_id) is None:
            return _JSON(to_json(ErrorReply(f"unit {unit_id!r} unknown")), status_code=404)
        body = await _body(request)
        seconds = _seconds(body)
        by = principal.display_name or principal.username
        if not principal.username:  # auth off: the body names who asks, as for alarms
            named = body.get("by")
            if not isinstance(named, str) or not named.strip():
                raise BadRequestError('body: "by" must name who asks')
            by = named.strip()
        # The car's request in flight first (a read): asking again for a car already asked
        # is answered the same whatever else the user has asked for.
        now = clock()
        busy = await worker.call(lambda s: s.outstanding_evidence_request(unit_id, now))
        if busy is not None:
            return _busy(busy, now)
        who = principal.username or (request.client.host if request.client else "?")
        if asking[who] >= ASKING_PER_USER:
            reason = (
                f"{ASKING_PER_USER} evidence requests of yours are already waiting for their "
                "agents; ask again once one is sent"
            )
            retry = {"Retry-After": str(math.ceil(TAKE_WAIT_S))}
            return _JSON(to_json(ErrorReply(reason)), status_code=429, headers=retry)
        asking[who] += 1
        try:
            return await _ask(worker, unit_id, seconds, by)
        finally:
            asking[who] -= 1
            if asking[who] <= 0:
                del asking[who]

    async def _ask(worker: StoreWorker, unit_id: str, seconds: int, by: str) -> Response:
        request_id = uuid.uuid4().hex
        now = clock()
        expires = now + dt.timedelta(seconds=REQUEST_TTL_S)

        def ask_once(s: Store) -> EvidenceRequestRow:
            # One request a unit in flight: each costs the agent a window cut and sent
            # over its link and the fleet a stored Evidence, so a flood of POSTs must not
            # multiply them (tests/security/test_evidence_abuse.py). Checked and written
            # in one store call, so concurrent POSTs of this process cannot both pass.
            busy = s.outstanding_evidence_request(unit_id, now)
            if busy is not None:
                return busy
            return s.add_evidence_request(request_id, unit_id, seconds, by, now, expires)

        asked_already = await worker.call(ask_once)
        if asked_already.request_id != request_id:
            return _busy(asked_already, now)
        row = await _taken(worker, request_id, clock)
        if row.state == "sent":
            view = EvidenceRequestView.of(row, None, clock())
            return _JSON(to_json(view), status_code=202)
        return _JSON(to_json(ErrorReply(row.reason)), status_code=409)

    async def asked(request: Request) -> Response:
        _, evidence = need()
        request_id = str(request.path_params["request_id"])
        found = await evidence.request(scope_of(request), request_id)
        if found is None:
            return _JSON(
                to_json(ErrorReply(f"evidence request {request_id!r} unknown")), status_code=404
            )
        row, answer = found
        now = clock()
        # Off the event loop as above: the answer carries the Evidence's samples.
        return await asyncio.to_thread(
            lambda: _JSON(to_json(EvidenceRequestView.of(row, answer, now)))
        )

    return [
        Route("/api/events/{event_id:str}/evidence", guarded(unreadable_as_500(event_evidence))),
        Route("/api/units/{unit_id:str}/evidence-requests", guarded(ask), methods=["POST"]),
        Route("/api/evidence-requests/{request_id:str}", guarded(unreadable_as_500(asked))),
    ]


def _busy(outstanding: EvidenceRequestRow, now: dt.datetime) -> Response:
    """429 naming the unit's request in flight, Retry-After until it expires."""
    wait = max(1, math.ceil((outstanding.expires - now).total_seconds()))
    reason = (
        f"unit {outstanding.unit_id!r} already has evidence request "
        f"{outstanding.request_id} in flight (asked by {outstanding.requested_by}): read "
        f"GET /api/evidence-requests/{outstanding.request_id}, or ask again once it is "
        f"answered or in {wait} s"
    )
    return _JSON(to_json(ErrorReply(reason)), status_code=429, headers={"Retry-After": str(wait)})


async def _taken(store: StoreWorker, request_id: str, clock: Clock) -> EvidenceRequestRow:
    """Request ``request_id`` once a gateway settled it (sent or refused), or marked
    expired by this handler after `TAKE_WAIT_S` with no taker (no process holds the
    unit's agent stream)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TAKE_WAIT_S
    while True:
        row = await store.call(lambda s: s.evidence_request(request_id))
        assert row is not None  # written above; rows are never deleted
        if row.state != "pending":
            return row
        if loop.time() >= deadline:
            reason = (
                f"unit {row.unit_id!r}: its agent is not connected to the fleet (no "
                f"gateway took the request within {TAKE_WAIT_S:g} s)"
            )
            now = clock()
            await store.call(settle(request_id, "expired", now, reason))
            continue  # read again: a gateway may have taken it just before
        await asyncio.sleep(_RECHECK_S)
