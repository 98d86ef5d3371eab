"""The regulator's commands end to end through the CLI: service life, scorecard, fault
rate as CSV, and the repair-claim audit with each of its verdicts and a bad row."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

import pytest

from fleet.cli.main import main
from fleet.store.base import ControllerIdentity, RegisterEntry, UnitClaim
from fleet.store.open import open_store
from protos.liftwatch.v1 import records_pb2
from tests.fleet.factories import T0, record

PERIOD = ["--since", "2026-01-01", "--until", "2026-12-31"]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """U1 (old, watched every 10 s for 2000 s, 600 trips, no fault), U2 (one door fault)."""
    path = tmp_path / "fleet.db"
    store = open_store(str(path))
    store.upsert_register(
        [
            RegisterEntry(
                "U1", building="B1", street="S1", contractor="C1", install_date=dt.date(2005, 1, 1)
            ),
            RegisterEntry(
                "U2", building="B2", street="S1", contractor="C2", install_date=dt.date(2024, 1, 1)
            ),
        ],
        T0,
    )
    claims = [UnitClaim(u, ControllerIdentity(model="RC-3000")) for u in ("U1", "U2")]
    store.register_hello("a1", "0.1.0", claims, T0)
    records = [record(k + 1, "U1", time=T0 + dt.timedelta(seconds=10 * k)) for k in range(200)]
    records.append(
        record(
            201,
            "U2",
            time=T0 + dt.timedelta(seconds=400),
            event=records_pb2.EVENT_TYPE_DOOR_CLOSE_FAILURE,
            event_id="d1",
        )
    )
    for seq, trips in ((202, 1000), (203, 1600)):
        counters = record(seq, "U1", time=T0 + dt.timedelta(seconds=seq))
        counters.counters.trips = trips
        records.append(counters)
    store.commit_batch("a1", records, T0 + dt.timedelta(seconds=2000))
    store.close()
    return path


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    assert main([*args, "--json"]) == 0
    result: dict[str, object] = json.loads(capsys.readouterr().out)
    return result


def test_service_life_puts_the_oldest_first_and_flags_it(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = run_json(capsys, "report", "service-life", "--db", str(db), *PERIOD)["rows"]
    assert isinstance(rows, list)
    assert [(r["unit_id"], r["flag"]) for r in rows] == [("U1", "assess_15"), ("U2", "")]
    assert rows[1]["faults"] == 1


def test_scorecard_per_contractor(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = run_json(capsys, "report", "scorecard", "--db", str(db), *PERIOD)["rows"]
    assert isinstance(rows, list)
    by = {r["contractor"]: r for r in rows}
    assert (by["C1"]["units"], by["C1"]["faults"], by["C2"]["faults"]) == (1, 0, 1)


def test_fault_rate_as_csv_ranks_worst_first(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["report", "fault-rate", "--by", "contractor", "--db", str(db), "--csv", *PERIOD]) == 0
    )
    # The header's # lines (what counts) first, then the table.
    lines = io.StringIO(capsys.readouterr().out).readlines()
    assert lines[0].startswith("# ")
    rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))
    assert rows[0]["name"] == "C2"
    assert {r["name"] for r in rows} == {"C1", "C2"}


def test_claims_are_supported_contradicted_or_undecidable(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    claims = tmp_path / "claims.csv"
    claims.write_text(
        "unit_id,time,fault_type\n"
        "U2,2026-03-01T08:06:40Z,DOOR_CLOSE_FAILURE\n"
        "U1,2026-03-01T08:15:00Z,DOOR_CLOSE_FAILURE\n"
        "U9,2026-03-01T08:15:00Z,ENTRAPMENT\n"
        "U1,not-a-time,ENTRAPMENT\n",
        encoding="utf-8",
    )
    report = run_json(
        capsys, "audit", "claims", str(claims), "--db", str(db), "--window", "5", "--max-gap", "30"
    )
    verdicts = [(c["unit_id"], c["verdict"]) for c in report["claims"]]  # type: ignore[attr-defined]
    assert verdicts == [("U2", "supported"), ("U1", "contradicts"), ("U9", "cannot_tell")]
    assert report["problems"] == [{"line": 5, "reason": "time: cannot read 'not-a-time'"}]
    evidence = report["claims"][1]["evidence"]  # type: ignore[index]
    assert "no fault recorded" in evidence
