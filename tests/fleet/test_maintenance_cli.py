"""``liftwatch-fleet maintenance`` (issue 17, item 7): every sub-command has --help, an
import names its bad rows by line on stderr and keeps the rest, and the audit prints
each verdict's count."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from fleet.cli.main import main
from fleet.cli.maintenance import AuditView
from fleet.read.shape import schema_of
from fleet.store.base import BatchOp, RegisterEntry
from fleet.store.sqlite import SqliteStore
from fleet.web.openapi import openapi_spec
from protos.liftwatch.v1 import records_pb2
from tests.fleet.test_api import validate

START = dt.datetime(2026, 3, 2, 1, 0, tzinfo=dt.UTC)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """U1 (C1) watched in normal service 01:00-04:00 UTC; U2 is C2's."""
    path = tmp_path / "fleet.db"
    store = SqliteStore.open(str(path))
    try:
        store.upsert_register(
            [RegisterEntry("U1", contractor="C1"), RegisterEntry("U2", contractor="C2")]
        )
        records: list[records_pb2.Record] = []
        for i in range(3 * 360):
            at = START + dt.timedelta(seconds=10 * i)
            for kind in ("car_state", "counters", "link_status") if i % 6 == 0 else ("car_state",):
                record = records_pb2.Record(seq=len(records) + 1, unit_id="U1")
                record.time.FromDatetime(at)
                if kind == "car_state":
                    record.car_state.mode = records_pb2.SERVICE_MODE_NORMAL
                elif kind == "counters":
                    record.counters.trips = i
                else:
                    record.link_status.up = True
                records.append(record)
        store.write([BatchOp("a1", tuple(records))], START + dt.timedelta(hours=4))
    finally:
        store.close()
    return path


def test_every_maintenance_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (
        ["maintenance"],
        ["maintenance", "visits"],
        ["maintenance", "records"],
        ["maintenance", "records", "import"],
        ["maintenance", "records", "list"],
        ["maintenance", "audit"],
    ):
        assert main([*args, "--help"]) == 0, args
        assert "usage:" in capsys.readouterr().out


def test_import_names_bad_rows_and_audit_counts_verdicts(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = tmp_path / "records.csv"
    records.write_text(
        "unit_id,date,start,end,type,workers\n"
        "U1,2026-03-02,02:00Z,03:00Z,half_monthly,张三\n"  # watched normal: contradicted
        "U2,2026-03-02,02:00Z,03:00Z,half_monthly,李四\n"  # C2's unit
        "U1,2026-03-02,soon,03:00Z,half_monthly,x\n",
        encoding="utf-8",
    )
    args = ["maintenance", "records", "import", str(records), "--contractor", "C1"]
    assert main([*args, "--db", str(db), "--json"]) == 0
    out, err = capsys.readouterr()
    taken = json.loads(out)
    assert (taken["stored"], [p["line"] for p in taken["problems"]]) == (1, [3, 4])
    assert [r["verdict"] for r in taken["records"]] == ["contradicted"]
    assert "line 3: unit 'U2' unknown" in err and "line 4: cannot read the time" in err
    assert main(["maintenance", "audit", "--db", str(db), "--json"]) == 0
    audit = json.loads(capsys.readouterr().out)
    assert audit["verdicts"] == {
        "supported": 0,
        "too_short": 0,
        "contradicted": 1,
        "cannot_tell": 0,
    }
    assert audit["changed"] == 0  # judged at import already: the same verdict again
    # --json is its definition, its contractors the API's VerdictShare (one per response).
    validate(audit, schema_of(AuditView), openapi_spec(), "maintenance audit --json")
    assert [c["contractor"] for c in audit["contractors"]] == ["C1"]
    assert main(["maintenance", "visits", "--db", str(db), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"visits": [], "unknown_units": []}
    missing = ["maintenance", "records", "import", str(tmp_path / "none.csv")]
    assert main([*missing, "--contractor", "C1", "--db", str(db)]) == 2
    assert "file not found" in capsys.readouterr().err
