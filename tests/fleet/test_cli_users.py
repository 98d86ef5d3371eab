"""``liftwatch-fleet users``: accounts, passwords and API tokens from the command line."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import pytest

from fleet.auth.passwords import verify_password
from fleet.auth.roles import Role
from fleet.cli.main import main
from fleet.clock import utc_now
from fleet.store.base import RegisterEntry
from fleet.store.sqlite import SqliteStore

PASSWORD = "lift-safety-1"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A fleet database whose register names contractor "Acme Lifts"."""
    path = tmp_path / "fleet.db"
    store = SqliteStore.open(str(path))
    store.upsert_register([RegisterEntry("R1", contractor="Acme Lifts")])
    store.close()
    return path


def _stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(text))


def _run(monkeypatch: pytest.MonkeyPatch, argv: list[str], password: str) -> int:
    """``main(argv)`` with ``password`` as the line on standard input."""
    _stdin(monkeypatch, password + "\n")
    return main(argv)


def _add(monkeypatch: pytest.MonkeyPatch, db: Path, options: str) -> int:
    """``users add OPTIONS --db DB --password-stdin`` (OPTIONS split on blanks)."""
    argv = ["users", "add", *options.split(), "--db", str(db), "--password-stdin"]
    return _run(monkeypatch, argv, PASSWORD)


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, Any]:
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    result = json.loads(out)
    assert isinstance(result, dict)
    return result


def _user_hash(db: Path, username: str) -> str:
    store = SqliteStore.open(str(db), readonly=True)
    try:
        user = store.user(username)
    finally:
        store.close()
    assert user is not None
    return user.password_hash


def test_add_list_and_remove(
    db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    add = ["users", "add", "acme.wang", "--db", str(db), "--password-stdin"]
    argv = [*add, "--role", "contractor", "--contractor", "Acme Lifts", "--display-name", "王工"]
    assert _run(monkeypatch, argv, PASSWORD) == 0
    assert "added user acme.wang (contractor, contractor Acme Lifts)" in capsys.readouterr().out
    _stdin(monkeypatch, PASSWORD + "\n")
    argv = ["users", "add", "reg", "--role", "regulator", "--json", "--password-stdin"]
    added = _json(capsys, [*argv, "--db", str(db)])
    assert added["username"] == "reg" and added["role"] == "regulator"
    assert verify_password(PASSWORD, _user_hash(db, "acme.wang"))

    listed = _json(capsys, ["users", "list", "--db", str(db), "--json"])["users"]
    assert [(u["username"], u["role"], u["contractor"], u["display_name"]) for u in listed] == [
        ("acme.wang", "contractor", "Acme Lifts", "王工"),
        ("reg", "regulator", "", ""),
    ]
    assert all(u["created"].endswith("Z") for u in listed)
    assert main(["users", "list", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    header = "USERNAME ROLE CONTRACTOR DISPLAY_NAME CREATED"
    assert out.splitlines()[0].split() == header.split()
    assert "acme.wang" in out and "scrypt" not in out and "scrypt" not in json.dumps(listed)

    assert main(["users", "remove", "reg", "--db", str(db)]) == 0
    assert "removed user reg" in capsys.readouterr().out
    assert main(["users", "remove", "reg", "--db", str(db)]) == 2
    assert "users remove: user 'reg' does not exist" in capsys.readouterr().err


def test_the_password_is_asked_twice_without_password_stdin(
    db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = iter([PASSWORD, PASSWORD, PASSWORD, "something-else"])
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr("fleet.cli.users.getpass.getpass", fake_getpass)
    assert main(["users", "add", "adm", "--role", "admin", "--db", str(db)]) == 0
    assert prompts == ["password for adm: ", "password for adm (again): "]
    assert verify_password(PASSWORD, _user_hash(db, "adm"))
    assert main(["users", "passwd", "adm", "--db", str(db)]) == 2
    assert "the two passwords differ; nothing was changed" in capsys.readouterr().err
    assert verify_password(PASSWORD, _user_hash(db, "adm"))


def test_passwd_changes_the_hash_and_ends_sessions(
    db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _add(monkeypatch, db, "ops --role dispatcher") == 0
    store = SqliteStore.open(str(db))
    now = utc_now()
    session_id, _ = store.create_session("ops", now, dt.timedelta(hours=1))
    store.close()
    argv = ["users", "passwd", "ops", "--db", str(db), "--password-stdin"]
    assert _run(monkeypatch, argv, "a-new-password") == 0
    assert "password of ops changed; its sessions have ended" in capsys.readouterr().out
    assert verify_password("a-new-password", _user_hash(db, "ops"))
    store = SqliteStore.open(str(db))
    assert store.session(session_id, now) is None
    store.close()
    argv = ["users", "passwd", "ghost", "--db", str(db), "--password-stdin"]
    assert _run(monkeypatch, argv, PASSWORD) == 2
    assert "user 'ghost' does not exist" in capsys.readouterr().err


def test_tokens_are_printed_once_listed_and_revoked(
    db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _add(monkeypatch, db, "ci-bot --role regulator") == 0
    capsys.readouterr()
    assert main(["users", "token", "ci-bot", "--label", "ci", "--db", str(db)]) == 0
    captured = capsys.readouterr()
    token = captured.out.strip()
    assert token.startswith("lwt_") and captured.out == token + "\n"
    assert "shown only now" in captured.err
    store = SqliteStore.open(str(db), readonly=True)
    user = store.token_user(token)
    store.close()
    assert user is not None and (user.username, user.role) == ("ci-bot", Role.REGULATOR)

    second = _json(
        capsys, ["users", "token", "ci-bot", "--label", "cron", "--db", str(db), "--json"]
    )
    assert (second["label"], second["token"][:4]) == ("cron", "lwt_")
    listed = _json(capsys, ["users", "tokens", "ci-bot", "--db", str(db), "--json"])["tokens"]
    assert [t["label"] for t in listed] == ["ci", "cron"]
    assert token not in json.dumps(listed)

    assert main(["users", "token", "ci-bot", "--label", "ci", "--db", str(db)]) == 2
    assert "already has a token labelled 'ci'" in capsys.readouterr().err
    assert main(["users", "revoke", "ci-bot", "--label", "ci", "--db", str(db)]) == 0
    assert "revoked API token 'ci' of ci-bot" in capsys.readouterr().out
    assert main(["users", "revoke", "ci-bot", "--label", "ci", "--db", str(db)]) == 2
    assert "has no API token labelled 'ci'" in capsys.readouterr().err
    assert main(["users", "token", "ghost", "--label", "ci", "--db", str(db)]) == 2
    assert "user 'ghost' does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "stdin", "message"),
    [
        (["bad name", "--role", "admin"], PASSWORD, "username 'bad name' must be 1-64"),
        (["c1", "--role", "contractor"], PASSWORD, "contractor role needs the contractor"),
        (["r1", "--role", "regulator", "--contractor", "Acme"], PASSWORD, "only the contractor"),
        (["adm", "--role", "admin"], "short", "at least 8 characters"),
        (["adm", "--role", "admin"], "", "no password on standard input"),
        (["taken", "--role", "admin"], PASSWORD, "user 'taken' already exists"),
    ],
)
def test_add_errors_name_the_problem_and_exit_2(
    db: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    stdin: str,
    message: str,
) -> None:
    assert _add(monkeypatch, db, "taken --role dispatcher") == 0
    base = ["users", "add", "--db", str(db), "--password-stdin"]
    capsys.readouterr()
    _stdin(monkeypatch, stdin + "\n" if stdin else "")
    assert main([*base, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("liftwatch-fleet: error: users add: ") and message in err
    assert err.count("\n") == 1
    listed = _json(capsys, ["users", "list", "--db", str(db), "--json"])["users"]
    assert [u["username"] for u in listed] == ["taken"]


def test_a_contractor_unknown_to_the_register_is_noted(
    db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _add(monkeypatch, db, "b --role contractor --contractor Beta") == 0
    assert "no unit in the register has contractor 'Beta'" in capsys.readouterr().err
    argv = ["users", "add", "a", "--role", "contractor", "--contractor", "Acme Lifts"]
    assert _run(monkeypatch, [*argv, "--db", str(db), "--password-stdin"], PASSWORD) == 0
    assert capsys.readouterr().err == ""


def test_help_and_store_target_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for action in ("add", "list", "remove", "passwd", "token", "tokens", "revoke"):
        assert main(["users", action, "--help"]) == 0
        out = capsys.readouterr().out
        assert "--db" in out and "--config" in out
    assert main(["users", "--help"]) == 0
    assert "Roles: regulator" in capsys.readouterr().out
    assert main(["users", "list", "--db", str(tmp_path / "absent.db")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["users", "list", "--db", ":memory:"]) == 2
    assert ":memory:" in capsys.readouterr().err
    assert main(["users", "add", "x", "--db", str(tmp_path / "f.db")]) == 2  # no --role
    assert "--role" in capsys.readouterr().err
