"""The lifecycle side of the JSON API: alarms and their disposal steps, the reports, and
a unit's tamper-evident history. Routes and their OpenAPI paths live here together."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import zoneinfo
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fleet.alarms.crew import CrewError, crew_and_eta
from fleet.alarms.service import Lifecycle
from fleet.auth.roles import Principal
from fleet.config import ReportsConfig
from fleet.read.lifecycle_views import (
    AlarmCountView,
    AlarmsView,
    AlarmView,
    HistoryEntryView,
    ProblemView,
    UnitHistoryView,
    alarm_json,
)
from fleet.read.selection import BadRequestError
from fleet.read.shape import to_json
from fleet.read.unit_reads import UnitReads
from fleet.reports.claims import (
    ClaimsAuditView,
    ClaimsError,
    VerdictView,
    audit_claim,
    language_of,
    parse_claims,
    problem,
)
from fleet.reports.compute import fault_rate_report, scorecard_report, service_life_report
from fleet.reports.fault_rate import GROUPS, Period, period, rate_csv
from fleet.reports.view import REPORT_ROWS, ReportRow, report_view
from fleet.store.base import (
    AlarmActionError,
    AlarmReasonRequiredError,
    EventRow,
    UnitRow,
)
from fleet.store.retention import StateHour
from fleet.store.worker import StoreWorker
from fleet.web.auth import AccessDeniedError, principal_of, scope_of
from fleet.web.live import LiveHub
from fleet.web.params import integer_param, positive_param

Handler = Callable[[Request], Awaitable[Response]]
# URL action -> store action
ACTIONS = {
    "ack": "ack",
    "dispatch": "dispatch",
    "on-site": "on_site",
    "resolve": "resolve",
    "false-alarm": "false_alarm",
}
# A claims audit: the CLI's defaults (`liftwatch-fleet audit claims`), and a bound on the
# upload (a year of one contractor's claims is far below it).
CLAIM_WINDOW_MIN = 30.0
CLAIM_MAX_GAP_S = 60.0
MAX_CLAIMS_BYTES = 2 * 1024 * 1024
# The longest reason for closing an alarm while its event is raised (a sentence or two).
MAX_REASON_CHARS = 1000


class StoreThreadReads:
    """`ClaimReads` for a thread off the event loop: each read runs on the store thread,
    queued behind whatever ingest submitted, and the caller computes on its own thread."""

    def __init__(self, store: StoreWorker) -> None:
        self._store = store

    def unit_events(self, unit_id: str, since: dt.datetime, until: dt.datetime) -> list[EventRow]:
        """See `Store.unit_events`."""
        return self._store.call_blocking(lambda s: s.unit_events(unit_id, since, until))

    def get_unit(self, unit_id: str) -> UnitRow | None:
        """See `Store.get_unit`."""
        return self._store.call_blocking(lambda s: s.get_unit(unit_id))

    def record_times(
        self, unit_id: str, agent_id: str, since: dt.datetime, until: dt.datetime
    ) -> list[dt.datetime]:
        """See `Store.record_times`."""
        return self._store.call_blocking(lambda s: s.record_times(unit_id, agent_id, since, until))

    def state_hours(self, unit_id: str, since: dt.datetime, until: dt.datetime) -> list[StateHour]:
        """See `Store.state_hours`."""
        return self._store.call_blocking(lambda s: s.state_hours(unit_id, since, until))


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


def _date(request: Request, name: str) -> dt.date | None:
    text = request.query_params.get(name, "")
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise BadRequestError(f"{name}: expected a date YYYY-MM-DD, got {text!r}") from None


def _period(request: Request, today: dt.date) -> Period:
    try:
        return period(_date(request, "since"), _date(request, "until"), today)
    except ValueError as exc:
        raise BadRequestError(str(exc)) from None


def _positive(request: Request, name: str, default: float) -> float:
    # A claim window of up to a year either side: far beyond any use, far below overflow.
    text = request.query_params.get(name, "")
    return positive_param(name, text, default, maximum=366 * 24 * 3600)


def _alarm_id(request: Request) -> int:
    return integer_param("alarm id", str(request.path_params["alarm_id"]), 0, minimum=1)


async def _actor(request: Request, principal: Principal) -> str:
    """Who the history records for an action: the logged-in user; with auth off, the
    ``by`` of the JSON body (required then)."""
    if principal.username:
        return principal.display_name or principal.username
    try:
        body = await request.json()
    except ValueError:
        raise BadRequestError('body: expected JSON {"by": "NAME"}') from None
    by = body.get("by") if isinstance(body, dict) else None
    if not isinstance(by, str) or not by.strip():
        raise BadRequestError('body: "by" must name who acts')
    return by


async def _reason(request: Request) -> str:
    """The ``reason`` of an alarm action's JSON body ("" when the body or it is absent)."""
    raw = await request.body()
    if not raw.strip():
        return ""
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequestError('body: expected JSON {"by": "NAME", "reason": "TEXT"}') from None
    reason = body.get("reason", "") if isinstance(body, dict) else ""
    if not isinstance(reason, str):
        raise BadRequestError('body: "reason" must be text')
    if len(reason) > MAX_REASON_CHARS:
        raise BadRequestError(f'body: "reason" is longer than {MAX_REASON_CHARS} characters')
    return reason


async def _crew(
    request: Request, now: dt.datetime, zone: zoneinfo.ZoneInfo
) -> tuple[str, dt.datetime]:
    """The ``crew`` and the absolute ETA of a dispatch action's JSON body: ``eta_minutes``
    from now or ``eta_at``, a clock time in the site's ``zone`` (see
    `fleet.alarms.crew.crew_and_eta`, which the CLI uses too)."""
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise BadRequestError('body: expected JSON {"crew": "WHO", "eta_minutes": N}') from None
    body = body if isinstance(body, dict) else {}
    try:
        return crew_and_eta(
            body.get("crew"), body.get("eta_minutes"), body.get("eta_at"), now, zone
        )
    except CrewError as exc:
        raise BadRequestError(f"body: {exc}") from None


def lifecycle_routes(
    lifecycle: Lifecycle | None,
    guarded: Callable[[Handler], Handler],
    hub: LiveHub | None = None,
    *,
    reports: ReportsConfig | None = None,
    time_zone: str = "Asia/Shanghai",
    language: str = "zh",
) -> list[Route]:
    """The routes of this side (a 400 naming the reason when built without a lifecycle).

    ``guarded`` admits the caller; every read goes through `UnitReads` with the caller's
    scope (a contractor: only its own units). Alarm actions tell ``hub`` so that open
    pages refresh.
    The fault-rate report ranks by ``reports``; a claim time without a UTC offset is read
    in the site's ``time_zone``; claim reasons are in the reader's language (``lang``,
    else Accept-Language, else the site's ``language``).
    """
    rules = reports or ReportsConfig()
    site_zone = zoneinfo.ZoneInfo(time_zone)
    audits = asyncio.Semaphore(1)

    unit_reads = UnitReads(lifecycle.store) if lifecycle is not None else None

    def need() -> tuple[Lifecycle, UnitReads]:
        if lifecycle is None or unit_reads is None:
            raise BadRequestError("the lifecycle side is not running in this process")
        return lifecycle, unit_reads

    async def alarms(request: Request) -> Response:
        life, reads = need()
        open_text = request.query_params.get("open", "").lower()
        if open_text not in {"", "0", "1", "true", "false", "yes", "no"}:
            raise BadRequestError(f"open: expected true or false, got {open_text!r}")
        limit = integer_param("limit", request.query_params.get("limit", ""), 0)
        found = await reads.alarms(
            scope_of(request),
            open_only=open_text in {"1", "true", "yes"},
            unit_id=request.query_params.get("unit", ""),
            limit=limit,
        )
        now = life.clock()
        return _JSON(to_json(AlarmsView(tuple(AlarmView.of(a, now) for a in found))))

    async def alarm_count(request: Request) -> Response:
        _, reads = need()
        found = await reads.alarms(scope_of(request), open_only=True)
        return _JSON(to_json(AlarmCountView.of(found)))

    async def alarm(request: Request) -> Response:
        life, reads = need()
        alarm_id = _alarm_id(request)
        found = await reads.alarm(scope_of(request), alarm_id)
        if found is None:
            return _JSON({"error": f"alarm {alarm_id} does not exist"}, status_code=404)
        return _JSON(alarm_json(found, life.clock()))

    async def action(request: Request) -> Response:
        life, reads = need()
        alarm_id = _alarm_id(request)
        name = str(request.path_params["action"])
        if name not in ACTIONS:
            raise BadRequestError(f"action {name!r} unknown; known: {', '.join(ACTIONS)}")
        principal = principal_of(request)
        if not principal.can_act_on_alarms():
            raise AccessDeniedError(403, f"a {principal.role.value} may not act on alarms")
        # One lookup for reading and for acting: an alarm of a unit the caller may not
        # see does not exist for it.
        if await reads.alarm(scope_of(request), alarm_id) is None:
            return _JSON({"error": f"alarm {alarm_id} does not exist"}, status_code=404)
        by = await _actor(request, principal)
        reason = await _reason(request)
        now = life.clock()
        crew, eta = await _crew(request, now, site_zone) if name == "dispatch" else ("", None)
        try:
            row = await life.store.call(
                lambda s: s.alarm_action(alarm_id, ACTIONS[name], by, now, reason, crew, eta)
            )
        except AlarmReasonRequiredError as exc:
            return _JSON({"error": str(exc)}, status_code=400)
        except AlarmActionError as exc:
            status = 404 if "does not exist" in str(exc) else 409
            return _JSON({"error": str(exc)}, status_code=status)
        life.dispatcher.wake()
        if hub is not None:
            hub.alarms_changed(row.unit_id)
        return _JSON(alarm_json(row, now))

    async def report(request: Request) -> Response:
        life, reads = need()
        name = str(request.path_params["report"])
        now = life.clock()
        span = _period(request, now.date())
        rows: Sequence[ReportRow]
        if name == "fault-rate":
            by = request.query_params.get("by", "unit")
            if by not in GROUPS:
                raise BadRequestError(f"by: {by!r} is none of {', '.join(GROUPS)}")
            rates = await life.store.call(lambda s: fault_rate_report(s, by, span, rules, now))
            rates = await reads.report_rows(scope_of(request), name, by, rates)
            if request.query_params.get("format", "json") == "csv":
                # A byte-order mark first: spreadsheets on Chinese Windows then read UTF-8.
                body = "\ufeff" + rate_csv(rates, span, rules)
                return Response(body, media_type="text/csv; charset=utf-8")
            rows = rates
        elif name == "service-life":
            rows = await life.store.call(lambda s: service_life_report(s, span, now.date(), rules))
        elif name == "scorecard":
            thresholds = life.thresholds
            rows = await life.store.call(lambda s: scorecard_report(s, span, now, thresholds))
        else:
            return _JSON(
                {"error": f"report {name!r} unknown; known: {', '.join(REPORT_ROWS)}"},
                status_code=404,
            )
        if name != "fault-rate":  # fault-rate's are scoped above, by its grouping
            rows = await reads.report_rows(scope_of(request), name, "", rows)
        return _JSON(to_json(report_view(name, span, rows, rules)))

    async def claims(request: Request) -> Response:
        life, reads = need()
        window = dt.timedelta(minutes=_positive(request, "window_min", CLAIM_WINDOW_MIN))
        max_gap = dt.timedelta(seconds=_positive(request, "max_gap_s", CLAIM_MAX_GAP_S))
        # serve refuses a longer body before reading it ([http] max_upload_bytes, see
        # fleet.web.http.BodyLimit); this is the bound of an app served some other way.
        body = await request.body()
        if len(body) > MAX_CLAIMS_BYTES:
            return _JSON(
                {"error": f"body: at most {MAX_CLAIMS_BYTES} bytes of CSV"}, status_code=413
            )
        lang = language_of(
            request.query_params.get("lang", ""),
            request.headers.get("accept-language", ""),
            language,
        )
        try:
            text = body.decode("utf-8-sig")
            stream = io.StringIO(text, newline="")
            parsed, problems = parse_claims(stream, "upload", site_zone, lang)
        except (UnicodeDecodeError, csv.Error, ClaimsError) as exc:
            raise BadRequestError(f"body: {exc}") from None
        # A contractor audits its own units' claims: another's unit is "unknown" to it.
        mine, others = await reads.split_by_unit(scope_of(request), parsed, lambda c: c.unit_id)
        problems += [problem(c.line, lang, "unit_unknown", unit=c.unit_id) for c in others]
        # Computed on a thread of its own, one audit at a time: the store thread only runs
        # its reads, one by one between ingest's group commits, never the whole audit.
        claim_reads = StoreThreadReads(life.store)
        async with audits:
            verdicts = await asyncio.to_thread(
                lambda: tuple(
                    VerdictView.of(audit_claim(claim_reads, c, window, max_gap), lang, site_zone)
                    for c in mine
                )
            )
        by_line = tuple(sorted(problems, key=lambda p: p.line))
        return _JSON(to_json(ClaimsAuditView(lang, time_zone, verdicts, by_line)))

    async def history(request: Request) -> Response:

        _, reads = need()
        unit_id = str(request.path_params["unit_id"])
        # The unit's chain, and its events and alarms rows checked against it.
        found = await reads.history(scope_of(request), unit_id)
        rows, heads, problems = found.rows, found.heads, found.problems
        view = UnitHistoryView(
            unit_id=unit_id,
            entries=tuple(HistoryEntryView.of(r) for r in rows),
            head=f"{heads[0].seq}:{heads[0].hash}" if heads else None,
            intact=not problems,
            problems=tuple(ProblemView.of(p) for p in problems),
        )
        return _JSON(to_json(view))

    return [
        Route("/api/alarms", guarded(alarms)),
        Route("/api/alarms/count", guarded(alarm_count)),
        Route("/api/alarms/{alarm_id:str}", guarded(alarm)),
        Route("/api/alarms/{alarm_id:str}/{action:str}", guarded(action), methods=["POST"]),
        Route("/api/reports/claims", guarded(claims), methods=["POST"]),
        Route("/api/reports/{report:str}", guarded(report)),
        Route("/api/units/{unit_id:str}/history", guarded(history)),
    ]
