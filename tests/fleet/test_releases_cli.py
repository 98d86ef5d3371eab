"""`liftwatch-fleet releases` and `rollout` (issue 20, item 5) on a SQLite store: a key is
made, wheels signed into a bundle, the bundle added (a wrongly keyed one refused with exit
status 2), a rollout started over the known agents, its status shown per wave, paused,
resumed and aborted; every command has --help."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from fleet.cli import main
from fleet.store.base import ControllerIdentity, HelloOp, UnitClaim
from fleet.store.open import open_store
from tests.agent.wheels import make_wheel


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_releases_and_rollout_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "fleet.db")
    store = open_store(db)
    store.write(
        [
            HelloOp(f"edge-{i}", "1.0", (UnitClaim(f"U{i}", ControllerIdentity()),))
            for i in range(5)
        ],
        dt.datetime.now(dt.UTC),
    )
    store.close()
    code, public, _ = run(capsys, "releases", "keygen", str(tmp_path / "release.key"))
    assert code == 0 and len(public.strip()) == 44
    assert (tmp_path / "release.key").stat().st_mode & 0o777 == 0o600
    wheel = make_wheel(tmp_path / "wheels", "2.0")
    bundle = tmp_path / "bundle"
    args = ["--id", "agent-2.0", "--version", "2.0", "--key", str(tmp_path / "release.key")]
    assert run(capsys, "releases", "build", str(wheel), *args, "--out", str(bundle))[0] == 0
    keep = ["--keep-in", str(tmp_path / "kept"), "--db", db]
    _, other, _ = run(capsys, "releases", "keygen", str(tmp_path / "other.key"))
    code, _, err = run(capsys, "releases", "add", str(bundle), "--public-key", other.strip(), *keep)
    assert code == 2 and "does not verify" in err
    code, out, _ = run(
        capsys, "releases", "add", str(bundle), "--public-key", public.strip(), *keep
    )
    assert code == 0 and "agent-2.0" in out
    code, out, _ = run(capsys, "releases", "list", "--db", db, "--json")
    assert [r["release_id"] for r in json.loads(out)["releases"]] == ["agent-2.0"]

    code, out, _ = run(
        capsys, "rollout", "start", "agent-2.0", "--waves", "1,50%,100%", "--db", db, "--json"
    )
    assert code == 0
    rollout_id = str(json.loads(out)["rollout_id"])
    code, out, _ = run(capsys, "rollout", "status", "--db", db, "--json")
    status = json.loads(out)
    assert status["state"] == "running" and status["wave"] == 1
    assert [w["states"] for w in status["waves"]] == [
        {"offered": 1},
        {"pending": 2},
        {"pending": 2},
    ]
    code, out, _ = run(capsys, "rollout", "status", rollout_id, "--db", db)
    assert "*wave 1: offered 1" in out
    assert run(capsys, "rollout", "pause", rollout_id, "--db", db)[1].strip().endswith("paused")
    code, _, err = run(capsys, "rollout", "pause", rollout_id, "--db", db)
    assert code == 2 and "cannot pause" in err
    assert run(capsys, "rollout", "resume", rollout_id, "--db", db)[1].strip().endswith("running")
    assert run(capsys, "rollout", "abort", rollout_id, "--db", db)[1].strip().endswith("aborted")
    code, _, err = run(capsys, "rollout", "start", "nope", "--db", db)
    assert code == 2 and "no release nope" in err
    for command in (["releases"], ["rollout"], ["releases", "add"], ["rollout", "start"]):
        code, out, _ = run(capsys, *command, "--help")
        assert code == 0 and "usage:" in out
