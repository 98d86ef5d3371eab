"""Each response shape is defined once (fleet.read.shape): its JSON and its OpenAPI schema
come from the same dataclass, so they agree; the generator is as strict as the spec was."""

from __future__ import annotations

import datetime as dt
import io
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fleet.read.lifecycle_views import AlarmState, AlarmView
from fleet.read.shape import out, schema_of, to_json
from fleet.read.views import CoverageView, EventView, UnitPageView, coverage_view
from fleet.store.base import ALARM_STATES, EventRow
from fleet.units.coverage import Coverage
from fleet.web.openapi import openapi_spec
from protos.liftwatch.v1 import records_pb2
from tests.fleet.test_api import validate


@dataclass(frozen=True)
class _Probe:
    count: int = out(minimum=0)
    ratio: float | None = out()
    kind: typing.Literal["a", "b"] | None = out(key="class")
    items: tuple[str, ...] = out("its items")
    extra: dict[str, int] | None = out(omit_none=True)


def test_a_schema_is_read_from_the_field_types_and_declarations() -> None:
    schema = schema_of(_Probe)
    assert schema == {
        "type": "object",
        "properties": {
            "count": {"type": "integer", "minimum": 0},
            "ratio": {"type": ["number", "null"]},
            "class": {"type": ["string", "null"], "enum": ["a", "b", None]},
            "items": {"type": "array", "items": {"type": "string"}, "description": "its items"},
            "extra": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
        "required": ["class", "count", "items", "ratio"],
        "additionalProperties": False,
    }
    assert to_json(_Probe(1, None, "a", ("x",), None)) == {
        "count": 1,
        "ratio": None,
        "class": "a",
        "items": ["x"],
    }
    assert to_json(_Probe(1, 0.5, None, (), {"k": 2}))["extra"] == {"k": 2}


def test_json_kept_as_it_was_made_is_described_by_its_definition() -> None:
    """A field holding JSON made earlier from a definition (a draft's stored lists) has
    that definition's schema, not a bare object's."""

    @dataclass(frozen=True)
    class Kept:
        lists: dict[str, Any] | None = out("as drawn", omit_none=True, shape=_Probe)

    assert schema_of(Kept)["properties"]["lists"] == {
        **schema_of(_Probe),
        "description": "as drawn",
    }
    assert schema_of(Kept)["required"] == []


def test_a_type_without_a_schema_is_refused() -> None:
    @dataclass(frozen=True)
    class Unknown:
        when: dt.datetime = out()

    with pytest.raises(TypeError, match="no JSON Schema"):
        schema_of(Unknown)


def test_alarm_states_are_the_stores() -> None:
    assert typing.get_args(AlarmState) == ALARM_STATES


def _spec_check(value: Any, name: str) -> None:
    spec = openapi_spec()
    validate(value, {"$ref": f"#/components/schemas/{name}"}, spec, name)


def test_flattened_and_omitted_keys_keep_the_old_shapes() -> None:
    counts = Coverage(registered=3, monitored=2, online=1)
    plain = to_json(coverage_view(counts, None))
    assert "groups" not in plain and plain["registered"] == 3
    grouped = to_json(coverage_view(counts, {"S1": counts}))
    assert list(grouped["groups"][0])[:2] == ["name", "registered"]
    _spec_check(plain, "Coverage")
    _spec_check(grouped, "Coverage")
    assert schema_of(CoverageView)["required"] == sorted(plain)
    event = EventRow(
        agent_id="a1",
        seq=1,
        unit_id="U1",
        time=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        event_id="e1",
        type=records_pb2.EVENT_TYPE_ENTRAPMENT,
        phase=records_pb2.PHASE_RAISED,
        onset=None,
        floor=None,
        reason="",
    )
    shown = to_json(EventView.of(event))
    assert shown["class"] == "lift_fault" and "event_class" not in shown
    _spec_check(shown, "Event")
    # The validator the API tests use rejects a key the definition does not have.
    with pytest.raises(AssertionError, match="extra"):
        _spec_check({**shown, "surprise": 1}, "Event")
    units = schema_of(UnitPageView)["properties"]["units"]
    assert units == {"type": "array", "items": {"$ref": "#/components/schemas/Unit"}}
    assert set(schema_of(AlarmView)["properties"]) >= {"class", "close_reason", "rescue_s"}


def test_csv_columns_are_keys_of_their_definitions() -> None:
    """The CSV writers pick and order columns of the same definitions: a column the
    definition does not have fails here, not in an operator's download."""
    from fleet.read.views import EVENT_TABLE_COLUMNS, UnitView
    from fleet.web.api import UNIT_CSV_COLUMNS

    assert set(UNIT_CSV_COLUMNS) <= set(schema_of(UnitView)["properties"])
    assert set(EVENT_TABLE_COLUMNS) <= set(schema_of(EventView)["properties"])
    from fleet.read.evidence_views import EVIDENCE_CSV_COLUMNS, EvidenceSampleView
    from fleet.reports.plan import PLAN_CSV_COLUMNS, PlanUnitView

    assert set(PLAN_CSV_COLUMNS) <= set(schema_of(PlanUnitView)["properties"])
    assert tuple(schema_of(EvidenceSampleView)["properties"]) == EVIDENCE_CSV_COLUMNS


def test_the_cli_json_outputs_are_their_definitions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each CLI-only ``--json`` output (units, alarms, agents, pki, history, users) is made from its
    definition (fleet.cli.*), and matches the schema generated from it."""
    from fleet.cli.agents import (
        AgentsView,
        RevocationChange,
        RevokedView,
        UnitsAdded,
        UnitsRemoved,
    )
    from fleet.cli.history import CheckpointFileView, GrantView, KeyPairView, VerifiedView
    from fleet.cli.main import main
    from fleet.cli.pki import IssuedView
    from fleet.cli.reports import FileAuditView
    from fleet.cli.units import ImportedView, UnitsView
    from fleet.cli.users import PasswordChanged, TokenMade, TokenRevoked, TokensView, UserGone
    from fleet.read.lifecycle_views import AlarmsView
    from fleet.read.views import UserView
    from tests.fleet.test_cli import HEADER

    db = str(tmp_path / "fleet.db")
    key, checkpoint = str(tmp_path / "key.pem"), str(tmp_path / "checkpoint.json")
    register = tmp_path / "units.csv"
    register.write_text(
        f"{HEADER}\nR1,B1,a,S1,u,C1,2010-01-02,1.0,630,6,RC-3000,1\n"
        "R2,B1,a,S1,u,C1,2010-13-02,1.0,630,6,RC-3000,2\n",
        encoding="utf-8",
    )
    claims = tmp_path / "claims.csv"
    claims.write_text(
        "unit_id,time,fault_type\nR1,2026-01-01T08:00:00Z,ENTRAPMENT\nR1,yesterday,ENTRAPMENT\n",
        encoding="utf-8",
    )
    runs: list[tuple[list[str], type]] = [
        (["units", "import", str(register), "--db", db], ImportedView),
        (["units", "--db", db], UnitsView),
        (["alarms", "--db", db], AlarmsView),
        (["audit", "claims", str(claims), "--db", db], FileAuditView),
        (["agents", "add", "edge-1", "--unit", "U1", "--db", db], UnitsAdded),
        (["agents", "list", "--db", db], AgentsView),
        (["agents", "revoke", "edge-1", "--reason", "stolen", "--db", db], RevocationChange),
        (["agents", "revoked", "--db", db], RevokedView),
        (["agents", "remove", "edge-1", "--db", db], UnitsRemoved),
        (["pki", "init", str(tmp_path / "ca")], IssuedView),
        (["history", "keygen", key, "--db", db], KeyPairView),
        (["history", "checkpoint", checkpoint, "--key", key, "--db", db], CheckpointFileView),
        (["verify-history", "--checkpoint", checkpoint, "--key", key, "--db", db], VerifiedView),
        (["users", "add", "ann", "--role", "regulator", "--db", db, "--password-stdin"], UserView),
        (["users", "passwd", "ann", "--db", db, "--password-stdin"], PasswordChanged),
        (["users", "token", "ann", "--label", "ci", "--db", db], TokenMade),
        (["users", "tokens", "ann", "--db", db], TokensView),
        (["users", "revoke", "ann", "--label", "ci", "--db", db], TokenRevoked),
        (["users", "remove", "ann", "--db", db], UserGone),
    ]
    spec = openapi_spec()  # the $refs of API components some of them hold (ChainProblem)
    for argv, definition in runs:
        monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery\n"))
        capsys.readouterr()
        assert main([*argv, "--json"]) == 0, argv
        shown = json.loads(capsys.readouterr().out)
        validate(shown, schema_of(definition), spec, " ".join(argv[:2]))
    assert shown == {"username": "ann", "removed": True}
    # db grant needs PostgreSQL (tests/fleet/test_history_checks.py runs it): its schema.
    tables = {"type": "object", "additionalProperties": {"type": "array", "items": _STR}}
    assert schema_of(GrantView)["properties"]["tables"] == tables


_STR = {"type": "string"}


def test_a_view_copies_the_same_named_fields_of_its_source() -> None:
    """view_from: every field not given is the source's attribute of that name, a datetime
    as its ISO string; a field the source lacks is an error, not a silent default."""
    from fleet.read.shape import view_from
    from fleet.read.views import CoverageChangeView

    @dataclass(frozen=True)
    class Row:
        unit_id: str
        at: dt.datetime
        old_status: str
        new_status: str
        cause: str

    when = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)
    view = view_from(CoverageChangeView, Row("U1", when, "online", "stale", "sweep"))
    assert to_json(view) == {
        "unit_id": "U1",
        "at": "2026-01-02T03:04:05.678Z",
        "old_status": "online",
        "new_status": "stale",
        "cause": "sweep",
    }
    assert view_from(CoverageChangeView, view, unit_id="U2").at == view.at
    with pytest.raises(AttributeError, match="unit_id"):
        view_from(CoverageChangeView, _Probe(1, None, None, (), None), cause="x")
