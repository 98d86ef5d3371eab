"""``liftwatch-fleet publish`` (issue 17, item 5): draft, approve by another regulator,
publish, status; a non-regulator and a step out of order are refused with exit 2."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from fleet.auth.roles import Role
from fleet.cli.main import main
from fleet.read.shape import schema_of
from fleet.reports.publication import PublicationStatusView
from fleet.store.base import RegisterEntry
from fleet.store.open import open_store
from fleet.web.openapi import openapi_spec
from tests.fleet.test_api import validate

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def _db(tmp_path: Path) -> str:
    db = str(tmp_path / "fleet.db")
    store = open_store(db)
    try:
        store.upsert_register([RegisterEntry("U1", contractor="", use_unit="物业")], NOW)
        for name, role, contractor in (
            ("reg_a", Role.REGULATOR, ""),
            ("reg_b", Role.REGULATOR, ""),
            ("adm", Role.ADMIN, ""),
        ):
            store.add_user(name, role, "x", contractor=contractor, now=NOW)
    finally:
        store.close()
    return db


def test_draft_approve_publish_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = _db(tmp_path)
    assert main(["publish", "draft", "--db", db, "--as", "adm"]) == 2
    assert "only a regulator" in capsys.readouterr().err
    assert main(["publish", "draft", "--db", db, "--as", "reg_a", "--json"]) == 0
    draft = json.loads(capsys.readouterr().out)
    assert draft["state"] == "draft"
    assert [r["unit_id"] for r in draft["lists"]["three_no"]["rows"]] == ["U1"]
    pid = str(draft["id"])
    assert main(["publish", "publish", pid, "--db", db, "--as", "reg_a"]) == 2
    assert main(["publish", "approve", pid, "--db", db, "--as", "reg_a"]) == 2
    assert "another regulator" in capsys.readouterr().err
    assert main(["publish", "approve", pid, "--db", db, "--as", "reg_b"]) == 0
    assert main(["publish", "publish", pid, "--db", db, "--as", "reg_b"]) == 0
    capsys.readouterr()
    assert main(["publish", "status", "--db", db, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["public"] == int(pid)
    # Each --json is its definition (fleet.reports.publication), as the API's.
    spec = openapi_spec()
    validate(status, schema_of(PublicationStatusView), spec, "publish status --json")
    validate(draft, {"$ref": "#/components/schemas/Publication"}, spec, "publish draft --json")
    assert [(s["step"], s["username"]) for s in status["steps"]] == [
        ("drafted", "reg_a"),
        ("approved", "reg_b"),
        ("published", "reg_b"),
    ]
