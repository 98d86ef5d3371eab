"""Users, sessions and API tokens (fleet.store.users) on both backends, the roles'
access rules (fleet.auth.roles) and password hashing (fleet.auth.passwords)."""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.auth.passwords import (
    hash_password,
    needs_rehash,
    verify_password,
)
from fleet.auth.roles import Principal, Role
from fleet.store.base import TokenRow, UserError
from fleet.store.open import open_store
from fleet.store.sql import SqlStore
from fleet.store.sqlite import MIGRATIONS, SqliteStore
from tests.fleet.factories import T0

HOUR = dt.timedelta(hours=1)
HASH = "scrypt$16384$8$1$c2FsdA$a2V5"  # the store never looks inside a hash


@pytest.fixture
def store(store_target: str) -> Iterator[SqlStore]:
    """A fresh store of each backend."""
    opened = open_store(store_target)
    yield opened
    opened.close()


def _column_values(store: SqlStore, table: str) -> set[str]:
    rows = store._execute(f"SELECT * FROM {table}").fetchall()
    return {str(v) for row in rows for v in row}


# -- the store, on both backends -----------------------------------------------------------


def test_users_are_added_listed_and_removed(store: SqlStore) -> None:
    store.add_user("ops.li", Role.DISPATCHER, HASH, display_name="李调度", now=T0)
    store.add_user("acme-1", Role.CONTRACTOR, HASH, contractor="Acme Lifts", now=T0 + HOUR)
    assert [u.username for u in store.users()] == ["acme-1", "ops.li"]
    acme = store.user("acme-1")
    assert acme is not None
    assert (acme.role, acme.contractor, acme.password_hash, acme.created) == (
        Role.CONTRACTOR,
        "Acme Lifts",
        HASH,
        T0 + HOUR,
    )
    assert acme.principal() == Principal("acme-1", Role.CONTRACTOR, "Acme Lifts")
    ops = store.user("ops.li")
    assert ops is not None and ops.display_name == "李调度"
    assert store.user("nobody") is None
    assert store.remove_user("ops.li") is True
    assert store.remove_user("ops.li") is False
    assert [u.username for u in store.users()] == ["acme-1"]


@pytest.mark.parametrize(
    ("username", "role", "contractor", "problem"),
    [
        ("", Role.ADMIN, "", "1-64 characters"),
        ("a" * 65, Role.ADMIN, "", "1-64 characters"),
        ("li wei", Role.ADMIN, "", "1-64 characters"),
        ("lì", Role.ADMIN, "", "1-64 characters"),
        ("c1", Role.CONTRACTOR, "", "needs the contractor's name"),
        ("c1", Role.CONTRACTOR, " Acme", "leading or trailing spaces"),
        ("r1", Role.REGULATOR, "Acme", "only the contractor role"),
        ("r1", "superuser", "", "unknown role 'superuser'"),
    ],
)
def test_invalid_users_are_refused(
    store: SqlStore, username: str, role: Role, contractor: str, problem: str
) -> None:
    with pytest.raises(UserError, match=problem):
        store.add_user(username, role, HASH, contractor, now=T0)
    assert store.users() == []


def test_a_taken_name_is_refused_and_the_first_user_kept(store: SqlStore) -> None:
    store.add_user("admin", Role.ADMIN, HASH, now=T0)
    with pytest.raises(UserError, match="'admin' already exists"):
        store.add_user("admin", Role.REGULATOR, "scrypt$other", now=T0 + HOUR)
    (only,) = store.users()
    assert (only.role, only.password_hash, only.created) == (Role.ADMIN, HASH, T0)
    with pytest.raises(UserError, match="password hash"):
        store.add_user("nohash", Role.ADMIN, "", now=T0)


def test_sessions_expire_end_and_are_stored_only_as_hashes(store: SqlStore) -> None:
    store.add_user("disp", Role.DISPATCHER, HASH, now=T0)
    session_id, csrf = store.create_session("disp", T0, HOUR)
    other_id, other_csrf = store.create_session("disp", T0, 2 * HOUR)
    assert len({session_id, csrf, other_id, other_csrf}) == 4
    assert all(len(s) >= 43 for s in (session_id, csrf))  # 32 random bytes, base64
    found = store.session(session_id, T0 + HOUR - dt.timedelta(microseconds=1))
    assert found is not None
    user, found_csrf = found
    assert (user.username, user.role, found_csrf) == ("disp", Role.DISPATCHER, csrf)
    assert store.session(session_id, T0 + HOUR) is None  # expired at its deadline
    assert store.session("forged", T0) is None
    stored = _column_values(store, "sessions")
    assert session_id not in stored and other_id not in stored
    assert hashlib.sha256(session_id.encode()).hexdigest() in stored
    store.end_session(other_id)
    store.end_session(other_id)  # twice: not an error
    assert store.session(other_id, T0) is None


def test_expired_sessions_are_purged(store: SqlStore) -> None:
    store.add_user("reg", Role.REGULATOR, HASH, now=T0)
    old_id, _ = store.create_session("reg", T0, HOUR)
    store.create_session("reg", T0, 3 * HOUR)
    # Logging in after the first expired purges it on the way.
    store.create_session("reg", T0 + 2 * HOUR, HOUR)
    assert store._execute("SELECT count(*) FROM sessions").fetchone()[0] == 2
    assert store.session(old_id, T0) is None  # gone, even asked with an earlier clock
    assert store.purge_sessions(T0 + 3 * HOUR) == 2
    assert store.purge_sessions(T0 + 3 * HOUR) == 0


def test_sessions_need_a_user_and_a_positive_lifetime(store: SqlStore) -> None:
    with pytest.raises(UserError, match="'ghost' does not exist"):
        store.create_session("ghost", T0, HOUR)
    store.add_user("reg", Role.REGULATOR, HASH, now=T0)
    with pytest.raises(UserError, match="positive lifetime"):
        store.create_session("reg", T0, dt.timedelta(0))


def test_a_new_password_ends_sessions_and_removal_ends_everything(store: SqlStore) -> None:
    store.add_user("adm", Role.ADMIN, HASH, now=T0)
    session_id, _ = store.create_session("adm", T0, HOUR)
    token = store.create_token("adm", "ci", T0)
    assert store.set_password("adm", "scrypt$new") is True
    assert store.set_password("ghost", "scrypt$new") is False
    user = store.user("adm")
    assert user is not None and user.password_hash == "scrypt$new"
    assert store.session(session_id, T0) is None
    assert store.token_user(token) is not None  # tokens are revoked one by one
    store.create_session("adm", T0, HOUR)
    assert store.remove_user("adm") is True
    assert store.token_user(token) is None
    for table in ("sessions", "api_tokens"):
        assert store._execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0


def test_api_tokens_are_created_listed_resolved_and_revoked(store: SqlStore) -> None:
    store.add_user("acme", Role.CONTRACTOR, HASH, contractor="Acme", now=T0)
    store.add_user("disp", Role.DISPATCHER, HASH, now=T0)
    ci = store.create_token("acme", "ci", T0)
    phone = store.create_token("acme", "phone app", T0 + HOUR)
    theirs = store.create_token("disp", "ci", T0)  # labels are per user
    assert ci.startswith("lwt_") and len(ci) >= 4 + 43
    assert len({ci, phone, theirs}) == 3
    user = store.token_user(ci)
    assert user is not None and (user.username, user.contractor) == ("acme", "Acme")
    assert store.token_user(phone) == user
    assert store.token_user("lwt_forged") is None
    assert store.token_user(ci[4:]) is None  # without its prefix
    assert store.tokens("acme") == [TokenRow("ci", T0), TokenRow("phone app", T0 + HOUR)]
    assert store.tokens("nobody") == []
    stored = _column_values(store, "api_tokens")
    assert not any(t in stored or t[4:] in stored for t in (ci, phone, theirs))
    assert store.revoke_token("acme", "ci") is True
    assert store.revoke_token("acme", "ci") is False
    assert store.token_user(ci) is None
    assert store.token_user(theirs) is not None  # the other user's "ci" is untouched


def test_token_labels_and_owners_are_checked(store: SqlStore) -> None:
    with pytest.raises(UserError, match="'ghost' does not exist"):
        store.create_token("ghost", "ci", T0)
    store.add_user("adm", Role.ADMIN, HASH, now=T0)
    store.create_token("adm", "ci", T0)
    with pytest.raises(UserError, match="already has a token labelled 'ci'"):
        store.create_token("adm", "ci", T0)
    for label in ("", "   ", "x" * 65, "tab\there"):
        with pytest.raises(UserError, match="label"):
            store.create_token("adm", label, T0)
    assert [t.label for t in store.tokens("adm")] == ["ci"]


def test_a_version_5_sqlite_database_gains_the_user_tables(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        for index, migration in enumerate(MIGRATIONS[:5]):
            conn.executescript(f"{migration}; PRAGMA user_version = {index + 1};")
        conn.execute("INSERT INTO agent_units VALUES ('edge-1', 'U1')")
    store = SqliteStore.open(str(db))
    store.add_user("adm", Role.ADMIN, HASH, now=T0)
    assert store.agent_units("edge-1") == ("U1",)
    assert [u.username for u in store.users()] == ["adm"]
    store.close()


# -- roles -------------------------------------------------------------------------------


def test_each_role_sees_and_acts_as_documented() -> None:
    regulator = Principal("reg", Role.REGULATOR)
    dispatcher = Principal("disp", Role.DISPATCHER)
    admin = Principal("adm", Role.ADMIN)
    acme = Principal("acme", Role.CONTRACTOR, "Acme Lifts")
    for everyone in (regulator, dispatcher, admin):
        assert everyone.sees_unit("Acme Lifts") and everyone.sees_unit("")
        assert everyone.unit_scope() == ""
    assert acme.sees_unit("Acme Lifts")
    assert not acme.sees_unit("Other Lifts")
    assert not acme.sees_unit("")  # an unregistered unit is nobody's
    assert not acme.sees_unit("acme lifts")  # exactly as the register spells it
    assert acme.unit_scope() == "Acme Lifts"
    assert [p.can_act_on_alarms() for p in (regulator, dispatcher, admin, acme)] == [
        False,
        True,
        True,
        True,
    ]
    assert [p.can_admin() for p in (regulator, dispatcher, admin, acme)] == [
        False,
        False,
        True,
        False,
    ]


def test_a_principal_needs_a_contractor_exactly_when_it_is_one() -> None:
    with pytest.raises(ValueError, match="needs the contractor's name"):
        Principal("acme", Role.CONTRACTOR)
    with pytest.raises(ValueError, match="only the contractor role"):
        Principal("disp", Role.DISPATCHER, "Acme")
    assert Role("regulator") is Role.REGULATOR and str(Role.ADMIN) == "admin"


# -- passwords ---------------------------------------------------------------------------


def test_passwords_hash_with_scrypt_and_verify() -> None:
    stored = hash_password("correct horse")
    scheme, n, r, p, salt, key = stored.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert (len(salt), len(key)) == (22, 43)  # 16 and 32 bytes, unpadded base64
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsf", stored)
    assert not verify_password("", stored)
    assert hash_password("correct horse") != stored  # a fresh salt each time
    assert not needs_rehash(stored)
    # Full-width forms from a Chinese input method are the same password.
    assert verify_password("ｃｏｒｒｅｃｔ　ｈｏｒｓｅ", stored)


def test_raised_parameters_still_verify_and_ask_for_a_rehash() -> None:
    import base64

    salt = b"0123456789abcdef"
    key = hashlib.scrypt(b"long enough", salt=salt, n=2**10, r=8, p=2, dklen=32)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    stored = f"scrypt$1024$8$2${b64(salt)}${b64(key)}"
    assert verify_password("long enough", stored)
    assert needs_rehash(stored)


def test_short_passwords_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 8 characters"):
        hash_password("1234567")
    assert hash_password("12345678").startswith("scrypt$")


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plain",
        "bcrypt$2b$12$abc",
        "scrypt$16384$8$1$c2FsdA",
        "scrypt$16384$8$1$c2FsdA$a2V5$extra",
        "scrypt$x$8$1$c2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "scrypt$1000$8$1$c2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  # not 2**k
        "scrypt$1073741824$8$1$c2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  # 1 TiB
        "scrypt$16384$8$1$$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "scrypt$16384$8$1$c2FsdA$a2V5",  # a 3-byte key
        "scrypt$16384$8$1$c2Fsd\u00e9$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "scrypt$16384$8$1$c2FsdA$A",  # bad padding
    ],
)
def test_malformed_hashes_verify_false(stored: str) -> None:
    assert verify_password("correct horse", stored) is False
    assert needs_rehash(stored)
