"""The OpenAPI 3.1 description of the JSON API, written by hand next to the routes.

tests/fleet/test_api.py checks that every route is described and that sample responses
match these schemas, so the spec cannot drift from the code unnoticed.
"""

from __future__ import annotations

import copy
from typing import Any

from fleet.taxonomy import EventClass
from fleet.web import history as history_api
from fleet.web import lifecycle as lifecycle_api

_STR = {"type": "string"}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_NULLABLE_STR = {"type": ["string", "null"]}
_NULLABLE_INT = {"type": ["integer", "null"]}
STATUSES = ["online", "stale", "offline", "blind", "never_seen"]


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": sorted(properties),
        "additionalProperties": False,
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _array(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


_COUNTS = {
    name: {"type": "integer", "minimum": 0}
    for name in (
        "registered",
        "monitored",
        "online",
        "stale",
        "offline",
        "blind",
        "never_seen",
        "unregistered_reporting",
    )
}
_VERSION_COUNT = _object({"model": _STR, "version": _STR, "units": _INT})
# What every event listing says an event is (fleet.read.views.event_codes_json).
EVENT_CLASS = {
    "type": ["string", "null"],
    "enum": [c.value for c in EventClass] + [None],
    "description": "lift_fault counts in fault rates; null for a type this fleet does not know",
}
EVENT_CODES: dict[str, Any] = {
    "gb_code": {**_NULLABLE_INT, "description": "GB/T 24476-2017 code; null where none"},
    "platform_codes": {
        "type": "object",
        "additionalProperties": _INT,
        "description": 'regional platform -> its code, e.g. {"chongqing": 93}',
    },
    "class": EVENT_CLASS,
    "at_landing": {
        "type": ["boolean", "null"],
        "description": "at onset: true at a landing, false between floors, null unknown",
    },
}

SCHEMAS: dict[str, Any] = {
    "Error": _object({"error": _STR}),
    "Unit": _object(
        {
            "unit_id": _STR,
            "status": {"type": "string", "enum": STATUSES},
            "registered": _BOOL,
            "firmware": _STR,
            "model": _STR,
            "agent_id": _STR,
            "agent_version": _STR,
            "last_seen": {**_NULLABLE_STR, "format": "date-time"},
            "building": _STR,
            "address": _STR,
            "street": _STR,
            "contractor": _STR,
        }
    ),
    "UnitPage": _object({"units": _array(_ref("Unit")), "next_page_token": _STR, "total": _INT}),
    "CoverageGroup": _object({"name": _STR, **_COUNTS}),
    "Coverage": {
        **_object({**_COUNTS, "groups": _array(_ref("CoverageGroup"))}),
        "required": sorted(_COUNTS),
    },
    "CoverageChange": _object(
        {
            "unit_id": _STR,
            "at": _STR,
            "old_status": _STR,
            "new_status": _STR,
            "cause": {"type": "string", "enum": ["hello", "record", "heartbeat", "sweep"]},
        }
    ),
    "CoverageHistory": _object({"history": _array(_ref("CoverageChange"))}),
    "VersionCount": _VERSION_COUNT,
    "Violation": _object(
        {
            "unit_id": _STR,
            "model": _STR,
            "firmware": _STR,
            "rule": {"type": "string", "enum": ["below_minimum", "known_bad", "no_updates"]},
            "reason": _STR,
        }
    ),
    "FirmwareChange": _object(
        {
            "unit_id": _STR,
            "at": _STR,
            "agent_id": _STR,
            "model": _STR,
            "old_firmware": _STR,
            "new_firmware": _STR,
            "old_agent_version": _STR,
            "new_agent_version": _STR,
        }
    ),
    "Firmware": {
        **_object(
            {
                "firmware": _array(_ref("VersionCount")),
                "agent_versions": _array(_ref("VersionCount")),
                "violations": _array(_ref("Violation")),
                "history": _array(_ref("FirmwareChange")),
            }
        ),
        "required": ["history", "violations"],
    },
    "Event": _object(
        {
            "unit_id": _STR,
            "agent_id": _STR,
            "seq": _INT,
            "type": _STR,
            "phase": _STR,
            "event_id": _STR,
            "onset": _NULLABLE_STR,
            "time": _NULLABLE_STR,
            "floor": _NULLABLE_INT,
            "reason": _STR,
            "committed": _NULLABLE_STR,
            **EVENT_CODES,
        }
    ),
    "Events": _object({"events": _array(_ref("Event"))}),
}


def _param(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or _STR,
    }


def _ok(schema: str, *errors: int) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": {"application/json": {"schema": _ref(schema)}}}
    }
    for code in errors:
        responses[str(code)] = {
            "description": {400: "bad parameter", 404: "not found"}[code],
            "content": {"application/json": {"schema": _ref("Error")}},
        }
    return responses


_UNIT_FILTERS = [
    _param("street", "sub-district (街道) as registered"),
    _param("building", "building as registered"),
    _param("contractor", "maintenance contractor as registered"),
    _param("model", "controller model (reported, else registered)"),
    _param("firmware", "controller firmware version"),
    _param("status", "live coverage status", {"type": "string", "enum": STATUSES}),
    _param("monitored", "only units that have reported", _BOOL),
    _param("page_size", "units per page (0 = all, at most 10000)", _INT),
    _param("page_token", "next_page_token of the previous page"),
    _param("q", "text anywhere in the unit id, building, address or street"),
    _param("format", "json (default) or csv: every matching unit as CSV, no paging"),
]

# The dashboard's own reads (fleet.web.dashboard): documented for completeness.
DASHBOARD_PATHS: dict[str, Any] = {
    "/api/live": {
        "get": {
            "summary": "Server-sent events: 'event' and 'alarms' of every unit the caller may "
            "see, and 'car', 'link', 'counters' of the units named by repeated unit=",
            "parameters": [_param("unit", "a unit_id whose car, link and counters to stream")],
            "responses": {
                "200": {
                    "description": "an endless text/event-stream",
                    "content": {"text/event-stream": {"schema": _STR}},
                }
            },
        }
    },
    "/api/units/{unit_id}/live": {
        "get": {
            "summary": "A unit's newest car state and link status, and its counters series",
            "parameters": [{"name": "unit_id", "in": "path", "required": True, "schema": _STR}],
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "404": {
                    "description": "not found",
                    "content": {"application/json": {"schema": _ref("Error")}},
                },
            },
        }
    },
    "/api/users": {
        "get": {
            "summary": "Every account (administrators only; never a password hash)",
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "403": {
                    "description": "not an administrator",
                    "content": {"application/json": {"schema": _ref("Error")}},
                },
            },
        },
        "post": {
            "summary": "Add an account: username, role, password (8+ characters), contractor "
            "(contractor role only), display_name (administrators only)",
            "responses": {
                "201": {
                    "description": "created",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "400": {
                    "description": "bad field, named",
                    "content": {"application/json": {"schema": _ref("Error")}},
                },
                "409": {
                    "description": "the name is taken",
                    "content": {"application/json": {"schema": _ref("Error")}},
                },
            },
        },
    },
    "/api/users/{username}": {
        "delete": {
            "summary": "Remove an account with its sessions and tokens (administrators only)",
            "parameters": [{"name": "username", "in": "path", "required": True, "schema": _STR}],
            "responses": {
                "200": {
                    "description": "removed",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "404": {
                    "description": "no such user",
                    "content": {"application/json": {"schema": _ref("Error")}},
                },
            },
        }
    },
    "/api/site": {
        "get": {
            "summary": "The site's time zone and default dashboard language (no login needed)",
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    },
}

PATHS: dict[str, Any] = {
    "/api/units": {
        "get": {
            "summary": "Units (registered or ever reported), ordered by unit_id",
            "parameters": _UNIT_FILTERS,
            "responses": _ok("UnitPage", 400),
        }
    },
    "/api/units/{unit_id}": {
        "get": {
            "summary": "One unit",
            "parameters": [{"name": "unit_id", "in": "path", "required": True, "schema": _STR}],
            "responses": _ok("Unit", 404),
        }
    },
    "/api/coverage": {
        "get": {
            "summary": "District coverage counts, optionally per group",
            "parameters": [
                _param(
                    "by",
                    "also count per group",
                    {"type": "string", "enum": ["street", "building", "contractor"]},
                )
            ],
            "responses": _ok("Coverage", 400),
        }
    },
    "/api/coverage/history": {
        "get": {
            "summary": "Coverage transitions, oldest first",
            "parameters": [
                _param("unit", "only this unit_id"),
                _param("limit", "newest N (default 100, at most 10000)", _INT),
            ],
            "responses": _ok("CoverageHistory", 400),
        }
    },
    "/api/firmware": {
        "get": {
            "summary": "Firmware and agent versions by model, policy violations, history",
            "parameters": [
                _param("model", "only this controller model"),
                _param("violations", "only the violations (and history)", _BOOL),
                _param("history", "the firmware / agent version history of this unit_id"),
            ],
            "responses": _ok("Firmware", 400),
        }
    },
    "/api/events": {
        "get": {
            "summary": "Stored events, the newest N returned oldest first",
            "parameters": [
                _param("unit", "only this unit_id"),
                _param("type", "event type, e.g. ENTRAPMENT"),
                _param("limit", "newest N (default 100, at most 10000)", _INT),
                _param("format", "json (default) or csv (the columns of `liftwatch-fleet events`)"),
            ],
            "responses": {
                **_ok("Events", 400),
                "200": {
                    "description": "OK",
                    "content": {
                        "application/json": {"schema": _ref("Events")},
                        "text/csv": {"schema": _STR},
                    },
                },
            },
        }
    },
    "/api/openapi.json": {
        "get": {
            "summary": "This document",
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": {}}}}
            },
        }
    },
}


def openapi_spec() -> dict[str, Any]:
    """The OpenAPI document (a fresh copy: callers may not mutate the shared one)."""
    return copy.deepcopy(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "LiftWatch fleet API",
                "version": "1",
                "description": "Units, coverage, firmware and events of the district's lifts. "
                "Every path needs a dashboard session (cookie lw_session from POST "
                "/auth/login, plus its X-CSRF-Token on POST) or an API token; a contractor "
                "sees only the units it maintains (401: not logged in, 403: not allowed).",
            },
            "paths": {**PATHS, **lifecycle_api.PATHS, **history_api.PATHS, **DASHBOARD_PATHS},
            "components": {
                "schemas": {**SCHEMAS, **lifecycle_api.SCHEMAS, **history_api.SCHEMAS},
                "securitySchemes": {
                    "session": {"type": "apiKey", "in": "cookie", "name": "lw_session"},
                    "token": {"type": "http", "scheme": "bearer", "bearerFormat": "lwt_..."},
                },
            },
            "security": [{"session": []}, {"token": []}],
        }
    )
