"""The reference platform's JSON Schema check (hil_tests/northbound_platform.py) accepts
what the derived schemas describe and names, by path, every way a body breaks them: a
platform test is only as good as this check."""

from __future__ import annotations

from pathlib import Path

from fleet.northbound.mapping import load_mapping, resolve
from hil_tests.northbound_platform import validate

SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "code": {"type": ["integer", "null"], "enum": [91, 92, None]},
        "floor": {"type": "integer"},
        "kind": {"const": "fault"},
    },
    "required": ["id", "code", "floor", "kind"],
    "additionalProperties": False,
}


def test_a_conforming_body_passes() -> None:
    assert validate(SCHEMA, {"id": "a", "code": 91, "floor": 3, "kind": "fault"}) == []
    assert validate(SCHEMA, {"id": "a", "code": None, "floor": -1, "kind": "fault"}) == []


def test_every_breach_is_named_by_its_path() -> None:
    problems = validate(SCHEMA, {"id": "", "code": 93, "floor": True, "kind": "event", "extra": 1})
    assert problems == [
        "$.id: shorter than 1",
        "$.code: 93 is not one of [91, 92, None]",
        "$.floor: expected integer, got bool",
        "$.kind: must be 'fault'",
        "$.extra: not allowed",
    ]
    assert validate(SCHEMA, {"id": "a"}) == [
        "$.code: required",
        "$.floor: required",
        "$.kind: required",
    ]
    assert validate(SCHEMA, [1]) == ["$: expected object, got list"]
    assert validate({"type": "number"}, 1.5) == [] and validate({"type": "integer"}, 1.5)


def test_a_renamed_field_breaks_the_derived_schema() -> None:
    """What the rejection test relies on: a body from a mapping with one field renamed
    does not meet the schema derived from the shipped mapping."""
    schema = load_mapping(resolve("gbt24476", Path())).json_schema()["status"]
    body = {
        "messageId": "k",
        "registrationCode": "U1",
        "monitoringStatus": 1,
        "statusName": "online",
        "previousStatus": "stale",
        "cause": "record",
        "changedAt": "2026-03-01T08:00:00.000Z",
    }
    assert validate(schema, body) == []
    renamed = {("status" if k == "statusName" else k): v for k, v in body.items()}
    assert validate(schema, renamed) == ["$.statusName: required", "$.status: not allowed"]
    assert validate(schema, {**body, "monitoringStatus": 9}) == [
        "$.monitoringStatus: 9 is not one of [1, 2, 3, 4, 0]"
    ]
