"""The OpenAPI 3.1 description of the JSON API: a compact route table (path, method,
summary, parameters, answers) whose response schemas are generated from the response
dataclasses (`fleet.read.shape`: each shape is defined once, and the JSON is made from
the same definition).

tests/fleet/test_api.py checks that every route is described and that sample responses
match these schemas, so the spec cannot drift from the code unnoticed.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Imported for their response dataclasses, which register their schemas.
import fleet.read.evidence_views
import fleet.read.lifecycle_views
import fleet.read.maintenance
import fleet.read.views
import fleet.reports.claims
import fleet.reports.fault_rate
import fleet.reports.plan
import fleet.reports.publication
import fleet.reports.scorecard
import fleet.reports.service_life
import fleet.reports.view
import fleet.web.configs
import fleet.web.dashboard
import fleet.web.history
import fleet.web.live
import fleet.web.northbound
import fleet.web.rollouts
import fleet.web.users
from fleet.alarms.crew import MAX_ETA_MINUTES
from fleet.read.shape import component_schemas, name_of
from fleet.store.base import MAX_CREW_CHARS
from fleet.units.coverage import UnitStatus
from fleet.web.evidence import DEFAULT_REQUEST_SECONDS, MAX_REQUEST_SECONDS
from fleet.web.lifecycle import MAX_REASON_CHARS

_STR: dict[str, Any] = {"type": "string"}
_INT: dict[str, Any] = {"type": "integer"}
_BOOL: dict[str, Any] = {"type": "boolean"}
# Numbers as `fleet.web.params` reads them (a bad one is a 400 naming the parameter).
_COUNT: dict[str, Any] = {"type": "integer", "minimum": 0}
_ALARM_ID: dict[str, Any] = {"type": "integer", "minimum": 1}
_POSITIVE: dict[str, Any] = {"type": "number", "exclusiveMinimum": 0}
STATUSES = [s.value for s in UnitStatus]


@dataclass(frozen=True)
class Param:
    """One query parameter (or, with ``where="path"``, a required path parameter)."""

    name: str
    description: str = ""
    schema: Mapping[str, Any] = field(default_factory=lambda: _STR)
    where: str = "query"

    def spec(self) -> dict[str, Any]:
        """The OpenAPI parameter object."""
        if self.where == "path":
            return {"name": self.name, "in": "path", "required": True, "schema": self.schema}
        return {
            "name": self.name,
            "in": "query",
            "required": False,
            "description": self.description,
            "schema": dict(self.schema),
        }


@dataclass(frozen=True)
class Operation:
    """One route of the table: ``ok`` names the response component of its success answer
    (a schema of its own where no response dataclass describes it), ``errors`` its error
    answers (each an `Error`), ``csv`` whether ``format=csv`` answers text/csv too."""

    method: str
    path: str
    summary: str
    ok: str | Mapping[str, Any]
    params: tuple[Param, ...] = ()
    errors: Mapping[int, str] = field(default_factory=dict)
    ok_status: int = 200
    ok_description: str = "OK"
    ok_media: str = "application/json"
    csv: bool = False
    description: str = ""
    body: Mapping[str, Any] | None = None

    def spec(self) -> dict[str, Any]:
        """The OpenAPI operation object."""
        schema = _ref(self.ok) if isinstance(self.ok, str) else dict(self.ok)
        content: dict[str, Any] = {self.ok_media: {"schema": schema}}
        if self.csv:
            content["text/csv"] = {"schema": _STR}
        responses: dict[str, Any] = {
            str(self.ok_status): {"description": self.ok_description, "content": content}
        }
        for code, why in self.errors.items():
            responses[str(code)] = {
                "description": why,
                "content": {"application/json": {"schema": _ref("Error")}},
            }
        operation: dict[str, Any] = {"summary": self.summary}
        if self.description:
            operation["description"] = self.description
        if self.params:
            operation["parameters"] = [p.spec() for p in self.params]
        if self.body is not None:
            operation["requestBody"] = dict(self.body)
        operation["responses"] = responses
        return operation


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


# Each report's row component (fleet.reports.view.REPORT_ROWS), for tests and clients.
REPORT_ROWS = {report: name_of(row) for report, row in fleet.reports.view.REPORT_ROWS.items()}
_BAD = {400: "bad parameter"}
_BAD_OR_MISSING = {400: "bad parameter", 404: "not found"}
_PERIOD = (
    Param("since", "first day, YYYY-MM-DD (default: a year before until)"),
    Param("until", "day after the last, YYYY-MM-DD (default: tomorrow)"),
)

ROUTES: tuple[Operation, ...] = (
    Operation(
        "get",
        "/api/units",
        "Units (registered or ever reported), by unit_id or (order=urgency) what matters first",
        "UnitPage",
        (
            Param("street", "sub-district (街道) as registered"),
            Param("building", "building as registered"),
            Param("contractor", "maintenance contractor as registered"),
            Param("model", "controller model (reported, else registered)"),
            Param("firmware", "controller firmware version"),
            Param("status", "live coverage status", {"type": "string", "enum": STATUSES}),
            Param("monitored", "only units that have reported", _BOOL),
            Param("page_size", "units per page (0 = all, at most 10000)", _INT),
            Param("page_token", "next_page_token of the previous page"),
            Param(
                "order",
                "unit (default): by unit_id; urgency: open alarms, then link down (blind), "
                "offline, stale, online, never seen, by unit_id within each",
                {"type": "string", "enum": ["unit", "urgency"]},
            ),
            Param("q", "text anywhere in the unit id, building, address or street"),
            Param("format", "json (default) or csv: every matching unit as CSV, no paging"),
        ),
        _BAD,
    ),
    Operation(
        "get",
        "/api/units/{unit_id}",
        "One unit",
        "Unit",
        (Param("unit_id", where="path"),),
        {404: "not found"},
    ),
    Operation(
        "get",
        "/api/coverage",
        "District coverage counts, optionally per group",
        "Coverage",
        (
            Param(
                "by",
                "also count per group",
                {"type": "string", "enum": ["street", "building", "contractor"]},
            ),
        ),
        _BAD,
    ),
    Operation(
        "get",
        "/api/coverage/history",
        "Coverage transitions, oldest first",
        "CoverageHistory",
        (
            Param("unit", "only this unit_id"),
            Param("limit", "newest N (default 100, at most 10000)", _INT),
        ),
        _BAD,
    ),
    Operation(
        "get",
        "/api/firmware",
        "Firmware and agent versions by model, policy violations, history",
        "Firmware",
        (
            Param("model", "only this controller model"),
            Param("violations", "only the violations (and history)", _BOOL),
            Param("history", "the firmware / agent version history of this unit_id"),
        ),
        _BAD,
    ),
    Operation(
        "get",
        "/api/events",
        "Stored events, the newest N returned oldest first",
        "Events",
        (
            Param("unit", "only this unit_id"),
            Param("type", "event type, e.g. ENTRAPMENT"),
            Param("limit", "newest N (default 100, at most 10000)", _INT),
            Param("format", "json (default) or csv (the columns of `liftwatch-fleet events`)"),
        ),
        _BAD,
        csv=True,
    ),
    Operation("get", "/api/openapi.json", "This document", {}),
    Operation(
        "get",
        "/api/alarms",
        "Alarms, newest first, with their disposal steps",
        "Alarms",
        (
            Param("open", "only alarms not yet resolved (true/false)"),
            Param("unit", "only this unit_id"),
            Param("limit", "newest N (0 = all)", _COUNT),
        ),
        _BAD,
    ),
    Operation(
        "get",
        "/api/alarms/count",
        "How many open alarms the caller may see, and how many are entrapments not yet "
        "cleared (the navigation's count)",
        "AlarmCount",
        (),
    ),
    Operation(
        "get",
        "/api/alarms/{alarm_id}",
        "One alarm",
        "Alarm",
        (Param("alarm_id", schema=_ALARM_ID, where="path"),),
        _BAD_OR_MISSING,
    ),
    Operation(
        "post",
        "/api/alarms/{alarm_id}/{action}",
        "A disposal step: ack, dispatch, on-site, resolve or false-alarm, by a named person",
        "Alarm",
        (Param("alarm_id", schema=_ALARM_ID, where="path"), Param("action", where="path")),
        {**_BAD_OR_MISSING, 409: "the alarm's state forbids it"},
        description="Closing (resolve, false-alarm) an alarm whose event is still "
        "raised (no CLEARED record yet: the passenger may still be inside) needs a "
        "reason, kept as the alarm's close_reason and in its history; without one the "
        "answer is 400. `by` is required only when the fleet runs without login. "
        "dispatch (on an acknowledged alarm, which stays acknowledged) records who was "
        "sent (`crew`, a name or team: personal data, shown to the dashboard's roles only, "
        "never public nor northbound) and when they are expected: `eta_minutes` from "
        "now, or `eta_at`, a clock "
        "time HH:MM of today in the site's time zone (or YYYY-MM-DDTHH:MM), stored as an "
        "absolute time; a time earlier than now is a 400 naming eta_at; "
        "again later, it replaces both and the history keeps each.",
        body={
            "required": False,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "by": _STR,
                            "reason": {"type": "string", "maxLength": MAX_REASON_CHARS},
                            "crew": {"type": "string", "maxLength": MAX_CREW_CHARS},
                            "eta_minutes": {
                                "type": "number",
                                "minimum": 0,
                                "maximum": MAX_ETA_MINUTES,
                            },
                            "eta_at": {"type": "string", "examples": ["04:20"]},
                        },
                    }
                }
            },
        },
    ),
    Operation(
        "get",
        "/api/reports/{report}",
        "fault-rate (by=unit|building|street|contractor, format=json|csv; lift "
        "faults only, each row with its exposure, low-exposure rows last; the JSON carries "
        "the classification and ranking rule, the CSV them as # lines), service-life or "
        "scorecard over a period, worst first",
        "Report",
        (
            Param("report", where="path"),
            *_PERIOD,
            Param("by", "fault-rate grouping: unit, building, street, contractor"),
            Param("format", "fault-rate: json (default) or csv"),
        ),
        _BAD_OR_MISSING,
        csv=True,
    ),
    Operation(
        "post",
        "/api/reports/claims",
        "Audit repair claims (CSV body: unit_id or registration_code, time, "
        "fault_type; a time without a UTC offset is the site's time zone): supported, "
        "overstated, contradicts or cannot_tell, each with its reason as a code with "
        "parameters and as evidence in the reader's language; bad rows named by line",
        "ClaimsAudit",
        (
            Param(
                "lang",
                "language of the reasons: zh or en (default: Accept-Language, "
                "else the site's language)",
            ),
            Param("window_min", "minutes either side of a claim (default 30)", _POSITIVE),
            Param("max_gap_s", "longest silence still 'watched', seconds (default 60)", _POSITIVE),
        ),
        _BAD,
        body={"required": True, "content": {"text/csv": {"schema": _STR}}},
    ),
    Operation(
        "get",
        "/api/units/{unit_id}/history",
        "A unit's hash-chained lifecycle history, verified",
        "UnitHistory",
        (Param("unit_id", where="path"),),
    ),
    # The flight recorder (issue 16, fleet.web.evidence).
    Operation(
        "get",
        "/api/events/{event_id}/evidence",
        "The event's flight-recorder window: every sample from before its onset to after "
        "its raise (or its clear), the final window superseding the one written at the "
        "raise; format=csv gives the samples as CSV",
        "Evidence",
        (
            Param("event_id", where="path"),
            Param("format", "json (default) or csv (one row per sample)"),
        ),
        _BAD_OR_MISSING,
        csv=True,
    ),
    Operation(
        "post",
        "/api/units/{unit_id}/evidence-requests",
        "Ask the unit's agent for its last N seconds now (dispatchers, administrators and "
        "the unit's contractor; recorded in the unit's history with who asked)",
        "EvidenceRequest",
        (Param("unit_id", where="path"),),
        {
            **_BAD_OR_MISSING,
            403: "a role that may not act on the unit",
            409: "the unit's agent is not connected, or keeps no recorder (an older agent)",
            429: "the unit has a request in flight (named; Retry-After: until it expires)",
        },
        ok_status=202,
        ok_description="sent to the agent; poll GET /api/evidence-requests/{request_id}",
        body={
            "required": False,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "seconds": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_REQUEST_SECONDS,
                                "default": DEFAULT_REQUEST_SECONDS,
                            },
                            "by": _STR,
                        },
                    }
                }
            },
        },
    ),
    Operation(
        "get",
        "/api/evidence-requests/{request_id}",
        "An on-demand evidence request: its status and, once answered, the Evidence",
        "EvidenceRequest",
        (Param("request_id", where="path"),),
        {404: "not found"},
    ),
    Operation(
        "get",
        "/api/history/checkpoint",
        "When the history chains were last verified against a signed checkpoint "
        "(by serve's schedule or `verify-history --checkpoint`), and what was found; "
        "regulator, dispatcher and administrator only",
        "HistoryCheckpoint",
        errors={403: "a contractor"},
    ),
    # The dashboard's own reads (fleet.web.dashboard, fleet.web.users).
    Operation(
        "get",
        "/api/live",
        "Server-sent events: 'event' and 'alarms' of every unit the caller may "
        "see, and 'car', 'link', 'counters' of the units named by repeated unit=",
        _STR,
        (Param("unit", "a unit_id whose car, link and counters to stream"),),
        ok_description="an endless text/event-stream",
        ok_media="text/event-stream",
    ),
    Operation(
        "get",
        "/api/units/{unit_id}/live",
        "A unit's newest car state and link status, and its counters series",
        "UnitLive",
        (Param("unit_id", where="path"),),
        {404: "not found"},
    ),
    Operation(
        "get",
        "/api/users",
        "Every account (administrators only; never a password hash)",
        "Users",
        errors={403: "not an administrator"},
    ),
    Operation(
        "post",
        "/api/users",
        "Add an account: username, role, password (8+ characters), contractor "
        "(contractor role only), display_name (administrators only)",
        "User",
        errors={400: "bad field, named", 409: "the name is taken"},
        ok_status=201,
        ok_description="created",
    ),
    Operation(
        "delete",
        "/api/users/{username}",
        "Remove an account with its sessions and tokens (administrators only)",
        "UserRemoved",
        (Param("username", where="path"),),
        {404: "no such user"},
        ok_description="removed",
    ),
    # Forwarding to regional platforms (issue 21, fleet.web.northbound).
    Operation(
        "get",
        "/api/northbound",
        "Every regional platform's forwarding status (backlog, oldest unsent, sent, "
        "rejected, sender) and the newest dead letters (administrators only)",
        "Northbound",
        errors={403: "not an administrator"},
    ),
    # Agent updates (issue 20, fleet.web.rollouts).
    Operation(
        "get",
        "/api/rollouts",
        "The newest rollouts of agent releases with their progress per wave (agents "
        "pending, offered, on trial, healthy, failed, rolled back), and the releases kept "
        "(administrators only)",
        "Rollouts",
        errors={403: "not an administrator"},
    ),
    # Remote configuration (issue 20, fleet.web.configs).
    Operation(
        "get",
        "/api/configs",
        "Desired against applied configuration per agent: the document version it should "
        "run, the one it runs, own_file/in_sync/pending/rejected and the problems of its "
        "last report (administrators only)",
        "AgentConfigs",
        errors={403: "not an administrator"},
    ),
    Operation(
        "get",
        "/api/site",
        "The site's time zone and default dashboard language (no login needed)",
        "Site",
    ),
    # The plan by need and the district's publication (fleet.web.publication).
    Operation(
        "get",
        "/api/maintenance/plan",
        "Each unit's next maintenance due date and why ([maintenance.plan]), soonest "
        "first; a contractor sees its own units; format=csv or ics (iCalendar) too",
        "MaintenancePlan",
        (
            Param("contractor", "one contractor's units (a contractor: its own only)"),
            Param("overdue", "true: only the units past their due date", _BOOL),
            Param("format", "json (default), csv or ics", {"enum": ["json", "csv", "ics"]}),
            Param("lang", "language of the reasons: zh or en (default: Accept-Language)"),
        ),
        {400: "bad parameter", 403: "another contractor's units"},
        csv=True,
    ),
    Operation(
        "get",
        "/api/publication",
        "The drafted, approved and published lists and each step's history "
        "(regulators and administrators)",
        "Publications",
        errors={403: "not a regulator or administrator"},
    ),
    Operation(
        "post",
        "/api/publication/draft",
        "Draft the lists as of now (regulators only): high-fault, three-no, aged "
        "without assessment, overdue, contractors with contradicted records",
        "Publication",
        errors={403: "not a regulator"},
        ok_status=201,
        ok_description="drafted",
    ),
    Operation(
        "get",
        "/api/publication/{publication_id}",
        "One publication with its lists (regulators and administrators)",
        "Publication",
        (Param("publication_id", where="path"),),
        {403: "not a regulator or administrator", 404: "no such publication"},
    ),
    Operation(
        "post",
        "/api/publication/{publication_id}/{action}",
        "approve (another regulator than the drafter, unless [publication] "
        "approval_by_another is false) or publish (once approved) (regulators only)",
        "Publication",
        (Param("publication_id", where="path"), Param("action", where="path")),
        {403: "not a regulator", 404: "no such step", 409: "not allowed in this state"},
    ),
    # Maintenance truth: watched visits, records and their verdicts (fleet.web.maintenance).
    *(
        Operation(
            "get",
            path,
            "Maintenance visits watched on the controllers (inspection or out-of-service "
            "sessions), newest first; units whose profile cannot see the mode are listed "
            "as unknown; a contractor sees its own units",
            "MaintenanceVisits",
            params,
            {400: "bad parameter", 403: "another contractor's units", 404: "unit unknown"},
        )
        for path, params in (
            (
                "/api/maintenance/visits",
                (
                    Param("unit", "one unit"),
                    Param("contractor", "one contractor's units (a contractor: its own)"),
                    Param("since", "visits going on from this day (YYYY-MM-DD, UTC)"),
                    Param("limit", "newest N (default 200, 0 = all)", _COUNT),
                ),
            ),
            (
                "/api/units/{unit_id}/visits",
                (
                    Param("unit_id", where="path"),
                    Param("since", "visits going on from this day (YYYY-MM-DD, UTC)"),
                    Param("limit", "newest N (default 200, 0 = all)", _COUNT),
                ),
            ),
        )
    ),
    Operation(
        "get",
        "/api/maintenance/records",
        "Maintenance records with their verdicts (supported, too_short, contradicted, "
        "cannot_tell), reasons and evidence in the reader's language; a contractor sees "
        "its own records",
        "MaintenanceRecords",
        (
            Param("unit", "one unit"),
            Param("contractor", "one contractor's records (a contractor: its own)"),
            Param("verdict", "one verdict"),
            Param("since", "records whose window begins from this day (YYYY-MM-DD)"),
            Param("limit", "newest N (default 500, 0 = all)", _COUNT),
            Param("lang", "language of the evidence: zh or en (default: Accept-Language)"),
        ),
        {400: "bad parameter", 403: "another contractor's records"},
    ),
    Operation(
        "post",
        "/api/maintenance/records",
        "File maintenance records (contractors: their own units; an administrator names "
        "the contractor): CSV (unit_id or registration_code, date, start, end, type, "
        "workers; a time without a UTC offset is the site's) or JSON {records: [...]}; "
        "rows refused by line and reason, the rest stored and judged at once",
        "MaintenanceImport",
        (
            Param("contractor", "administrators: the contractor filing them"),
            Param("lang", "language of the evidence: zh or en (default: Accept-Language)"),
        ),
        {400: "bad body or parameter", 403: "a role that may not file records", 413: "too large"},
        body={
            "required": True,
            "content": {
                "text/csv": {"schema": _STR},
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["records"],
                        "properties": {
                            "records": {
                                "type": "array",
                                "items": {"type": "object", "additionalProperties": _STR},
                            }
                        },
                    }
                },
            },
        },
    ),
    Operation(
        "get",
        "/api/maintenance/shares",
        "Each contractor's records by verdict and each verdict's share (the district's "
        "view; a contractor sees its own)",
        "MaintenanceVerdictShares",
        (Param("since", "records whose window begins from this day (YYYY-MM-DD)"),),
        _BAD,
    ),
)


def openapi_spec() -> dict[str, Any]:
    """The OpenAPI document, built afresh on each call (callers may mutate it)."""
    paths: dict[str, Any] = {}
    for operation in ROUTES:
        paths.setdefault(operation.path, {})[operation.method] = operation.spec()
    return copy.deepcopy(_document(paths))


def _document(paths: dict[str, Any]) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "LiftWatch fleet API",
            "version": "1",
            "description": "Units, coverage, firmware and events of the district's lifts. "
            "Every path needs a dashboard session (cookie lw_session from POST "
            "/auth/login, plus its X-CSRF-Token on POST) or an API token; a contractor "
            "sees only the units it maintains (401: not logged in, 403: not allowed).",
        },
        "paths": paths,
        "components": {
            "schemas": component_schemas(),
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "lw_session"},
                "token": {"type": "http", "scheme": "bearer", "bearerFormat": "lwt_..."},
            },
        },
        "security": [{"session": []}, {"token": []}],
    }
