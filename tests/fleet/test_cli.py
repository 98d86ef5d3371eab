from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fleet.cli.main import main
from fleet.clock import utc_now
from fleet.store.base import ControllerIdentity, RegisterEntry, UnitClaim
from fleet.store.sqlite import SqliteStore
from protos.liftwatch.v1 import records_pb2
from tests.fleet.factories import record

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """R1 online, R2 offline, R3 never seen (all registered); X1 unregistered and blind."""
    path = tmp_path / "fleet.db"
    store = SqliteStore.open(str(path))
    store.upsert_register(
        [
            RegisterEntry("R1", building="B1", street="S1", contractor="C1"),
            RegisterEntry("R2", building="B2", street="S2", contractor="C2"),
            RegisterEntry("R3", building="B3", street="S1", contractor="C1"),
        ]
    )
    now = utc_now()
    hour_ago = now - dt.timedelta(hours=1)
    store.register_hello(
        "a2", "0.1.0", [UnitClaim("R2", ControllerIdentity(model="VX-220"))], hour_ago
    )
    claims = [
        UnitClaim(u, ControllerIdentity(model="RC-3000", firmware="3.1.4")) for u in ("R1", "X1")
    ]
    store.register_hello("a1", "0.2.0", claims, now)
    store.commit_batch(
        "a1",
        [
            record(1, "R1", time=now, event=records_pb2.EVENT_TYPE_ENTRAPMENT),
            record(2, "X1", time=now, link_up=False),
            record(
                3,
                "R1",
                time=now,
                event=records_pb2.EVENT_TYPE_ENTRAPMENT,
                phase=records_pb2.PHASE_CLEARED,
            ),
        ],
        now,
    )
    store.close()
    return path


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, Any]:
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    result = json.loads(out)
    assert isinstance(result, dict)
    return result


def test_units_json(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    units = _json(capsys, ["units", "--db", str(db), "--json"])["units"]
    assert isinstance(units, list)
    by_id = {u["unit_id"]: u for u in units}
    assert {k: v["status"] for k, v in by_id.items()} == {
        "R1": "online",
        "R2": "offline",
        "R3": "never_seen",
        "X1": "blind",
    }
    r1 = by_id["R1"]
    assert set(r1) == {
        "unit_id",
        "status",
        "registered",
        "firmware",
        "model",
        "agent_id",
        "agent_version",
        "last_seen",
        "building",
        "address",
        "street",
        "contractor",
    }
    assert (r1["registered"], r1["firmware"], r1["model"], r1["agent_id"]) == (
        True,
        "3.1.4",
        "RC-3000",
        "a1",
    )
    assert (r1["agent_version"], r1["street"], r1["contractor"]) == ("0.2.0", "S1", "C1")
    assert str(r1["last_seen"]).endswith("Z")
    assert by_id["X1"]["registered"] is False
    assert by_id["R3"]["last_seen"] is None


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (["--street", "S1"], ["R1", "R3"]),
        (["--contractor", "C2"], ["R2"]),
        (["--status", "offline"], ["R2"]),
        (["--monitored"], ["R1", "R2", "X1"]),
        (["--monitored", "--status", "never_seen"], ["R3"]),
        (["--street", "S1", "--status", "online"], ["R1"]),
    ],
)
def test_units_filters(
    db: Path, capsys: pytest.CaptureFixture[str], filters: list[str], expected: list[str]
) -> None:
    units = _json(capsys, ["units", "--db", str(db), "--json", *filters])["units"]
    assert isinstance(units, list)
    assert [u["unit_id"] for u in units] == expected


def test_coverage_json_through_a_config_file(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text(f'[store]\npath = "{db.name}"\n', encoding="utf-8")
    assert _json(capsys, ["coverage", "--config", str(config), "--json"]) == {
        "registered": 3,
        "monitored": 3,
        "online": 1,
        "stale": 0,
        "offline": 1,
        "blind": 1,
        "never_seen": 1,
        "unregistered_reporting": 1,
    }


def test_events_json(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = _json(capsys, ["events", "--db", str(db), "--json", "--type", "entrapment"])["events"]
    assert isinstance(events, list)
    assert [(e["unit_id"], e["seq"], e["type"], e["phase"]) for e in events] == [
        ("R1", 1, "ENTRAPMENT", "RAISED"),
        ("R1", 3, "ENTRAPMENT", "CLEARED"),
    ]
    assert (events[0]["floor"], events[0]["event_id"], events[0]["agent_id"]) == (3, "ev-1", "a1")
    assert _json(capsys, ["events", "--db", str(db), "--json", "--unit", "R2"]) == {"events": []}


def test_tables_print(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["units"], ["coverage"], ["events"]):
        assert main([*argv, "--db", str(db)]) == 0
        out = capsys.readouterr().out
        assert out.splitlines()[0].split()[0] in {"UNIT_ID", "UNITS", "TIME"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["units", "--db", "{tmp}/absent.db"], "no such file"),
        (["coverage", "--config", "{tmp}/absent.toml"], "file not found"),
        (["events", "--config", "{tmp}/bad.toml"], "server.listen: expected a string"),
        (["events", "--db", "{tmp}/bad.toml"], "not a database"),
        (["events", "--db", "{tmp}/absent.db", "--type", "NAP"], "unknown event type 'NAP'"),
        (["units", "--config", "{tmp}/memory.toml"], ":memory:"),
    ],
)
def test_errors_are_one_line_with_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    (tmp_path / "bad.toml").write_text("[server]\nlisten = 1\nextra = 2\n", encoding="utf-8")
    (tmp_path / "memory.toml").write_text('[store]\npath = ":memory:"\n', encoding="utf-8")
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("liftwatch-fleet: error: ")
    assert message in err


def test_help_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "serve" in capsys.readouterr().out
    for command in ("serve", "units", "coverage", "firmware", "events"):
        assert main([command, "--help"]) == 0
        assert "--json" in capsys.readouterr().out or command == "serve"
    assert main(["units", "--status", "asleep"]) == 2
    assert main([]) == 2


def test_serve_prints_one_ready_line_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleet",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
            str(tmp_path / "fleet.db"),
            "--http",
            "127.0.0.1:0",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # EOF ("") if the server died instead
        ready = json.loads(line)
        assert ready["ready"] is True
        host, _, port = ready["grpc"].rpartition(":")
        assert host == "127.0.0.1"
        assert int(port) > 0
        assert int(ready["http"].rpartition(":")[2]) > 0
        assert int(ready["query"].rpartition(":")[2]) > 0  # --listen on port 0: query too
        addresses = {"grpc": ready["grpc"], "query": ready["query"], "http": ready["http"]}
        assert line == json.dumps({"ready": True, **addresses}) + "\n"
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert out == ""
    assert "serving gRPC" in err
    assert (tmp_path / "fleet.db").is_file()


HEADER = (
    "registration_code,building,address,street,use_unit,maintenance_contractor,install_date,"
    "rated_speed_m_s,rated_load_kg,landings,controller_model,car_in_group"
)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_units_import_reports_bad_rows_and_reimport_updates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str, request: pytest.FixtureRequest
) -> None:
    target = str(tmp_path / "new.db") if backend == "sqlite" else request.getfixturevalue("pg_url")
    csv = tmp_path / "units.csv"
    csv.write_text(
        f"{HEADER}\nR1,B1,a,S1,u,C1,2010-01-02,1.0,630,6,RC-3000,1\n"
        "R2,B1,a,S1,u,C1,2010-13-02,1.0,630,6,RC-3000,2\n"
        "R3,B2,a,S2,u,C2,,1.5,800,9,VX-220,1\n",
        encoding="utf-8",
    )
    result = _json(capsys, ["units", "import", str(csv), "--db", target, "--json"])
    assert (result["imported"], result["skipped"]) == (2, 1)
    assert result["problems"] == [{"line": 3, "reason": "install_date: cannot read '2010-13-02'"}]
    csv.write_text(f"{HEADER}\nR3,B2-new,a,S2,u,C3,,1.5,800,9,VX-220,1\n", encoding="utf-8")
    assert main(["units", "import", str(csv), "--db", target]) == 0
    assert "imported 1 unit(s)" in capsys.readouterr().out
    units = _json(capsys, ["units", "--db", target, "--json", "--contractor", "C3"])["units"]
    assert isinstance(units, list)
    assert [(u["unit_id"], u["building"], u["status"]) for u in units] == [
        ("R3", "B2-new", "never_seen")
    ]


def test_units_import_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "x.db")
    assert main(["units", "import", "--db", db]) == 2
    assert "name the register CSV" in capsys.readouterr().err
    assert main(["units", "import", str(tmp_path / "absent.csv"), "--db", db]) == 2
    assert "file not found" in capsys.readouterr().err
    assert main(["units", "stray.csv", "--db", db]) == 2


def test_unregistered_reporting_units_are_flagged(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    units = _json(capsys, ["units", "--db", str(db), "--json", "--unregistered"])["units"]
    assert isinstance(units, list)
    assert [(u["unit_id"], u["registered"]) for u in units] == [("X1", False)]


def test_coverage_by_group_and_history(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = _json(capsys, ["coverage", "--db", str(db), "--json", "--by", "street"])
    groups = result["groups"]
    assert isinstance(groups, list)
    assert [(g["name"], g["registered"], g["online"], g["never_seen"]) for g in groups] == [
        ("", 0, 0, 0),  # X1: unregistered, so no street
        ("S1", 2, 1, 1),
        ("S2", 1, 0, 0),
    ]
    assert result["online"] == 1
    history = _json(capsys, ["coverage", "--db", str(db), "--json", "--history", "X1"])
    assert [(h["old_status"], h["new_status"], h["cause"]) for h in history["history"]] == [
        ("never_seen", "online", "hello"),
        ("online", "blind", "record"),
    ]
    assert main(["coverage", "--db", str(db), "--by", "contractor"]) == 0
    assert capsys.readouterr().out.startswith("NAME")


def test_firmware_inventory_violations_and_history(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = REPO / "deploy" / "fleet" / "firmware-policy.toml"
    config = tmp_path / "fleet.toml"
    config.write_text(
        f'[store]\npath = "{db.name}"\n[firmware]\npolicy = "{policy}"\n', encoding="utf-8"
    )
    result = _json(capsys, ["firmware", "--config", str(config), "--json"])
    assert result["firmware"] == [{"model": "RC-3000", "version": "3.1.4", "units": 2}]
    assert result["agent_versions"] == [
        {"model": "RC-3000", "version": "0.2.0", "units": 2},
        {"model": "VX-220", "version": "0.1.0", "units": 1},
    ]
    assert result["violations"] == []
    strict = tmp_path / "strict.toml"
    strict.write_text('[model."RC-3000"]\nknown_bad = ["3.1.4"]\n', encoding="utf-8")
    argv = ["firmware", "--db", str(db), "--json", "--violations", "--policy", str(strict)]
    result = _json(capsys, [*argv, "--history", "R1"])
    assert set(result) == {"violations", "history"}
    assert [(v["unit_id"], v["rule"]) for v in result["violations"]] == [
        ("R1", "known_bad"),
        ("X1", "known_bad"),
    ]
    assert [(h["new_firmware"], h["new_agent_version"]) for h in result["history"]] == [
        ("3.1.4", "0.2.0")
    ]
    assert _json(capsys, [*argv, "--model", "VX-220"])["violations"] == []
    assert main(["firmware", "--db", str(db), "--history", "R1"]) == 0
    assert "MODEL" in capsys.readouterr().out
    assert main(["firmware", "--db", str(db), "--policy", str(tmp_path / "absent.toml")]) == 2
    assert "firmware policy" in capsys.readouterr().err
